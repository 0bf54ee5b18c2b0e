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
    return Result(["session_id", "username", "auth", "address", "knowledge_graph", "connected_at", "node"],
                  [[s.id, s.username, s.auth, s.address, s.knowledge_graph, iso(s.connected_at), s.node]
                   for s in sorted(live, key=lambda s: s.connected_at)])


@handles("session kill")
def session_kill(env: Env, call: Call) -> Result:
    sid = call.args["session_id"]
    assert env.directory is not None     # server-only: the engine runs it only with one
    if not env.directory.kill(sid, "killed by an administrator"):
        raise CommandError(f"Session '{sid}' not found")
    env.audit(call)
    return Result.message(f"Session '{sid}' closed.")
