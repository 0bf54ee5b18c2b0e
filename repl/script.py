"""Script mode: run lines from -c, -f and stdin in order, report errors as source:line.

On a local target, commands that are already waiting are committed in groups: one transaction
(one fsync) for the group, a savepoint per command so a failure undoes only itself, and each
command's output printed only after the commit that made it durable.
"""

from __future__ import annotations

import itertools
import os
import select
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from backend.errors import CommandError, SessionEnded, StoreError, StoreFailure
from backend.language.parser import redact
from backend.language.registry import COMMANDS, Command, find_command
from backend.targets.protocols import Backend, Batching

from .environment import Environment, ExitStatus
from .output import printable, render, render_json_error
from .password_source import resolve_password_source

COMMENT_PREFIXES = ("#", "//")
GROUP_MAX_COMMANDS = 500
GROUP_MAX_SECONDS = 0.1     # bounds how long a group holds the store's write lock
PREPARE_AHEAD = 1000        # lines whose passwords may be hashed before their turn


class Line(NamedTuple):
    source: str     # file name, `<stdin>` or `-c`
    number: int
    text: str


def is_skipped(text: str) -> bool:
    stripped = text.strip()
    return not stripped or stripped.startswith(COMMENT_PREFIXES)


_QUIT = find_command("quit")
assert _QUIT is not None
QUIT_WORDS = {"." + " ".join(words) for words in (_QUIT.words, *_QUIT.aliases)}
# `exit`, `\q`, `help`...: the interactive prompt takes them; elsewhere they are errors with a hint.
BARE_WORDS = {word: cmd for cmd in COMMANDS for word in cmd.bare}
BARE_HINT = "use .quit / .help"


def bare_command(text: str) -> Command | None:
    """The command a bare word at the prompt stands for (`exit` -> .quit), or None."""
    return BARE_WORDS.get(text.strip().lower())


def is_quit(text: str) -> bool:
    return text.strip().lower() in QUIT_WORDS


BOM = "\ufeff"     # what editors on Windows put first in a UTF-8 file


def decode_lines(data: bytes, source: str) -> Iterator[Line]:
    # Bytes that are not UTF-8 become U+FFFD: the line then fails cleanly instead of the run.
    text = data.decode("utf-8", errors="replace").removeprefix(BOM)
    for number, raw in enumerate(text.splitlines(), 1):
        yield Line(source, number, raw)


class LineQueue:
    """Lines to run, with a look at whether more are already waiting (so a group never waits
    for input that a coprocess will only send after reading our answer)."""

    def __init__(self, lines: Iterable[Line] | None = None, stream=None, source: str = "<stdin>"):
        self._pending: deque[Line] = deque(lines or ())
        self.taken = 0                   # lines handed out by next() so far
        self._stream = stream
        self._source = source
        self._partial = b""
        self._number = 0
        self._eof = stream is None
        self._fd = None
        if stream is not None:
            try:
                self._fd = stream.fileno()
            except (AttributeError, OSError, ValueError):
                self._fd = None          # an in-memory stream: read it whole
                self._take(stream.read(), final=True)

    def _take(self, data: bytes, final: bool) -> None:
        data = self._partial + data
        parts = data.split(b"\n")
        self._partial = b"" if final else parts.pop()
        if final and parts and parts[-1] == b"":
            parts.pop()
        for raw in parts:
            self._number += 1
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            self._pending.append(Line(self._source, self._number,
                                      text.removeprefix(BOM) if self._number == 1 else text))
        if final:
            self._eof = True

    def _read(self, block: bool) -> None:
        if self._eof or self._fd is None:
            return
        if not block and not select.select([self._fd], [], [], 0)[0]:
            return
        chunk = os.read(self._fd, 1 << 16)
        self._take(chunk, final=not chunk)

    @property
    def streaming(self) -> bool:
        """Whether the lines come from a stream (stdin) rather than -c and -f."""
        return self._stream is not None

    def next_text(self) -> str | None:
        line = self.next()
        return None if line is None else line.text

    def next(self) -> Line | None:
        while not self._pending and not self._eof:
            self._read(block=True)
        if not self._pending:
            return None
        self.taken += 1
        return self._pending.popleft()

    def waiting(self) -> bool:
        """True when another line can be had without blocking."""
        if not self._pending:
            self._read(block=False)
        return bool(self._pending)

    def lookahead(self, skip: int, count: int) -> list[Line]:
        """Up to `count` waiting lines, after the first `skip` of them."""
        self._read(block=False)
        return list(itertools.islice(self._pending, skip, skip + count))


def run_script(backend: Backend, lines: LineQueue, env: Environment, *, fmt: str, on_error: str,
               single_transaction: bool, max_transaction_secs: float = 60,
               clock: Callable[[], float] = time.monotonic, echo: bool = False, quiet: bool = False) -> ExitStatus:
    """`max_transaction_secs`: how long a -1 run may hold the store's write lock. `echo` prints
    each line (its secrets masked) before its result; `quiet` drops results that only report an
    action."""
    runner = _Runner(backend, env, fmt, stop_on_error=on_error == "stop", clock=clock, echo=echo, quiet=quiet)
    runner.password_line = lines.next_text if lines.streaming else env.stdin_line
    if not isinstance(backend, Batching):
        if single_transaction:
            raise ValueError("a single transaction needs a target that runs batches")
        return runner.one_by_one(lines)
    try:
        if single_transaction:
            return runner.all_or_nothing(backend, lines, max_transaction_secs)
        return runner.grouped(backend, lines)
    except StoreError as exc:
        env.err(f"error: {exc}; nothing more was run\n")
        return ExitStatus.ERROR
    finally:
        backend.discard_prepared()


class _Runner:
    def __init__(self, backend: Backend, env: Environment, fmt: str, stop_on_error: bool,
                 clock: Callable[[], float], *, echo: bool = False, quiet: bool = False):
        self.backend = backend
        self.echo = echo
        self.quiet = quiet
        # Where `password=-` reads from: the next line of the script when stdin is the script.
        self.password_line: Callable[[], str | None] = env.stdin_line
        self.env = env
        self.fmt = fmt
        self.stop_on_error = stop_on_error
        self.clock = clock
        self.failed = False
        self.store_failed = False       # the store itself failed: stop, exit status 2
        self._prepare = backend.prepare if isinstance(backend, Batching) else None
        self._prepared_through = 0

    def _next(self, lines: LineQueue, *, block: bool = True) -> Line | None:
        """The next line to run, skipping comments; passwords of lines ahead start hashing.
        Not `block`ing: None when no line is waiting (a group must not wait for input)."""
        while True:
            if not block and not lines.waiting():
                return None
            line = lines.next()
            if line is None:
                return None
            if self._prepare is not None:
                self._prepare_ahead(self._prepare, line, lines)
            if not is_skipped(line.text):
                return line

    def _prepare_ahead(self, prepare: Callable[[list[str]], None], line: Line, lines: LineQueue) -> None:
        """Hand lines to prepare() in chunks: the current one if it was not yet, and the waiting
        ones once fewer than half a chunk of prepared lines remain ahead."""
        batch = []
        if self._prepared_through < lines.taken:        # indices below _prepared_through are done
            batch.append(line)
            self._prepared_through = lines.taken
        ahead = self._prepared_through - lines.taken    # prepared lines still waiting
        if ahead < PREPARE_AHEAD // 2:
            more = lines.lookahead(ahead, PREPARE_AHEAD)
            batch += more
            self._prepared_through += len(more)
        if batch:
            prepare([line.text for line in batch])

    def _run(self, line: Line) -> tuple[list[tuple[str, str]], bool]:
        """Execute one line: (what to print, as (stream, text) pairs; whether the run must stop)."""
        shown: list[tuple[str, str]] = []
        if self.echo:     # on stderr in csv and json, which programs read from stdout
            shown.append(("err" if self.fmt in ("csv", "json") else "out", printable(redact(line.text)) + "\n"))
        try:
            result = self.backend.execute(resolve_password_source(line.text, self.password_line))
        except CommandError as exc:
            self.failed = True
            self.store_failed = isinstance(exc, StoreFailure)
            stop = self.stop_on_error or isinstance(exc, (SessionEnded, StoreFailure))
            message = exc.message
            if bare_command(line.text) is not None:
                message += f" ({BARE_HINT})"
            return shown + error_report(line, message, self.fmt), stop
        if self.quiet and result.is_message:
            return shown, False
        return [*shown, ("out", render(result, self.fmt))], False

    def _print(self, reports: list[tuple[str, str]]) -> None:
        """Write what a group printed, in order, with one write per run of the same stream."""
        run_stream: str | None = None
        run_text: list[str] = []
        for stream, text in reports + [("", "")]:
            if stream != run_stream and run_text:
                (self.env.out if run_stream == "out" else self.env.err)("".join(run_text))
                run_text = []
            run_stream = stream
            run_text.append(text)

    def _status(self, stopped: bool) -> ExitStatus:
        if self.store_failed:
            return ExitStatus.ERROR
        if stopped:
            return ExitStatus.STOPPED
        return ExitStatus.SOME_FAILED if self.failed else ExitStatus.OK

    def one_by_one(self, lines: LineQueue) -> ExitStatus:
        while (line := self._next(lines)) is not None:
            if is_quit(line.text):
                break
            report, stop = self._run(line)
            self._print(report)
            if stop:
                return self._status(True)
        return self._status(False)

    def grouped(self, batching: Batching, lines: LineQueue) -> ExitStatus:
        while True:
            line = self._next(lines)
            if line is None or is_quit(line.text):
                return self._status(False)
            reports: list[tuple[str, str]] = []
            commands = 0
            stop = quit_after = False
            started = self.clock()
            batching.begin_batch()
            try:
                while True:
                    report, stop = self._run(line)
                    reports += report
                    commands += 1
                    if stop or commands >= GROUP_MAX_COMMANDS or self.clock() - started > GROUP_MAX_SECONDS:
                        break
                    line = self._next(lines, block=False)
                    if line is None:
                        break
                    if is_quit(line.text):
                        quit_after = True
                        break
            except BaseException:
                batching.end_batch(False)
                raise
            try:
                batching.end_batch(True)
            except StoreError as exc:
                self.env.err(f"error: {exc}; the last {commands} command(s) were not applied\n")
                return ExitStatus.ERROR
            self._print(reports)
            if stop or quit_after:
                return self._status(stop)

    def all_or_nothing(self, batching: Batching, lines: LineQueue, max_secs: float) -> ExitStatus:
        # The whole script is read (to its end or a quit line) before the write lock is taken:
        # a slow or open stdin must not keep the store from other shells and the server.
        script = []
        while (line := self._next(lines)) is not None and not is_quit(line.text):
            script.append(line)
        started = self.clock()
        batching.begin_batch(atomic=True)
        committed = False
        try:
            reports: list[tuple[str, str]] = []
            for line in script:
                report, _ = self._run(line)
                if self.failed:
                    rolled_back = "error: the whole transaction was rolled back; nothing was changed\n"
                    self._print([*report, ("err", rolled_back)])
                    return self._status(True)
                reports += report
                if self.clock() - started > max_secs:
                    self.env.err(f"{line.source}:{line.number}: error: the transaction held the store's write lock "
                                 f"longer than {max_secs:g} s (shell.max_transaction_secs) and was rolled back; "
                                 "nothing was changed\n")
                    return ExitStatus.STOPPED
            batching.end_batch(True)
            committed = True
            self._print(reports)
            return ExitStatus.OK
        except StoreError as exc:
            self.env.err(f"error: {exc}; nothing was changed\n")
            return ExitStatus.ERROR
        finally:
            if not committed:
                try:
                    batching.end_batch(False)
                except StoreError:
                    pass


def error_report(line: Line, message: str, fmt: str) -> list[tuple[str, str]]:
    """An error goes to stderr as source:line; in json mode also to stdout as an object."""
    report = [("out", render_json_error(message, line.number))] if fmt == "json" else []
    return report + [("err", f"{line.source}:{line.number}: error: {printable(message)}\n")]
