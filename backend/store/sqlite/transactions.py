"""Transactions on the SQLite store: one change (write), a snapshot (read), and batches.

A change is BEGIN IMMEDIATE, or a savepoint when a batch is open; a snapshot runs on the
thread's own reading connection, so reads never queue behind the write lock.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from typing import Any

from ...errors import StoreError
from ..batches import Batches
from ..cached import CachedReads
from ..interface import head_mac
from .connection import Connection


class _Snapshot:
    """SQLiteStore.read(): a class rather than a generator, as it runs once for every read command."""
    __slots__ = ("_entered", "_store")

    def __init__(self, store: Transactions):
        self._store = store

    def __enter__(self) -> None:
        self._entered = self._store._enter_read()

    def __exit__(self, *_: object) -> None:
        if self._entered is not None:
            self._store._exit_read(self._entered)

    @property
    def nested(self) -> bool:
        """Inside another read (or this thread's write), whose snapshot this one shares."""
        return self._entered is None


class Transactions(CachedReads, Batches, Connection):
    def _enter_write(self) -> tuple[Any, ...] | None:
        """Take the write lock and open this change's transaction or savepoint. Returns what
        _exit_write needs to undo it: None for a top-level transaction or an atomic batch's
        member, else the savepoint's name and the audit head to restore."""
        self._lock.acquire()
        try:
            if getattr(self._tls, "conn", None) is not None:
                raise RuntimeError("write() inside read(): a reader connection cannot write")
            if self._atomic:
                return None              # a failure rolls the whole batch back: no savepoint needed
            if self._depth:
                name = f"sp{self._depth}"
                self._main.execute(f"SAVEPOINT {name}")
                self._depth += 1
                return name, self._audit_head, self._head_unsaved
            self._begin()
            self._depth, self._owner = 1, threading.get_ident()
            return None
        except BaseException:
            self._lock.release()
            raise

    def _end_savepoint(self, savepoint: tuple[Any, ...], failed: bool) -> None:
        name, *head = savepoint
        if failed:
            self._main.execute(f"ROLLBACK TO {name}")
            self._cache.clear()
            self._audit_head, self._head_unsaved = head    # its appends are undone too
        self._main.execute(f"RELEASE {name}")

    def read(self, cached: bool = False) -> _Snapshot:
        """A consistent snapshot for a read-only command (a context manager). Readers use
        connections of their own (WAL lets them run beside the writer), so reads never queue
        behind the write lock. `cached` changes nothing here: asking SQLite whether anything was
        committed since (PRAGMA data_version) measured as dear as taking the snapshot."""
        return _Snapshot(self)

    def _enter_read(self) -> tuple[sqlite3.Connection, threading.Lock] | None:
        """Begin this thread's read; None when nested in its own write or read."""
        tls = self._tls
        if self._owner == threading.get_ident() or getattr(tls, "conn", None) is not None:
            return None
        if getattr(tls, "reader", None) is None:
            tls.reader = self._open_reader()
        reader, in_use = tls.reader
        in_use.acquire()
        try:
            if self._closed:
                raise StoreError("the store is closed")
            try:
                reader.execute("BEGIN")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"cannot read the store: {exc}") from None
            tls.conn = reader
            # A commit that changes rows also stamps `rows_gen`: an unchanged stamp, read in
            # this very snapshot, means the rows this reader cached are still exact.
            stamp = reader.execute("SELECT data FROM meta WHERE name = 'rows_gen'").fetchone()
            if stamp != tls.seen_stamp:
                tls.cache, tls.seen_stamp = {}, stamp
        except BaseException:
            self._exit_read((reader, in_use))
            raise
        return reader, in_use

    def _exit_read(self, entered: tuple[sqlite3.Connection, threading.Lock]) -> None:
        reader, in_use = entered
        began, self._tls.conn = self._tls.conn is reader, None
        try:
            if began:
                reader.execute("COMMIT")
        finally:
            in_use.release()

    def _forget(self) -> None:
        self._deferred.clear()
        self._cache.clear()
        self._audit_head = None
        self._head_unsaved = False
        self._changed = set()

    def _begin(self) -> None:
        self._forget()
        try:
            self._main.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot write to the store: {exc}") from None

    def _commit(self) -> None:
        try:
            self._run_deferred()
            if self._head_unsaved:
                head = self._audit_head
                assert head is not None     # set by the append that left it unsaved
                self._set_meta("audit_head", {**head, "mac": head_mac(self._audit_mac, head["seq"], head["hash"])})
            if self._changed:
                self._set_meta("rows_gen", {"stamp": secrets.token_hex(8)})
            self._forget()
            self._main.execute("COMMIT")
        except sqlite3.DatabaseError as exc:    # a deferred write's failure is met here too
            self._rollback()
            raise StoreError(f"cannot write to the store: {exc}") from None

    def _rollback(self) -> None:
        self._forget()
        if self.conn.in_transaction:
            self._main.execute("ROLLBACK")
