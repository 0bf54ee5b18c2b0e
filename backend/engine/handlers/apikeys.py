"""API keys: create, list, show, alter, revoke, rotate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...display import iso
from ...errors import CommandError
from ...language.kinds import UtcTime
from ...result import Result
from ..delegation import KeyLimits, exceeds, key_limits, within_creator
from ..keys import key_digest, new_api_key
from ..policy import ROLE_RANK, key_state
from .base import Call, Env, handles

DEFAULT_GRACE = 24 * 3600


@handles("apikey create")
def apikey_create(env: Env, call: Call) -> Result:
    session = call.session
    label = call.args["label"]
    owner = call.options.get("user") or session.username
    owner_row = env.existing_user(owner)
    role = call.options.get("role") or owner_row["role"]
    if ROLE_RANK[role] > ROLE_RANK[owner_row["role"]]:
        raise CommandError(f"Role '{role}' exceeds the owner's role '{owner_row['role']}'")
    kgs = tuple(call.options.get("kg") or ())
    for kg in kgs:
        if env.store.kg(kg) is None:
            raise CommandError(f"Knowledge graph '{kg}' not found")
    existing = env.store.key(label)
    if existing is not None and existing["revoked_at"] is None:
        raise CommandError(f"API key with label '{label}' already exists")
    now = env.clock()
    expires_at = _expires_at(call.options.get("expires"), now)
    role, kgs, expires_at, ips, rate = within_creator(call.rights, KeyLimits(
        role, kgs, expires_at, tuple(call.options.get("ips", ())), call.options.get("rate")),
        never_expires="expires" in call.options and expires_at is None)
    secret = new_api_key()
    env.store.add_key(label, owner, role, kgs, key_digest(env.store.secret, secret), now, expires_at,
                      ips=ips, rate=rate)
    shown_kgs = ",".join(sorted(kgs)) if kgs else "*"
    limits = (f"; ips={','.join(ips)}" if ips else "") + (f"; rate={rate[0]}/{rate[1]}s" if rate else "")
    env.audit(call, f"owner={owner}; role={role}; kgs={shown_kgs}; "
                    f"expires={iso(expires_at) or 'never'}{limits}")
    return Result(["api_key", "label", "owner", "role", "kgs", "expires_at"],
                  [[secret, label, owner, role, shown_kgs, iso(expires_at)]])


@handles("apikey list")
def apikey_list(env: Env, call: Call) -> Result:
    owner = call.options.get("user")
    if owner is not None:
        env.existing_user(owner)
    rows = []
    now = env.clock()
    for k in env.store.keys(owner=owner):
        kgs, expires = _scope_and_expiry(env, k)
        rows.append([k["label"], iso(k["created_at"]), k["owner"], k["role"], kgs, expires,
                     iso(k["last_used_at"]), key_state(k, now)])
    return Result(["label", "created_at", "owner", "role", "kgs", "expires_at", "last_used_at", "status"], rows)


@handles("apikey show")
def apikey_show(env: Env, call: Call) -> Result:
    row = env.store.key(call.args["label"])
    if row is None:
        raise CommandError(f"API key '{call.args['label']}' not found")
    kgs, expires = _scope_and_expiry(env, row)
    rate = f"{row['rate'][0]}/{RATE_UNITS[row['rate'][1]]}" if row.get("rate") else ""
    return Result(["key", "value"], [
        ["label", row["label"]], ["owner", row["owner"]], ["role", row["role"]], ["kgs", kgs],
        ["expires_at", expires], ["ips", ",".join(row.get("ips") or ())], ["rate", rate],
        ["status", key_state(row, env.clock())], ["created_at", iso(row["created_at"])],
        ["last_used_at", iso(row["last_used_at"])]])


@handles("apikey alter")
def apikey_alter(env: Env, call: Call) -> Result:
    """Limits changed in place: the secret, owner and label stay (policy apply uses this)."""
    label, options = call.args["label"], call.options
    if not options:
        raise CommandError(f"Usage: {call.inv.command.usage}")
    row = _live_key(env, label)
    changes: dict[str, Any] = {}
    if "role" in options:
        owner_role = env.existing_user(row["owner"])["role"]
        if ROLE_RANK[options["role"]] > ROLE_RANK[owner_role]:
            raise CommandError(f"Role '{options['role']}' exceeds the owner's role '{owner_role}'")
        changes["role"] = options["role"]
    if "expires" in options:
        changes["expires_at"] = _expires_at(options["expires"], env.clock())
    if "ips" in options:
        changes["ips"] = list(options["ips"])
    if "rate" in options:
        changes["rate"] = list(options["rate"]) if options["rate"] else None
    for kg in options.get("kg") or ():
        if env.store.kg(kg) is None:
            raise CommandError(f"Knowledge graph '{kg}' not found")
    kgs = (options["kg"] or ()) if "kg" in options else env.store.key_kgs(row["id"])
    altered = {**row, **changes, "scoped": options["kg"] is not None if "kg" in options else row["scoped"]}
    problem = exceeds(call.rights, key_limits(altered, list(kgs)))
    if problem:
        raise CommandError(f"Exceeds the limits of the credential in use: {problem}")
    if "kg" in options:
        env.store.set_key_scope(row["id"], options["kg"])
    env.store.update_key(row["id"], **changes)
    env.audit(call, "; ".join(f"{name}={shown(options[name])}" for name, shown in _ALTER_SHOWN.items()
                              if name in options))
    return Result.message(f"API key '{label}' altered.")


_ALTER_SHOWN: dict[str, Callable[[Any], str]] = {
    "role": str, "kg": lambda v: "*" if v is None else ",".join(v),
    "expires": lambda v: "never" if v is None else iso(v) if isinstance(v, UtcTime) else f"{v}s",
    "ips": lambda v: ",".join(v) or "*", "rate": lambda v: "none" if v is None else f"{v[0]}/{v[1]}s"}
RATE_UNITS = {1: "s", 60: "m", 3600: "h", 86400: "d"}


def _expires_at(value: int | UtcTime | None, now: float) -> float | None:
    """When a key given `expires=` (a duration, `never` or a UTC time) stops working."""
    if value is None:
        return None
    if isinstance(value, UtcTime):
        if value <= now:
            raise CommandError("Invalid expiry: that time has passed; a key's expiry must be in the future")
        return float(value)
    if value == 0:
        raise CommandError("Invalid duration '0s': a key's expiry must be in the future")
    return now + value


@handles("apikey revoke")
def apikey_revoke(env: Env, call: Call) -> Result:
    label = call.args["label"]
    row = _live_key(env, label)
    env.store.revoke_key(row["id"], env.clock())
    env.store.end_key_tokens(row["id"])
    env.audit(call, f"owner={row['owner']}")
    return Result.message(f"API key '{label}' revoked.")


@handles("apikey rotate")
def apikey_rotate(env: Env, call: Call) -> Result:
    label = call.args["label"]
    row = _live_key(env, label)
    problem = exceeds(call.rights, key_limits(row, env.store.key_kgs(row["id"])))
    if problem:
        raise CommandError(f"Cannot rotate API key '{label}' with a credential of fewer rights: {problem}")
    grace = call.options.get("grace", DEFAULT_GRACE)
    if grace is None:
        raise CommandError("Invalid grace 'never': the old secret must stop working at some point")
    now = env.clock()
    valid_until = now + grace if grace > 0 else None
    secret = new_api_key()
    env.store.rotate_key(row["id"], key_digest(env.store.secret, secret), valid_until)
    env.store.end_key_tokens(row["id"])     # the grace is for the key, not for what was minted from it
    env.audit(call, f"grace={grace}s")
    return Result(["api_key", "label", "previous_valid_until"], [[secret, label, iso(valid_until or now)]])


def _scope_and_expiry(env: Env, row: dict[str, Any]) -> tuple[str, str]:
    kgs = ",".join(env.store.key_kgs(row["id"])) if row["scoped"] else "*"
    return kgs, iso(row["expires_at"])


def _live_key(env: Env, label: str) -> dict[str, Any]:
    row = env.store.key(label)
    if row is None:
        raise CommandError(f"API key '{label}' not found")
    if row["revoked_at"] is not None:
        raise CommandError(f"API key '{label}' is already revoked")
    return row
