"""The outside world of one shell run, injected so tests can fake terminals and variables."""

from __future__ import annotations

import enum
import io
import os
import sys
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Mapping, TextIO


class ExitStatus(enum.IntEnum):
    OK = 0
    SOME_FAILED = 1        # a command failed under --on-error continue
    ERROR = 2              # usage, unreadable file, unreachable target, login, store
    STOPPED = 3            # stopped at a failed command (--on-error stop, or -1)


def _getpass(prompt: str) -> str:
    import getpass
    return getpass.getpass(prompt)


@dataclass
class Environment:
    stdin: BinaryIO = field(default_factory=lambda: sys.stdin.buffer)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin_isatty: bool = field(default_factory=lambda: sys.stdin.isatty())
    stdout_isatty: bool = field(default_factory=lambda: sys.stdout.isatty())
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    getpass: Callable[[str], str] = _getpass

    @property
    def colour(self) -> bool:
        return self.stdout_isatty and "NO_COLOR" not in self.env

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
