"""The outside world of one shell run, injected so tests can fake terminals and variables."""

from __future__ import annotations

import enum
import io
import os
import sys
from collections.abc import Callable, Mapping
from typing import BinaryIO, TextIO


class ExitStatus(enum.IntEnum):
    OK = 0
    SOME_FAILED = 1        # a command failed under --on-error continue
    ERROR = 2              # usage, unreadable file, unreachable target, login, store
    STOPPED = 3            # stopped at a failed command (--on-error stop, or -1)


def _getpass(prompt: str) -> str:
    import getpass
    return getpass.getpass(prompt)


class Environment:
    """Streams, terminals and variables of this run; each defaults to the real one."""

    def __init__(self, *, stdin: BinaryIO | None = None, stdout: TextIO | None = None,
                 stderr: TextIO | None = None, stdin_isatty: bool | None = None,
                 stdout_isatty: bool | None = None, env: Mapping[str, str] | None = None,
                 getpass: Callable[[str], str] = _getpass):
        self.stdin = stdin if stdin is not None else sys.stdin.buffer
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.stdin_isatty = sys.stdin.isatty() if stdin_isatty is None else stdin_isatty
        self.stdout_isatty = sys.stdout.isatty() if stdout_isatty is None else stdout_isatty
        self.env = dict(os.environ) if env is None else env
        self.getpass = getpass

    @property
    def colour(self) -> bool:
        return self.stdout_isatty and "NO_COLOR" not in self.env

    @property
    def columns(self) -> int:
        """The terminal's width as shutil.get_terminal_size() finds it (COLUMNS, the terminal,
        else 80), without importing shutil: it loads bz2 and lzma, ~3 ms of every start-up."""
        try:
            columns = int(self.env.get("COLUMNS", ""))
        except ValueError:
            columns = 0
        if columns <= 0 and self.stdout_isatty:
            try:
                columns = os.get_terminal_size(self.stdout.fileno()).columns
            except (AttributeError, ValueError, OSError):
                columns = 0
        return columns if columns > 0 else 80

    def stdin_line(self) -> str | None:
        """One line of stdin without its line break, or None at its end."""
        raw = self.stdin.readline()
        return raw.decode("utf-8", errors="replace").rstrip("\r\n") if raw else None

    def out(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def err(self, text: str) -> None:
        # stdout first, so output and errors interleave in the order they happened.
        self.stdout.flush()
        self.stderr.write(text)
        self.stderr.flush()


def fake_environment(stdin: bytes = b"", env: Mapping[str, str] | None = None, tty: bool = False) -> Environment:
    """An environment for tests: in-memory streams, no real terminal."""
    return Environment(stdin=io.BytesIO(stdin), stdout=io.StringIO(), stderr=io.StringIO(),
                       stdin_isatty=tty, stdout_isatty=tty, env=dict(env or {}))
