"""Live sessions on a server: list and kill."""

from __future__ import annotations

from ...display import iso
from ...errors import CommandError
from ...result import Result
from .base import Call, Env, handles


@handles("session list")
def session_list(env: Env, call: Call) -> Result:
    session, rights = call.session, call.rights
    assert env.directory is not None     # server-only: the engine runs it only with one
    live = env.directory.sessions()
    if rights.role != "admin":
        live = [s for s in live if s.username == session.username]
    # `current` marks the caller's own session, the one not to kill by mistake.
    return Result(["session_id", "username", "auth", "address", "knowledge_graph", "connected_at", "node",
                   "current"],
                  [[s.id, s.username, s.auth, s.address, s.knowledge_graph, iso(s.connected_at), s.node,
                    "yes" if s.id == session.id else ""]
                   for s in sorted(live, key=lambda s: s.connected_at)])


@handles("session kill")
def session_kill(env: Env, call: Call) -> Result:
    prefix = call.args["session_id"]
    assert env.directory is not None     # server-only: the engine runs it only with one
    matches = sorted(s.id for s in env.directory.sessions() if s.id.startswith(prefix))
    if len(matches) > 1:
        raise CommandError(f"Session id '{prefix}' is ambiguous: it starts {', '.join(matches)}")
    if not matches or not env.directory.kill(matches[0], "killed by an administrator"):
        raise CommandError(f"Session '{prefix}' not found")
    env.audit(call, target=matches[0])
    return Result.message(f"Session '{matches[0]}' closed.")
