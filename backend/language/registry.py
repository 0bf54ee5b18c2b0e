"""The one declaration of the dot-command language.

Parsing, usage lines, `.help`, authorization rules, the shell's completer and highlighter and
the history redaction are all derived from COMMANDS below; a new command is added here only.
"""

# No `from __future__ import annotations`: NamedTuple would compile each field's annotation
# string at every start-up: about 0.4 ms for this module's and kinds.py's tuples.
from typing import NamedTuple

from ..errors import CommandError
from .kinds import (
    ANY_NETWORKS,
    COUNT,
    DURATION,
    EXPANDED,
    EXPIRY,
    FORMAT,
    IDENT,
    KG,
    KG_LIST,
    KG_ROLE,
    KG_SCOPE,
    LABEL,
    LOCKOUT,
    NETWORKS,
    NEW_KG,
    NEW_NAME,
    OUTCOME,
    PASSWORD_SOURCE,
    PATH,
    RATE,
    RATE_OR_NONE,
    ROLE,
    SECRET,
    SESSION_PREFIX,
    SETTING,
    SWITCH,
    TEXT,
    TOPIC,
    USER,
    Kind,
    clip,
)

AUTH_ACTIONS = ("auth.login", "auth.api_key", "auth.token", "auth.shared_key", "auth.anonymous")
MAINTENANCE_ACTIONS = ("secrets.rotate", "store.upgrade")   # inputlayer-server rotate-secrets, a schema upgrade


def check_audit_action(text: str) -> tuple[bool, str]:
    """(exclude, name): `user.create`, a group such as `user`, or either after `!` to hide it."""
    exclude = text.startswith("!")
    name = text[1:].lower() if exclude else text.lower()
    valid = audit_actions()
    if name not in valid and name not in {a.split(".")[0] for a in valid}:
        raise CommandError(f"Unknown audit action '{clip(text)}'. Valid: {', '.join(valid)}, "
                           "or a group name (user, apikey...), with '!' in front to hide it")
    return exclude, name


AUDIT_ACTION = Kind("action", check_audit_action, completes="actions",
                    describe="an action name (see below) or its group (user, apikey...); "
                             "a leading '!' hides it (action=!auth hides logins)")


class Param(NamedTuple):
    name: str
    kind: Kind
    optional: bool = False
    rest: bool = False   # takes every remaining word (only `.help`)
    default: str = ""    # what a left-out optional parameter means, for `.help`


class Option(NamedTuple):
    name: str
    kind: Kind
    placeholder: str
    default: str = ""    # what leaving the option out means, for `.help`


class Rule(NamedTuple):
    """Who may run a command; the engine enforces it before the handler runs.

    kind: anyone | admin | admin_or_self | kg_creator | kg | token_issuer
    For `kg`, `level` is the KG level required on the KG named by `kg_param` (or the current
    KG when that argument is left out); `self_param` also admits the caller naming themself.
    """
    kind: str
    level: str | None = None
    kg_param: str | None = None
    self_param: str | None = None
    denied: str = "Access denied"


class Command(NamedTuple):
    words: tuple[str, ...]
    params: tuple[Param, ...]
    summary: str
    who: str
    rule: Rule
    writes: bool = False
    options: tuple[Option, ...] = ()
    examples: tuple[str, ...] = ()
    server_only: bool = False
    shell_only: bool = False
    quick: bool = False      # a few indexed reads, whatever the store's size: a server may run it inline
    aliases: tuple[tuple[str, ...], ...] = ()
    bare: tuple[str, ...] = ()   # spellings without a dot that work at the interactive prompt only

    @property
    def name(self) -> str:
        return "." + " ".join(self.words)

    @property
    def usage(self) -> str:
        parts = [self.name]
        for p in self.params:
            shown = f"<{p.name}>" + ("..." if p.rest else "")
            parts.append(f"[{shown}]" if p.optional else shown)
        parts += [f"[{o.name}={o.placeholder}]" for o in self.options]
        return " ".join(parts)

    @property
    def action(self) -> str:
        """The audit action name, e.g. `acl.grant`."""
        return _ACTIONS[self.words]


PASSWORD_OPTION = Option("password", PASSWORD_SOURCE, "@<file>|-")

USERS_DENIED = "Permission denied: only admins can manage users"
KEYS_DENIED = "Permission denied: only admins can manage API keys"
ACL_DENIED = "Permission denied: only KG owners can manage ACLs"

COMMANDS: tuple[Command, ...] = (
    # General
    Command(("help",), (Param("command", TOPIC, optional=True, rest=True),),
            "List the commands, or show how to use one", "anyone", Rule("anyone"),
            examples=(".help", ".help .kg acl grant"), bare=("help", "\\?")),
    Command(("whoami",), (), "Show who you are logged in as", "anyone", Rule("anyone"), quick=True),
    Command(("status",), (), "Show the target, version, uptime, role", "anyone",
            Rule("anyone"), quick=True),
    Command(("quit",), (), "Leave the shell", "shell only", Rule("anyone"), shell_only=True,
            aliases=(("exit",), ("q",)), bare=("exit", "quit", "\\q")),
    # The shell's own settings (the config file; policy.md)
    Command(("config", "list"), (), "List the settings in the shell's config file", "shell only",
            Rule("anyone"), shell_only=True),
    Command(("config", "get"), (Param("key", SETTING),), "Show one setting of the config file", "shell only",
            Rule("anyone"), shell_only=True, examples=(".config get shell.format",)),
    Command(("config", "set"), (Param("key", SETTING), Param("value", TEXT)),
            "Set a setting in the config file, keeping its comments and layout", "shell only",
            Rule("anyone"), shell_only=True,
            examples=(".config set shell.format json", ".config set profiles.prod.url wss://il.example.com/ws")),
    Command(("config", "unset"), (Param("key", SETTING),), "Remove a setting from the config file",
            "shell only", Rule("anyone"), shell_only=True),
    # Users
    Command(("user", "list"), (), "List users", "admin", Rule("admin", denied=USERS_DENIED)),
    Command(("user", "create"),
            (Param("name", NEW_NAME), Param("password", SECRET, optional=True),
             Param("role", ROLE, optional=True, default="viewer")),
            "Create a user (the password is asked for when left out)",
            "admin", Rule("admin", denied=USERS_DENIED), writes=True,
            options=(PASSWORD_OPTION,),
            examples=(".user create alice 'correct horse battery' editor", ".user create bob viewer",
                      ".user create carol editor password=@/run/secrets/carol")),
    Command(("user", "drop"), (Param("name", USER),),
            "Drop a user with their API keys, ACL entries and sessions", "admin",
            Rule("admin", denied=USERS_DENIED), writes=True),
    Command(("user", "password"), (Param("name", USER), Param("password", SECRET, optional=True)),
            "Set a user's password (your own, or anyone's as admin)", "admin, self",
            Rule("admin_or_self", self_param="name", denied=USERS_DENIED), writes=True,
            options=(PASSWORD_OPTION,),
            examples=(".user password alice", ".user password alice password=-")),
    Command(("user", "role"), (Param("name", USER), Param("role", ROLE)),
            "Change a user's global role", "admin", Rule("admin", denied=USERS_DENIED),
            writes=True, examples=(".user role alice editor",)),
    Command(("user", "show"), (Param("name", USER),),
            "Show a user's role, grants and API keys", "admin, self",
            Rule("admin_or_self", self_param="name", denied=USERS_DENIED)),
    # Knowledge graphs
    Command(("kg",), (), "Show the current knowledge graph", "anyone", Rule("anyone"), quick=True),
    Command(("kg", "list"), (), "List the knowledge graphs you can reach", "anyone", Rule("anyone")),
    Command(("kg", "create"), (Param("name", NEW_KG),),
            "Create a knowledge graph and switch to it", "admin, global editor",
            Rule("kg_creator", denied="Permission denied: viewers cannot create knowledge graphs"), writes=True),
    Command(("kg", "use"), (Param("name", KG),), "Switch to a knowledge graph", "viewer",
            Rule("kg", level="viewer", kg_param="name"), quick=True),
    Command(("kg", "drop"), (Param("name", KG),),
            "Drop a knowledge graph with its ACL entries", "owner",
            Rule("kg", level="owner", kg_param="name",
                 denied="Permission denied: only KG owners can drop this knowledge graph"), writes=True),
    # ACLs
    Command(("kg", "acl", "list"), (Param("kg", KG, optional=True, default="the current knowledge graph"),),
            "List who has access to a knowledge graph", "viewer",
            Rule("kg", level="viewer", kg_param="kg")),
    Command(("kg", "acl", "grant"), (Param("kg", KG), Param("user", USER), Param("role", KG_ROLE)),
            "Grant a user a level on a knowledge graph", "owner",
            Rule("kg", level="owner", kg_param="kg", denied=ACL_DENIED), writes=True,
            examples=(".kg acl grant sales alice editor",)),
    Command(("kg", "acl", "revoke"), (Param("kg", KG), Param("user", USER)),
            "Revoke a user's access to a knowledge graph", "owner",
            Rule("kg", level="owner", kg_param="kg", denied=ACL_DENIED), writes=True),
    Command(("kg", "acl", "check"), (Param("kg", KG), Param("user", USER)),
            "Show a user's access to a knowledge graph and why", "owner, self",
            Rule("kg", level="owner", kg_param="kg", self_param="user", denied=ACL_DENIED),
            quick=True),
    # API keys
    Command(("apikey", "create"), (Param("label", NEW_NAME),),
            "Create an API key (its secret is shown once)", "admin",
            Rule("admin", denied=KEYS_DENIED), writes=True,
            options=(Option("role", ROLE, "<r>", "the owner's role"),
                     Option("kg", KG_LIST, "<a,b>", "every KG the owner can reach"),
                     Option("expires", EXPIRY, "<d|time>", "never"), Option("user", USER, "<owner>", "you"),
                     Option("ips", NETWORKS, "<cidr,...>", "any address"),
                     Option("rate", RATE, "<n>/<s|m|h|d>", "no limit")),
            examples=(".apikey create etl-job role=editor kg=sales expires=90d",
                      ".apikey create ci-bot ips=10.20.0.0/16 rate=100/m")),
    Command(("apikey", "list"), (), "List API keys (never their secrets)", "admin",
            Rule("admin", denied=KEYS_DENIED),
            options=(Option("user", USER, "<owner>", "every owner"),)),
    Command(("apikey", "show"), (Param("label", LABEL),),
            "Show an API key's owner, limits and status (never its secret)", "admin",
            Rule("admin", denied=KEYS_DENIED)),
    Command(("apikey", "alter"), (Param("label", LABEL),),
            "Change an API key's role cap, KGs, expiry, address ranges or rate in place; its secret stays",
            "admin", Rule("admin", denied=KEYS_DENIED), writes=True,
            options=(Option("role", ROLE, "<r>"), Option("kg", KG_SCOPE, "<a,b|*>"),
                     Option("expires", EXPIRY, "<d|time>"), Option("ips", ANY_NETWORKS, "<cidr,...|*>"),
                     Option("rate", RATE_OR_NONE, "<n>/<s|m|h|d>|none")),
            examples=(".apikey alter etl-job role=viewer kg=sales,hr", ".apikey alter ci-bot ips=* rate=none")),
    Command(("apikey", "revoke"), (Param("label", LABEL),), "Revoke an API key", "admin",
            Rule("admin", denied=KEYS_DENIED), writes=True),
    Command(("apikey", "rotate"), (Param("label", LABEL),),
            "Give an API key a new secret; the old one works until the grace ends", "admin",
            Rule("admin", denied=KEYS_DENIED), writes=True,
            options=(Option("grace", DURATION, "<d>", "24h"),),
            examples=(".apikey rotate etl-job grace=1h",)),
    # Session tokens
    Command(("token", "issue"), (), "Issue a short-lived signed token that acts as you, with your limits",
            "anyone", Rule("anyone"), writes=True,
            options=(Option("ttl", DURATION, "<d>", "15m; at most 24h"),), examples=(".token issue ttl=15m",)),
    Command(("token", "revoke"), (Param("jti", IDENT),), "Revoke a token before it expires",
            "admin, issuer",
            Rule("token_issuer", denied="Permission denied: only admins can revoke other users' tokens"), writes=True),
    # Audit and lockouts
    Command(("audit",), (), "Show the audit log, newest first", "admin",
            Rule("admin", denied="Permission denied: only admins can read the audit log"),
            options=(Option("limit", COUNT, "N", "50"), Option("user", USER, "<u>", "everyone"),
                     Option("action", AUDIT_ACTION, "<a>", "every action"),
                     Option("outcome", OUTCOME, "<o>", "every outcome"),
                     Option("since", DURATION, "<d>", "no time limit")),
            examples=(".audit limit=20 action=user.create", ".audit since=24h action=!auth",
                      ".audit outcome=denied")),
    Command(("audit", "verify"), (), "Check the audit log's hash chain", "admin",
            Rule("admin", denied="Permission denied: only admins can read the audit log")),
    Command(("lockout", "list"), (), "List locked-out addresses and user names (user:<name>)", "admin",
            Rule("admin", denied="Permission denied: only admins can manage lockouts")),
    Command(("lockout", "clear"), (Param("target", LOCKOUT),),
            "Lift the lockout of an address, or of a user name given as user:<name>",
            "admin", Rule("admin", denied="Permission denied: only admins can manage lockouts"), writes=True,
            examples=(".lockout clear 203.0.113.7", ".lockout clear user:alice")),
    # Sessions (server only)
    Command(("session", "list"), (), "List live sessions", "anyone", Rule("anyone"),
            server_only=True),
    Command(("session", "kill"), (Param("session_id", SESSION_PREFIX),), "Close a live session", "admin",
            Rule("admin", denied="Permission denied: only admins can kill sessions"),
            writes=True, server_only=True),
    # Shell settings and scripts: the shell runs these itself, on either target
    Command(("format",), (Param("format", FORMAT),), "Set the output format: table, plain, json or csv",
            "shell only", Rule("anyone"), shell_only=True, examples=(".format json",)),
    Command(("expanded",), (Param("mode", EXPANDED),),
            "Show rows as one record a block: on, off, or auto (when a table is too wide)",
            "shell only", Rule("anyone"), shell_only=True, examples=(".expanded on",)),
    Command(("timing",), (Param("mode", SWITCH),),
            "Show how long each command took (the server's time when remote)", "shell only",
            Rule("anyone"), shell_only=True, examples=(".timing on",)),
    Command(("pager",), (Param("mode", SWITCH),),
            "Page long results through $PAGER (default: less -R -X)", "shell only",
            Rule("anyone"), shell_only=True, examples=(".pager off",)),
    Command(("read",), (Param("file", PATH),),
            "Run the commands in a file, as a script (stops at the first error)", "shell only",
            Rule("anyone"), shell_only=True, examples=(".read setup.il",)),
)

def _action_name(words: tuple[str, ...]) -> str:
    words = words[1:] if words[:2] == ("kg", "acl") else words
    return ".".join(words) if len(words) > 1 else words[0]


_ACTIONS = {cmd.words: _action_name(cmd.words) for cmd in COMMANDS}   # looked up on every change



def audit_actions() -> tuple[str, ...]:
    """The actions audit records name: a change or refusal of a command, or an authentication."""
    return _AUDIT_ACTIONS


_AUDIT_ACTIONS = tuple(sorted({*(c.action for c in COMMANDS if not c.shell_only and (c.writes or c.rule.kind != "anyone")),
                            *AUTH_ACTIONS, *MAINTENANCE_ACTIONS}))

_BY_WORDS: dict[tuple[str, ...], Command] = {}
for _cmd in COMMANDS:
    for _words in (_cmd.words, *_cmd.aliases):
        _BY_WORDS[_words] = _cmd
GROUPS: dict[str, list[Command]] = {}
for _cmd in COMMANDS:
    GROUPS.setdefault(_cmd.words[0], []).append(_cmd)


def offered(cmd: Command, role: str, server: bool) -> bool:
    """Whether a caller of global `role` is shown `cmd` (in `.help` and completion): commands
    that need a global role the caller lacks, or a server the target is not, are left out.
    The engine still decides; this only keeps the lists to what may work."""
    if cmd.server_only and not server:
        return False
    if cmd.rule.kind == "admin":
        return role == "admin"
    if cmd.rule.kind == "kg_creator":
        return role in ("admin", "editor")
    return True


def group_usage(group: str) -> str:
    subs = [" ".join(c.words[1:]) for c in GROUPS[group] if len(c.words) > 1]
    lead = "." + group
    return f"{lead} [{'|'.join(subs)}] ..." if any(len(c.words) == 1 for c in GROUPS[group]) \
        else f"{lead} {'|'.join(subs)} ..."


def match_command(words: list[str]) -> tuple[Command | None, int]:
    """The longest registered command that `words` start with, and how many words it took."""
    first = words[:3]
    lowered = None
    for size in range(len(first), 0, -1):
        # Words as typed first: they are lower case in nearly every line, and lowering costs more.
        cmd = _BY_WORDS.get(tuple(first[:size]))
        if cmd is None:
            lowered = lowered or [w.lower() for w in first]
            cmd = _BY_WORDS.get(tuple(lowered[:size]))
        if cmd:
            return cmd, size
    return None, 0


def find_command(topic: str) -> Command | None:
    words = topic.lstrip(".").split()
    cmd, used = match_command(words) if words else (None, 0)
    return cmd if cmd and used == len(words) else None
