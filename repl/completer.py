"""Tab completion derived from the command registry, with live names fetched in the background.

The completer only ever reads a cache: a refresher thread (pgcli's model) runs the list commands
and swaps the cache in, so typing never waits on the backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.document import Document

from backend.config import SCHEMA, holds_secret
from backend.language.kinds import AUDIT_OUTCOMES, FORMATS, KG_ROLES, ROLES, Kind
from backend.language.lexer import quote_word
from backend.language.parser import Analysis, analyze
from backend.language.registry import COMMANDS, GROUPS, Command, audit_actions, find_command, offered
from backend.result import Result

from .output import printable

# Where live names come from: the kind's `completes` value -> the command listing them
# (first column).
LIVE_SOURCES = {"users": "user list", "kgs": "kg list", "api_keys": "apikey list",
                "sessions": "session list", "addresses": "lockout list"}
FIXED = {"roles": ROLES, "kg_roles": KG_ROLES, "durations": ("1h", "24h", "7d", "30d", "90d", "never"),
         "actions": (*audit_actions(), "!auth"), "outcomes": AUDIT_OUTCOMES,
         "settings": tuple(sorted(key for key in SCHEMA if not holds_secret(key))),
         "switches": ("on", "off"), "expanded": ("on", "off", "auto"), "formats": FORMATS}
# The commands with an argument or option that completes each kind of live name.
_TAKERS = {kind: [c for c in COMMANDS if any(k.completes == kind for k in
                                             [p.kind for p in c.params] + [o.kind for o in c.options])]
           for kind in LIVE_SOURCES}
# Every spelling of a command, aliases included: ("user", "create"), ("q",), ...
SPELLINGS = sorted({(w, c) for c in COMMANDS for w in (c.words, *c.aliases)}, key=lambda s: s[0])


class LiveNames:
    """Users, KGs and API-key labels as the backend last reported them.

    `run(line)` executes a command (the shell serializes it with its other backend calls) and
    returns its Result, or raises. A command the caller may not run gives an empty list; it is
    not even tried when the registry says it needs a global role the caller lacks (so that no
    refusal is audited on every refresh).
    """

    def __init__(self, run: Callable[[str], Result], identity: dict[str, str] | None = None, *,
                 server: bool = True):
        self._run = run
        self.server = server                    # server-only lists are not asked of a local target
        self.names: dict[str, tuple[str, ...]] = {kind: () for kind in LIVE_SOURCES}
        self.identity = identity or {}          # `.whoami` as a dict: the toolbar shows the role
        self.refreshed = threading.Event()   # set after each completed refresh (tests wait on it)
        self._wanted = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Ask for a refresh; returns at once. Requests made during a refresh coalesce."""
        self.refreshed.clear()
        self._wanted.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="completion-refresher", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._closed = True
        self._wanted.set()

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closed:
                return
            self.identity = self._whoami()
            self.names = {kind: self._fetch(kind, source) for kind, source in LIVE_SOURCES.items()}
            if not self._wanted.is_set():
                self.refreshed.set()

    def _whoami(self) -> dict[str, str]:
        """`.whoami` as a dict (the role may have changed), else the last known identity."""
        try:
            result = self._run(".whoami")
            return dict(zip(result.columns, result.rows[0]))
        except Exception:  # noqa: BLE001 - whatever the failure, the refresher must live on
            return self.identity

    def _fetch(self, kind: str, source: str) -> tuple[str, ...]:
        """The names of `kind`, when the caller may list them and some command they may run
        takes them (session ids only for `.session kill`, an admin's)."""
        role = self.identity.get("role", "")
        cmd = find_command(source)
        if cmd is not None and not offered(cmd, role, self.server) or \
                not any(offered(c, role, self.server) for c in _TAKERS[kind]):
            return ()
        try:
            result = self._run("." + source)
        except Exception:  # noqa: BLE001 - a refusal, a dropped connection...: no names, no crash
            return ()
        return tuple(sorted(row[0] for row in result.rows if row))


class CommandCompleter(Completer):
    def __init__(self, live: LiveNames, *, local: bool = False):
        self.live = live
        self.local = local   # server-only commands are not offered on the local target

    def _offers(self, cmd: Command) -> bool:
        """The registry's view of what this caller may run here; everything while the caller's
        role is not known yet."""
        role = getattr(self.live, "identity", {}).get("role")
        return offered(cmd, role, not self.local) if role else not (cmd.server_only and self.local)

    def get_completions(self, document: Document, complete_event: object) -> Iterable[Completion]:
        text = document.text_before_cursor
        before = analyze(text, partial=True)
        tokens = before.tokens
        if tokens and tokens[-1].end == len(text) and not text.endswith((" ", "\t")):
            current = tokens[-1]          # the word being typed
            typed, raw = current.text, text[current.start:]
            before = analyze(text[:current.start], partial=True)
        else:
            typed, raw = "", ""
        done = [t.text for t in before.tokens]
        if not done:
            if typed.startswith(".") or not typed:
                yield from self._words([], typed[1:], raw, dot=True)
            return
        if before.group is None:
            return
        yield from self._words([before.group, *done[1:]], typed, raw)
        if before.command is not None:
            yield from self._arguments(before.command, before, typed, raw)

    def _words(self, words: list[str], typed: str, raw: str, dot: bool = False) -> Iterable[Completion]:
        """The next command or sub-command word after `words`."""
        prefix = tuple(w.lower() for w in words)
        seen = set()
        for spelling, cmd in SPELLINGS:
            if len(spelling) <= len(prefix) or spelling[:len(prefix)] != prefix or not self._offers(cmd):
                continue
            word = spelling[len(prefix)]
            if word in seen or not word.startswith(typed.lower()):
                continue
            seen.add(word)
            if len(spelling) == len(prefix) + 1:
                meta = cmd.summary
            else:   # a group word: name its sub-commands
                meta = ", ".join(c.words[len(prefix) + 1] for c in GROUPS[spelling[0]]
                                 if c.words[:len(prefix) + 1] == spelling[:len(prefix) + 1]
                                 and len(c.words) > len(prefix) + 1 and self._offers(c))
            shown = ("." if dot else "") + word
            yield Completion(shown + " ", -len(raw), display=shown, display_meta=meta)

    def _arguments(self, cmd: Command, before: Analysis, typed: str, raw: str) -> Iterable[Completion]:
        if cmd.params and cmd.params[-1].rest:   # `.help <command words>`
            args = [p.text for p in before.parts if p.name == cmd.params[-1].name]
            topic = [args[0].lstrip("."), *args[1:]] if args else []
            yield from self._words(topic, typed.lstrip("."), raw, dot=not args and typed.startswith("."))
            return
        if "=" in typed and cmd.options:
            key, value = typed.split("=", 1)
            option = next((o for o in cmd.options if o.name == key.lower()), None)
            if option is not None:
                yield from self._values(option.kind, value, len(raw) - len(key) - 1)
            return
        # We never complete a secret: after `.user create bob` the next completable word is the role.
        params = [p for p in cmd.params[before.positional:] if not p.kind.secret]
        if params and not before.options:
            yield from self._values(params[0].kind, typed, len(raw))
        if before.positional >= sum(not p.optional for p in cmd.params):
            for option in cmd.options:
                if option.name not in before.options and option.name.startswith(typed.lower()):
                    yield Completion(option.name + "=", -len(raw), display_meta=option.placeholder)

    def _values(self, kind: Kind, typed: str, replace: int) -> Iterable[Completion]:
        if kind.name == "kg_list":   # `kg=a,b,<Tab>`: complete the part after the last comma
            head, _, typed = typed.rpartition(",")
            replace -= len(head) + (1 if head else 0)
        if kind.completes in LIVE_SOURCES:   # names are case-sensitive
            candidates, typed_key = self.live.names[kind.completes], typed
        else:
            candidates, typed_key = FIXED.get(kind.completes or "", ()), typed.lower()
        end = "" if kind.name == "kg_list" else " "
        for value in candidates:
            if value.startswith(typed_key):    # a name from outside (a locked user:<name>) may need quotes
                yield Completion(quote_word(value) + end, -replace, display=printable(value))
