"""API keys: create, list, revoke, rotate."""

from __future__ import annotations

from typing import Any

from ...display import iso
from ...errors import CommandError
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
    lifetime = call.options.get("expires")
    if lifetime == 0:
        raise CommandError("Invalid duration '0s': a key's expiry must be in the future")
    now = env.clock()
    expires_at = None if lifetime is None else now + lifetime
    role, kgs, expires_at, ips, rate = within_creator(call.rights, KeyLimits(
        role, kgs, expires_at, tuple(call.options.get("ips", ())), call.options.get("rate")),
        never_expires="expires" in call.options and lifetime is None)
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
