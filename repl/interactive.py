"""Interactive mode: the prompt-toolkit shell. It holds no command logic: every line goes to the
backend, and completion, colours and history redaction come from the command registry."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from functools import partial

from prompt_toolkit.application import run_in_terminal

from backend.config import Config
from backend.errors import AuthError, CommandError, NotSent, SessionEnded, TargetUnreachable
from backend.language.kinds import ROLES
from backend.language.lexer import quote_word
from backend.language.parser import MASK, Invocation, Part, Role, analyze, parse
from backend.language.registry import Command
from backend.result import Result
from backend.targets.protocols import Backend, Reconnecting, Timed, Watching

from .completer import LiveNames
from .display import format_result, needs_pager, page
from .display_settings import Settings, is_setting
from .environment import Environment, ExitStatus
from .output import printable
from .password_source import resolve_password_source
from .prompt_session import prompt_session
from .script import LineQueue, bare_command, decode_lines, is_quit, is_skipped, run_script

GREETING = "Type .help for help.\n"
PASSWORD_REQUIRED = "Password required"    # the engine's answer when only the password is missing


class _Leave(Exception):
    def __init__(self, status: int, message: str | None = None):
        self.status = status
        self.message = message     # said as an error line on the way out


class Shell:
    def __init__(self, backend: Backend, env: Environment, config: Config, *, fmt: str = "table",
                 input=None, output=None, greeting: bool = False):
        self.backend = backend
        self.env = env
        # Pages only on the real terminal unless `.pager on` asks.
        self.settings = Settings(fmt=fmt, pager=output is None)
        self.greeting = greeting
        self.lock = threading.Lock()   # one backend call at a time: the refresher shares it
        self.disconnected = False
        # What the backend said about its connection while the prompt waited (watch()).
        self._notices: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None     # the prompt's, while it runs
        self._loop_lock = threading.Lock()
        who = self._whoami()
        self.user = who.get("username", "?")
        self.kg = who.get("knowledge_graph", "")
        self.live = LiveNames(self._background_call, who, server=backend.target != "local")
        if isinstance(backend, Watching):
            backend.watch(self._told)
        self.session = prompt_session(self.live, env, config, local=backend.target == "local",
                                      toolbar=self._toolbar, input=input, output=output)

    @property
    def fmt(self) -> str:
        return self.settings.fmt

    @property
    def paging(self) -> bool:
        return self.settings.pager

    @paging.setter
    def paging(self, on: bool) -> None:
        self.settings.pager = on

    # --- backend calls -------------------------------------------------------------------

    def _call(self, line: str) -> Result:
        with self.lock:
            return self.backend.execute(line)

    def _background_call(self, line: str) -> Result:
        """The refresher's calls: a connection found ended by one of them is told like one that
        ended while idle (the refresher itself only shrugs)."""
        try:
            return self._call(line)
        except SessionEnded as exc:
            self._told(exc.message, True)
            raise
        except NotSent as exc:
            if exc.discovered:                  # else known lost already
                self._told(str(exc), False)
            raise
        except TargetUnreachable as exc:
            self._told(str(exc), False)
            raise

    def _whoami(self) -> dict[str, str]:
        try:
            result = self._call(".whoami")
        except CommandError:
            return {}
        return dict(zip(result.columns, result.rows[0])) if result.rows else {}

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        self.live.refresh()
        if self.greeting:
            self.env.out(GREETING)
        try:
            while True:
                self._take_notices()
                try:
                    text = self.session.prompt(self._prompt, pre_run=self._prompt_started)
                except KeyboardInterrupt:   # Ctrl-C: drop the line, keep the session
                    continue
                except EOFError:            # Ctrl-D
                    return ExitStatus.OK
                finally:
                    with self._loop_lock:
                        self._loop = None
                # A pasted block is several lines: each runs in order.
                for line in text.split("\n"):
                    if self.run_line(line):
                        return ExitStatus.OK
        except _Leave as leave:
            if leave.message:
                self.error(leave.message)
            return leave.status
        finally:
            self.live.close()

    def run_line(self, line: str) -> bool:
        """Run one line typed at the prompt; True when it asks to leave."""
        if is_skipped(line):
            return False
        bare = bare_command(line)
        if is_quit(line) or (bare is not None and bare.words == ("quit",)):
            return True
        self.execute(".help" if bare is not None else line)
        return False

    # --- what the backend says while the prompt waits -----------------------------------------

    def _told(self, message: str, ended: bool) -> None:
        """watch() listener, on the backend's reader thread: hand over to the prompt's loop."""
        self._notices.put((message, ended))
        with self._loop_lock:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._notices_in_prompt)

    def _prompt_started(self) -> None:
        with self._loop_lock:
            self._loop = asyncio.get_running_loop()
        self._notices_in_prompt()

    def _notices_in_prompt(self) -> None:
        app = self.session.app
        while True:
            try:
                message, ended = self._notices.get_nowait()
            except queue.Empty:
                break
            if ended:   # the server ended the session: leave, never log in again
                app.exit(exception=_Leave(ExitStatus.ERROR, message))
                return
            self.disconnected = True
            run_in_terminal(partial(self.error, f"{message} (the next command reconnects)"))
        app.invalidate()   # the toolbar shows the state

    def _take_notices(self) -> None:
        """Notices that came while a command ran: said before the next prompt."""
        while True:
            try:
                message, ended = self._notices.get_nowait()
            except queue.Empty:
                return
            if ended:
                raise _Leave(ExitStatus.ERROR, message)
            self.disconnected = True
            self.error(f"{message} (the next command reconnects)")

    # --- running a line ----------------------------------------------------------------------

    def execute(self, line: str) -> None:
        try:
            # `password=@FILE` is read here; `password=-` at the terminal is a hidden prompt.
            line = resolve_password_source(line, lambda: self.env.getpass("Password: "))
        except CommandError as exc:
            self.error(exc.message)
            return
        except (EOFError, KeyboardInterrupt):
            self.error("interrupted")
            return
        try:
            inv = parse(line)
        except CommandError:
            inv = None                        # the backend words the error
        try:
            if inv is not None and (is_setting(inv) or inv.command.words == ("read",)):
                self._shell_command(inv)
                return
            if inv is not None:
                completed = self._with_password(line, inv)
                if completed is None:
                    return
                line = completed
            started = time.perf_counter()
            result = self._attempt(line)
        except (EOFError, KeyboardInterrupt):
            self.error("interrupted")
            return
        except SessionEnded as exc:
            raise _Leave(ExitStatus.ERROR, exc.message) from None
        except CommandError as exc:
            self.error(exc.message)
            return
        except TargetUnreachable as exc:
            self.disconnected = True
            self.error(f"{exc} (the next command reconnects)")
            return
        elapsed = time.perf_counter() - started
        if result is None:
            return
        if result.switched_kg is not None:
            self.kg = result.switched_kg
        cmd = analyze(line, partial=True).command
        if cmd is not None and cmd.writes:
            self.live.refresh()
        self.show(result)
        if self.settings.timing:
            self.env.out(self._timing(elapsed))

    def _attempt(self, line: str) -> Result | None:
        """Run `line`, reconnecting first when the connection is known lost; a command found
        unsent on a lost connection runs after reconnecting, never thrown away. None when the
        connection cannot be had back."""
        if self.disconnected and not self._reconnect():
            return None
        try:
            return self._call(line)
        except NotSent:
            if not isinstance(self.backend, Reconnecting) or not self._reconnect():
                return None
            return self._call(line)

    def _timing(self, elapsed: float) -> str:
        server_ms = self.backend.server_time_ms if isinstance(self.backend, Timed) else None
        if server_ms is not None:
            return f"Time: {server_ms} ms (server)\n"
        return f"Time: {elapsed * 1000:.3f} ms\n"

    def _shell_command(self, inv: Invocation) -> None:
        if is_setting(inv):
            self.env.out(self.settings.apply(inv) + "\n")
        else:
            self._read(str(inv.args["file"]))

    def _read(self, path: str) -> None:
        """`.read FILE`: the file's lines as a script (stop at the first error, errors as
        `<file>:<line>: error:`), then back to the prompt."""
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            self.error(f"cannot read {path}: {exc.strerror or exc}")
            return
        with self.lock:
            run_script(self.backend, LineQueue(decode_lines(data, path)), self.env, fmt=self.fmt,
                       on_error="stop", single_transaction=False)
        who = self._whoami()
        self.kg = who.get("knowledge_graph", self.kg)
        self.live.refresh()

    def _reconnect(self) -> bool:
        if isinstance(self.backend, Reconnecting):
            try:
                with self.lock:
                    self.backend.reconnect()
            except TargetUnreachable as exc:
                self.error(f"still unreachable: {exc}")
                return False
            except AuthError as exc:
                raise _Leave(ExitStatus.ERROR, f"authentication failed: {exc.message}") from None
            except SessionEnded as exc:
                raise _Leave(ExitStatus.ERROR, exc.message) from None
            self.env.out("Reconnected.\n")
            self.live.refresh()
        self.disconnected = False
        return True

    # --- hidden password prompts -----------------------------------------------------------

    def _with_password(self, line: str, inv: Invocation) -> str | None:
        """The line with a left-out password asked for and inserted (quoted), or None when it
        must not run. A password that is the history mask (a recalled redacted line) counts as
        left out: running it would set the password to `********`. What can fail without the
        password is checked first (the user exists, the name is no role word): fail, then ask."""
        cmd = inv.command
        secret = next((p for p in cmd.params if p.kind.secret), None)
        if secret is None or inv.args.get(secret.name) not in (None, MASK):
            return line
        parts = analyze(line).parts
        given = next((p for p in parts if p.role is Role.ARGUMENT and p.name == secret.name), None)
        without = line if given is None else line[:given.start] + line[given.end:]
        if not self._fails_only_for_password(cmd, parts, without):
            return None
        first = self.env.getpass("Password: ")
        if self.env.getpass("Repeat password: ") != first:
            self.error("Passwords do not match")
            return None
        word = quote_word(first)
        if given is not None:                 # the mask of a recalled line
            return line[:given.start] + word + line[given.end:]
        # Insert after the last argument bound before the secret (or after the command words).
        before = {p.name for p in cmd.params[:cmd.params.index(secret)]}
        at = max(p.end for p in parts if p.role in (Role.COMMAND, Role.SUBCOMMAND)
                 or p.role is Role.ARGUMENT and p.name in before)
        return line[:at] + " " + word + line[at:]

    def _fails_only_for_password(self, cmd: Command, parts: list[Part], without: str) -> bool:
        """Ask the backend to run the line without its password: only `Password required` lets
        the prompt come. Any other answer is shown (an error, as it would be after the prompt)."""
        try:
            result = self._attempt(without)
        except SessionEnded:
            raise
        except CommandError as exc:
            if not exc.message.startswith(PASSWORD_REQUIRED):
                self.error(exc.message)
                return False
            values = [p.text for p in parts if p.role is Role.ARGUMENT and not p.secret]
            if len(values) == 1 and values[0].lower() in ROLES and any(p.kind.name == "role" for p in cmd.params):
                # `.user create editor`: a role where the name goes, not a user called `editor`
                self.error(f"'{printable(values[0])}' is a role, not a user name. Usage: {cmd.usage}")
                return False
            return True
        if result is not None:
            self.show(result)
        return False

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
        text = format_result(result, self.fmt, size.columns, self.settings.expanded)
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
    if output is None and not env.stdout_isatty:
        # stdout is a pipe (`| tee log`): results go there, the prompt to the terminal on stderr.
        from prompt_toolkit.output import create_output
        output = create_output(always_prefer_tty=True)
        return Shell(backend, env, config, fmt=fmt, input=input, output=output, greeting=True).run()
    return Shell(backend, env, config, fmt=fmt, input=input, output=output, greeting=output is None).run()
