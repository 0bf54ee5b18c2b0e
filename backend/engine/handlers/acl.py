"""KG access lists: who holds which level on a knowledge graph."""

from __future__ import annotations

from ...display import iso
from ...errors import CommandError
from ...result import Result
from .base import Call, Env, handles


@handles("kg acl list")
def acl_list(env: Env, call: Call) -> Result:
    return Result(["username", "role", "granted_by", "granted_at"],
                  [[e["username"], e["role"], e["granted_by"], iso(e["granted_at"])]
                   for e in env.store.acl_for_kg(call.args["kg"])])


@handles("kg acl grant")
def acl_grant(env: Env, call: Call) -> Result:
    session = call.session
    kg, user, role = call.args["kg"], call.args["user"], call.args["role"]
    env.existing_user(user)
    env.store.grant(kg, user, role, session.username, env.clock())
    env.audit(call, f"kg={kg}; role={role}", target=user)
    return Result.message(f"Granted '{role}' access on '{kg}' to '{user}'.")


@handles("kg acl revoke")
def acl_revoke(env: Env, call: Call) -> Result:
    kg, user = call.args["kg"], call.args["user"]
    env.existing_user(user)
    if env.store.acl_entry(kg, user) is None:
        raise CommandError(f"No ACL entry found for user '{user}' on '{kg}'")
    env.store.revoke(kg, user)
    env.audit(call, f"kg={kg}", target=user)
    return Result.message(f"Revoked access on '{kg}' from '{user}'.")


@handles("kg acl check")
def acl_check(env: Env, call: Call) -> Result:
    kg, name = call.args["kg"], call.args["user"]
    user = env.existing_user(name)
    if user["role"] == "admin":
        access, because = "owner", "global role admin"
    else:
        entry = env.store.acl_entry(kg, name)
        access, because = (entry["role"], "ACL entry") if entry else ("none", "no ACL entry")
    return Result(["username", "kg", "access", "because"], [[name, kg, access, because]])
