"""Users: create, drop, passwords, roles."""

from __future__ import annotations

from ...display import iso
from ...errors import CommandError, PermissionDenied
from ...language.parser import Invocation
from ...result import Result
from ..delegation import unscoped_only
from ..policy import Rights, Session
from .base import Call, Env, handles

_manage_users = unscoped_only("manage users")


def _password_sessions_only(session: Session, rights: Rights, inv: Invocation) -> None:
    """A password is changed by someone who knows it: a key or token cannot change its owner's.
    Setting any password needs a credential without a KG scope: another user's is managing
    users, and one's own would turn a scoped key into an unscoped password login."""
    _manage_users(session, rights, inv)
    if rights.role != "admin" and session.method != "password":
        raise PermissionDenied("Permission denied: change your password in a session that "
                               "logged in with it, not with an API key")


@handles("user list")
def user_list(env: Env, call: Call) -> Result:
    return Result(["username", "role", "created_at", "last_login_at"],
                  [[u["name"], u["role"], iso(u["created_at"]), iso(u["last_login_at"])]
                   for u in env.store.users()])


@handles("user create", check=_manage_users)
def user_create(env: Env, call: Call) -> Result:
    name, role = call.args["name"], call.args["role"] or "viewer"
    if env.store.user(name) is not None:
        raise CommandError(f"User '{name}' already exists")
    if call.password_hash is None:
        raise CommandError("Password required: give it after the user name, or leave it out at the "
                           "interactive shell to be asked for it")
    env.store.add_user(name, role, call.password_hash, env.clock())
    env.audit(call, f"role={role}")
    return Result.message(f"User '{name}' created with role '{role}'.")


@handles("user drop", check=_manage_users)
def user_drop(env: Env, call: Call) -> Result:
    name = call.args["name"]
    user = env.existing_user(name)
    if user["role"] == "admin" and env.store.admin_count() == 1:
        raise CommandError("Cannot drop the last admin")
    keys = len(env.store.keys(owner=name))
    grants = len(env.store.acl_for_user(name))
    env.store.drop_user(name)
    env.audit(call, f"role={user['role']}; api_keys={keys}; acl_entries={grants}")
    return Result.message(f"User '{name}' dropped.")


@handles("user password", check=_password_sessions_only)
def user_password(env: Env, call: Call) -> Result:
    session = call.session
    name = call.args["name"]
    env.existing_user(name)
    if call.password_hash is None:
        raise CommandError("Password required: give the new password after the user name, or leave "
                           "it out at the interactive shell to be asked for it")
    env.store.set_password(name, call.password_hash, new_version=True)
    if name == session.username and session.method == "password":
        # The session that changed the password stays (once the change commits); the user's others end.
        session.pending_password_hash = call.password_hash
    env.audit(call, "password changed")
    return Result.message(f"Password updated for '{name}'.")


@handles("user role", check=_manage_users)
def user_role(env: Env, call: Call) -> Result:
    name, role = call.args["name"], call.args["role"]
    user = env.existing_user(name)
    if user["role"] == "admin" and role != "admin" and env.store.admin_count() == 1:
        raise CommandError("Cannot change the role of the last admin")
    env.store.set_role(name, role)
    env.audit(call, f"role={user['role']}->{role}")
    return Result.message(f"Role updated to '{role}' for '{name}'.")


@handles("user show")
def user_show(env: Env, call: Call) -> Result:
    user = env.existing_user(call.args["name"])
    rows = [["role", user["role"]], ["created_at", iso(user["created_at"])],
            ["last_login_at", iso(user["last_login_at"])]]
    rows += [["grant", f"{g['kg']}: {g['role']}"] for g in env.store.acl_for_user(user["name"])]
    rows += [["api_key", k["label"]] for k in env.store.keys(owner=user["name"]) if k["revoked_at"] is None]
    return Result(["key", "value"], rows)
