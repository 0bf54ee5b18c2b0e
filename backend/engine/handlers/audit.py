"""The audit log, and the lockouts failed authentications leave behind."""

from __future__ import annotations

from ...display import iso
from ...errors import CommandError
from ...language.kinds import ACCOUNT_KEY
from ...netaddr import lockout_key
from ...result import Result
from ..delegation import unscoped_only
from ..limits import lockout_entries
from .base import Call, Env, handles


@handles("audit")
def audit(env: Env, call: Call) -> Result:
    since = call.options.get("since")
    hide, action = call.options.get("action", (False, None))
    records = env.store.audit_records(limit=call.options.get("limit", 50), actor=call.options.get("user"),
                                      action=None if hide else action, hide_action=action if hide else None,
                                      outcome=call.options.get("outcome"),
                                      since=None if since is None else env.clock() - since)
    return Result(["seq", "time", "actor", "source", "action", "target", "outcome", "detail"],
                  [[str(r["seq"]), iso(r["time"]), r["actor"], r["source"], r["action"], r["target"],
                    r["outcome"], r["detail"]] for r in records])


@handles("audit verify")
def audit_verify(env: Env, call: Call) -> Result:
    count, problem = env.store.verify_audit()
    if problem:
        raise CommandError(problem)
    return Result.message(f"Audit log intact: {count} records.")


@handles("lockout list", check=unscoped_only("manage lockouts"))
def lockout_list(env: Env, call: Call) -> Result:
    # A user name is listed as given at login: the shell's renderers escape it, like any text.
    return Result(["address", "failures", "locked_until"],
                  [[a, str(n), iso(until)] for a, n, until in lockout_entries(env.lockout, env.account_lockout)])


@handles("lockout clear", check=unscoped_only("manage lockouts"))
def lockout_clear(env: Env, call: Call) -> Result:
    target = call.args["target"]
    if target.startswith(ACCOUNT_KEY):
        key, table = target, env.account_lockout
    else:
        key, table = lockout_key(target), env.lockout     # an IPv6 address: its /64, as listed
    if not table.clear(key):
        raise CommandError(f"No lockout for {key}")
    env.audit(call)
    return Result.message(f"Lockout cleared for {key}.")
