"""What `.help` says, derived from the registry: the overview grouped by topic, a group's list,
and one command's usage, arguments with their valid values and defaults, and examples.

Lines stay within WIDTH columns, so the text reads on an 80-column terminal without a pager
(the backend does not know the terminal; a server answers many).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from ..errors import CommandError
from .kinds import clip
from .parser import subcommand_error
from .registry import COMMANDS, GROUPS, Command, audit_actions, group_usage, match_command

# The sections of docs/commands.md: a title and the first words of the commands it holds.
TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("General", ("help", "whoami", "status", "quit", "config", "format", "expanded", "timing", "pager", "read")),
    ("Users", ("user",)),
    ("Knowledge graphs and their access lists", ("kg",)),
    ("API keys and session tokens", ("apikey", "token")),
    ("Audit and lockouts", ("audit", "lockout")),
    ("Sessions (server only)", ("session",)),
)

# `.help`'s overview, one line each, in this order: the command prefixes a line covers (the
# longest prefix of a command wins) and its summary ("": the one command's own). A command no
# line covers gets a line of its own at the end. Short enough for an 80x24 terminal.
OVERVIEW: tuple[tuple[tuple[str, ...], str], ...] = (
    (("help",), ""),
    (("whoami", "status"), "Who you are; the target, version, uptime"),
    (("quit",), "Leave the shell (also .exit, .q)"),
    (("config",), "The shell's config file"),
    (("format", "expanded", "timing", "pager"), "How results are shown"),
    (("read",), "Run the commands in a file"),
    (("user",), "Users, their passwords and global roles"),
    (("kg",), "Show, list, create, use, drop KGs"),
    (("kg acl",), "Who may read, write or own a KG"),
    (("apikey",), "API keys: role, KGs, expiry, IPs, rate"),
    (("token",), "Short-lived signed tokens that act as you"),
    (("audit",), "The audit log, and checking its hash chain"),
    (("lockout",), "Addresses and user names locked after failed logins"),
    (("session",), "Live sessions on a server: list, kill"),
)

WIDTH = 79
NAME_COLUMN = 18     # wide enough for the longest command name, `.kg acl revoke`
OVERVIEW_COLUMN = 36   # a longer group name puts its summary on the next line


def _two_columns(commands: list[Command]) -> list[str]:
    """`  .name   summary`, the summary wrapped under itself when it is long."""
    lines = []
    for cmd in commands:
        lead = f"  {cmd.name}".ljust(NAME_COLUMN) + " "
        if len(lead) > NAME_COLUMN + 1:      # a longer name added later: the summary goes below
            lines.append(lead.rstrip())
            lead = " " * (NAME_COLUMN + 1)
        lines += textwrap.wrap(cmd.summary, WIDTH, initial_indent=lead,
                               subsequent_indent=" " * (NAME_COLUMN + 1))
    return lines


def overview(commands: Sequence[Command] = COMMANDS) -> list[str]:
    """One line per OVERVIEW entry that names one of `commands`, then one per command none covers."""
    prefixes = [tuple(p.split()) for entry, _ in OVERVIEW for p in entry]
    covered: dict[tuple[str, ...], list[Command]] = {}
    lone: list[Command] = []
    for cmd in commands:
        key = max((p for p in prefixes if cmd.words[:len(p)] == p), key=len, default=None)
        if key is None:
            lone.append(cmd)
        else:
            covered.setdefault(key, []).append(cmd)
    lines: list[str] = []
    for entry, summary in OVERVIEW:
        keys = [k for k in (tuple(p.split()) for p in entry) if k in covered]
        if keys:
            name = " ".join(_group_name(k, covered[k]) for k in keys)
            lines += _row(name, summary or covered[keys[0]][0].summary)
    for cmd in lone:
        lines += _row(cmd.name, cmd.summary)
    return lines + ["", "Type .help .kg for a group's commands, .help .kg use for one command."]


def _group_name(key: tuple[str, ...], members: list[Command]) -> str:
    lead = "." + " ".join(key)
    subs = [" ".join(c.words[len(key):]) for c in members if len(c.words) > len(key)]
    if not subs:
        return lead
    joined = "|".join(subs)
    return f"{lead} [{joined}]" if any(c.words == key for c in members) else f"{lead} {joined}"


def _row(name: str, summary: str) -> list[str]:
    lead = f"  {name}".ljust(OVERVIEW_COLUMN) + " "
    indent = " " * (OVERVIEW_COLUMN + 1)
    if len(lead) > len(indent):
        return [lead.rstrip(), *textwrap.wrap(summary, WIDTH, initial_indent=indent, subsequent_indent=indent)]
    return textwrap.wrap(summary, WIDTH, initial_indent=lead, subsequent_indent=indent)


def topic_help(topic: str, commands: Sequence[Command] = COMMANDS) -> list[str]:
    """`.help <topic>`: a group's list (`.kg`, `.kg acl`) of those in `commands`, followed by the
    details of the command the topic names exactly, if any (whether listed or not)."""
    words = [w.lower() for w in topic.lstrip(".").split()]
    members = [c for c in commands if words and c.words[:len(words)] == tuple(words)]
    exact, used = match_command(words) if words else (None, 0)
    if exact is not None and used != len(words):
        exact = None
    if not members and exact is None:
        if words and words[0] in GROUPS:
            raise subcommand_error(words) or CommandError(f"Usage: {group_usage(words[0])}")
        raise CommandError(f"Unknown command: .{clip(topic.lstrip('.'), 40)}. Type .help for the list.")
    if exact is not None and members in ([], [exact]):
        return command_help(exact)
    lines = _two_columns(members)
    if exact is not None:
        lines += ["", *command_help(exact)]
    return lines


def command_help(cmd: Command) -> list[str]:
    usage = textwrap.wrap(f"Usage: {cmd.usage}", WIDTH, subsequent_indent=" " * len(f"Usage: {cmd.name} "),
                          break_long_words=False, break_on_hyphens=False)
    lines = [*usage, *_wrap(cmd.summary + "."), f"Who may run it: {cmd.who}."]
    if cmd.server_only:
        lines.append("Only on a server (--url).")
    arguments = [(f"<{p.name}>", p.kind.describe, p.default) for p in cmd.params] + \
                [(f"{o.name}={o.placeholder}", o.kind.describe, o.default) for o in cmd.options]
    if arguments:
        lines.append("Arguments:")
        for label, describe, default in arguments:
            text = describe + (f" (default: {default})" if default else "")
            lines += _wrap(text, lead=f"  {label}".ljust(NAME_COLUMN) + " ")
    if any(o.kind.name == "action" for o in cmd.options):
        lines.append("Actions:")
        lines += _wrap(", ".join(audit_actions()), lead="  ")
    if cmd.examples:
        lines.append("Examples:")
        lines += [f"  {e}" for e in cmd.examples]
    return lines


def _wrap(text: str, lead: str = "") -> list[str]:
    if len(lead) > NAME_COLUMN + 1:          # a long label: its text starts on the next line
        return [lead.rstrip(), *textwrap.wrap(text, WIDTH, initial_indent=" " * (NAME_COLUMN + 1),
                                              subsequent_indent=" " * (NAME_COLUMN + 1))]
    return textwrap.wrap(text, WIDTH, initial_indent=lead, subsequent_indent=" " * len(lead)) or [lead.rstrip()]
