"""What the shell may ask of a target: the `Backend` every target is, and the capabilities only
some have. Each capability is its own Protocol, apart from Backend, so that the shell tests a
backend for one with isinstance (checking just that capability's members) and is type-checked
against it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ..result import Result


@runtime_checkable
class Backend(Protocol):
    """One target, local or remote: log in once, then execute lines."""

    @property
    def target(self) -> str:
        """`local` or `host:port`: the prompt shows it."""
        ...

    def login(self, username: str, password: str) -> None: ...
    def authenticate(self, api_key: str) -> None: ...
    def execute(self, line: str) -> Result: ...
    def close(self) -> None: ...


@runtime_checkable
class Batching(Protocol):
    """A target that runs a script's lines in batches (the local engine): it hashes the
    passwords of lines ahead, and commits a batch of lines at once (or, atomic, all or none)."""

    def prepare(self, lines: list[str]) -> None: ...
    def discard_prepared(self) -> None: ...
    def begin_batch(self, *, atomic: bool = False) -> None: ...
    def end_batch(self, commit: bool) -> None: ...


@runtime_checkable
class Atomic(Protocol):
    """A target that runs several lines as one transaction: all of them, or none when one
    fails (its error then starts `line <n>: `). `note` joins the audit source of each change."""

    def run_atomic(self, lines: list[str], *, note: str = "") -> list[Result]: ...


@runtime_checkable
class QuietLogin(Protocol):
    """A target whose login can wait to be recorded until the session first changes something
    (the local engine; a server records every login): an apply with nothing to do writes
    nothing."""

    record_login: bool


@runtime_checkable
class Reconnecting(Protocol):
    """A target behind a connection that may drop (a server): reconnect() logs in again with
    the same credentials, unless the server ended the session (SessionEnded)."""

    def reconnect(self) -> None: ...


@runtime_checkable
class Watching(Protocol):
    """A target whose connection may end while the shell is idle (a server): the listener is
    told at once, from another thread, with the message and whether the server ended the
    session (True: never log in again) or the connection was lost (False: reconnect)."""

    def watch(self, listener: Callable[[str, bool], None]) -> None: ...


@runtime_checkable
class Timed(Protocol):
    """A target that reports how long its last command took on its side (execution_time_ms)."""

    server_time_ms: int | None


@runtime_checkable
class Bootstrapping(Protocol):
    """A target that may have just created its data directory (the local engine): its new
    admin may then be used without a password, as cli.md's credential order says."""

    bootstrapped: bool

    def use_bootstrap_admin(self) -> None: ...
