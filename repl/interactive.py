"""Interactive mode: the prompt-toolkit shell. It holds no command logic: every line goes to the
backend, and completion, colours and history redaction come from the command registry."""

from __future__ import annotations

import threading

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.lexers import PygmentsLexer
from prompt_toolkit.output import ColorDepth

from backend.config import Config
from backend.errors import AuthError, CommandError, SessionEnded, TargetUnreachable
from backend.language.lexer import quote_word
from backend.language.parser import MASK, Role, analyze, parse, secret_spans
from backend.result import Result
from backend.targets.protocols import Backend, Reconnecting

from .completer import CommandCompleter, LiveNames
from .display import format_result, needs_pager, page
from .environment import Environment, ExitStatus
from .highlight import STYLE, CommandLexer, SecretMask
from .history import PrivateHistory, history_path
from .output import printable
from .password_source import resolve_password_source
from .script import is_quit, is_skipped


class _Leave(Exception):
    def __init__(self, status: int):
        self.status = status


class SafeAutoSuggest(AutoSuggestFromHistory):
    """History suggestions, except one that would show a secret in grey after the cursor."""

    def get_suggestion(self, buffer, document):
        suggestion = super().get_suggestion(buffer, document)
        if suggestion and any(end > len(document.text) for _, end in secret_spans(document.text + suggestion.text)):
            return None
        return suggestion


class Shell:
    def __init__(self, backend: Backend, env: Environment, config: Config, *, fmt: str = "table",
                 input=None, output=None):
        self.backend = backend
        self.env = env
        self.fmt = fmt
        self.lock = threading.Lock()   # one backend call at a time: the refresher shares it
        self.disconnected = False
        self.paging = output is None   # only on the real terminal
        who = self._whoami()
        self.user = who.get("username", "?")
        self.kg = who.get("knowledge_graph", "")
        self.live = LiveNames(self._call, who)
        colour = "NO_COLOR" not in env.env
        self.session: PromptSession[str] = PromptSession(
            history=PrivateHistory(history_path(config, env.env)),
            completer=CommandCompleter(self.live, local=backend.target == "local"),
            complete_while_typing=False,
            auto_suggest=SafeAutoSuggest(),
            enable_history_search=False,   # Up recalls; Ctrl-R searches
            lexer=PygmentsLexer(CommandLexer) if colour else None,
            input_processors=[SecretMask()],
            style=STYLE,
            include_default_pygments_style=False,
            color_depth=None if colour else ColorDepth.DEPTH_1_BIT,
            bottom_toolbar=self._toolbar,
            input=input, output=output)

    # --- backend calls -------------------------------------------------------------------

    def _call(self, line: str) -> Result:
        with self.lock:
            return self.backend.execute(line)

    def _whoami(self) -> dict[str, str]:
        try:
            result = self._call(".whoami")
        except CommandError:
            return {}
        return dict(zip(result.columns, result.rows[0])) if result.rows else {}

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        self.live.refresh()
        try:
            while True:
                try:
                    line = self.session.prompt(self._prompt)
                except KeyboardInterrupt:   # Ctrl-C: drop the line, keep the session
                    continue
                except EOFError:            # Ctrl-D
                    return ExitStatus.OK
                if is_skipped(line):
                    continue
                if is_quit(line):
                    return ExitStatus.OK
                self.execute(line)
        except _Leave as leave:
            return leave.status
        finally:
            self.live.close()

    def execute(self, line: str) -> None:
        try:
            # `password=@FILE` is read here; `password=-` at the terminal is a hidden prompt.
            line = resolve_password_source(line, lambda: self.env.getpass("Password: "))
            completed = self._with_password(line)
        except CommandError as exc:
            self.error(exc.message)
            return
        except (EOFError, KeyboardInterrupt):
            self.env.out("\n")
            return
        if completed is None:
            return
        line = completed
        if self.disconnected and not self._reconnect():
            return
        try:
            result = self._call(line)
        except SessionEnded as exc:
            self.error(exc.message)
            raise _Leave(ExitStatus.ERROR) from None
        except CommandError as exc:
            self.error(exc.message)
            return
        except TargetUnreachable as exc:
            self.disconnected = True
            self.error(f"{exc} (the next command reconnects)")
            return
        except KeyboardInterrupt:
            self.error("interrupted")
            return
        if result.switched_kg is not None:
            self.kg = result.switched_kg
        cmd = analyze(line, partial=True).command
        if cmd is not None and cmd.writes:
            self.live.refresh()
        self.show(result)

    def _reconnect(self) -> bool:
        if isinstance(self.backend, Reconnecting):
            try:
                with self.lock:
                    self.backend.reconnect()
            except TargetUnreachable as exc:
                self.error(f"still unreachable: {exc}")
                return False
            except AuthError as exc:
                self.error(f"authentication failed: {exc.message}")
                raise _Leave(ExitStatus.ERROR) from None
            self.env.out("Reconnected.\n")
            self.live.refresh()
        self.disconnected = False
        return True

    # --- hidden password prompts -----------------------------------------------------------

    def _with_password(self, line: str) -> str | None:
        """The line with a left-out password asked for and inserted (quoted), or None when the
        two entries differ. A password that is the history mask (a recalled redacted line) counts
        as left out: running it would set the password to `********`."""
        try:
            inv = parse(line)
        except CommandError:
            return line                       # the backend words the error
        cmd = inv.command
        secret = next((p for p in cmd.params if p.kind.secret), None)
        if secret is None or inv.args.get(secret.name) not in (None, MASK):
            return line
        first = self.env.getpass("Password: ")
        if self.env.getpass("Repeat password: ") != first:
            self.error("Passwords do not match")
            return None
        word = quote_word(first)
        parts = analyze(line).parts
        given = next((p for p in parts if p.role is Role.ARGUMENT and p.name == secret.name), None)
        if given is not None:                 # the mask of a recalled line
            return line[:given.start] + word + line[given.end:]
        # Insert after the last argument bound before the secret (or after the command words).
        before = {p.name for p in cmd.params[:cmd.params.index(secret)]}
        at = max(p.end for p in parts if p.role in (Role.COMMAND, Role.SUBCOMMAND)
                 or p.role is Role.ARGUMENT and p.name in before)
        return line[:at] + " " + word + line[at:]

    # --- screen ----------------------------------------------------------------------------

    def _prompt(self) -> str:
        where = f"{self.backend.target}:{self.kg}" if self.kg else self.backend.target
        return printable(f"{self.user}@{where}> ")

    def _toolbar(self) -> str:
        role = self.live.identity.get("role", "")
        state = "disconnected" if self.disconnected else self.backend.target
        return printable(f" {state} · role {role} · Tab completes · Ctrl-R searches · Ctrl-D quits ")

    def show(self, result: Result) -> None:
        size = self.session.output.get_size()
        text = format_result(result, self.fmt, size.columns)
        if self.paging and needs_pager(text, size.rows) and page(text, self.env.env):
            return
        self.env.out(text)

    def error(self, message: str) -> None:
        line = "error: " + printable(message)
        if self.env.colour:
            line = f"\x1b[31m{line}\x1b[0m"
        self.env.err(line + "\n")


def run_interactive(backend: Backend, env: Environment, config: Config, fmt: str = "table", *,
                    input=None, output=None) -> int:
    return Shell(backend, env, config, fmt=fmt, input=input, output=output).run()
