"""What anyone may ask: help, who am I, the target's status."""

from __future__ import annotations

from ... import __version__
from ...language.helptext import overview, topic_help
from ...language.registry import COMMANDS, offered
from ...result import Result
from .base import Call, Env, handles


@handles("help")
def show_help(env: Env, call: Call) -> Result:
    topic = call.args.get("command")
    # The lists hold what this caller may run on this target (a single command is still explained).
    server = env.directory is not None
    shown = [c for c in COMMANDS if offered(c, call.rights.role, server)]
    return Result.message(*(topic_help(topic, shown) if topic else overview(shown)))


@handles("whoami")
def whoami(env: Env, call: Call) -> Result:
    session, rights = call.session, call.rights
    return Result(["username", "role", "auth", "knowledge_graph"],
                  [[session.username, rights.role, session.auth, session.knowledge_graph or ""]])


@handles("status")
def status(env: Env, call: Call) -> Result:
    rights = call.rights
    rows = [["version", __version__], ["target", env.target()],
            ["uptime", f"{int(env.clock() - env.started_at)}s"]]
    if env.directory is not None:
        rows.append(["sessions", str(len(env.directory.sessions()))])
    rows.append(["role", rights.role])
    return Result(["key", "value"], rows)
