"""What anyone may ask: help, who am I, the target's status."""

from __future__ import annotations

from ... import __version__
from ...language.helptext import overview, topic_help
from ...result import Result
from .base import Call, Env, handles


@handles("help")
def show_help(env: Env, call: Call) -> Result:
    topic = call.args.get("command")
    return Result.message(*(topic_help(topic) if topic else overview()))


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
