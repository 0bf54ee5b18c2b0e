"""write() and batches, the same on both stores: one change atomically, and a transaction that
every following write() joins."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class _Change:
    """write(): a class rather than a generator-based context manager, as it runs once for
    every change."""
    __slots__ = ("_savepoint", "_store")

    def __init__(self, store: Batches):
        self._store = store

    def __enter__(self) -> None:
        self._savepoint = self._store._enter_write()

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        self._store._exit_write(self._savepoint, exc)


class Batches:
    """The store's transaction classes set these up: _enter_write takes the write lock and opens
    the change's transaction or savepoint, returning what _exit_write (given the exception that
    ended the change, if any) needs to end it."""
    _lock: threading.RLock
    _depth: int                      # nesting of write()/batch() on the writer
    _owner: int | None               # the thread inside write()/batch()
    _atomic: bool
    _begin: Callable[[], None]
    _commit: Callable[[], None]
    _rollback: Callable[[], None]
    _enter_write: Callable[[], Any]
    _end_savepoint: Callable[[Any, bool], None]   # release it, or roll back to it when the change failed

    def _exit_write(self, savepoint: Any, exc: BaseException | None) -> None:
        """End the change write() began: its savepoint, or its transaction (committed unless
        `exc`); inside an atomic batch, nothing until end_batch()."""
        failed = exc is not None
        try:
            if self._atomic:
                if failed:
                    self._atomic_change_failed()
                return
            if savepoint is not None:
                self._depth -= 1
                self._end_savepoint(savepoint, failed)
                return
            self._depth, self._owner = 0, None
            if failed:
                self._rollback()
            else:
                self._commit()
        finally:
            self._lock.release()

    def _atomic_change_failed(self) -> None:
        """A change inside an atomic batch failed (the batch must then not commit): a store
        that cannot tell otherwise notes it here."""

    def write(self) -> _Change:
        """One change, atomically: a transaction, or a savepoint inside an open batch (a context
        manager)."""
        return _Change(self)

    def begin_batch(self, *, atomic: bool = False) -> None:
        """Start a transaction that every following write() joins. Each write is a savepoint
        (a failure undoes only itself), unless `atomic`: then any failure must end the batch
        with end_batch(False) (--single-transaction)."""
        with self._lock:
            self._begin()
            self._depth, self._owner = 1, threading.get_ident()
            self._atomic = atomic

    def end_batch(self, commit: bool) -> None:
        with self._lock:
            self._depth, self._owner = 0, None
            self._atomic = False
            if commit:
                self._commit()
            else:
                self._rollback()

    @property
    def in_batch(self) -> bool:
        return self._depth > 0
