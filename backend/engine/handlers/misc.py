"""What anyone may ask: help, who am I, the target's status."""

from __future__ import annotations

from ... import __version__
from ...errors import CommandError
from ...language.registry import COMMANDS, GROUPS, clip, find_command, offered
from ...result import Result
from .base import Call, Env, handles


@handles("help")
def show_help(env: Env, call: Call) -> Result:
    topic = call.args.get("command")
    # The lists hold what this caller may run on this target (a single command is still explained).
    server = env.directory is not None
    shown = [c for c in COMMANDS if offered(c, call.rights.role, server)]
    if not topic:
        return Result(["command", "description"], [[c.usage, c.summary] for c in shown])
    cmd = find_command(topic)
    if cmd is None:
        group = topic.lstrip(".").split()[0].lower() if topic.strip(". ") else ""
        if group in GROUPS and len(topic.lstrip(".").split()) == 1:
            return Result(["command", "description"], [[c.usage, c.summary] for c in GROUPS[group] if c in shown])
        raise CommandError(f"Unknown command: .{clip(topic.lstrip('.'), 40)}. Type .help for the list.")
    lines = [f"Usage: {cmd.usage}", cmd.summary + ".", f"Who may run it: {cmd.who}."]
    lines += [f"Example: {e}" for e in cmd.examples]
    return Result.message(*lines)


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
