"""The read side of the PostgreSQL store: snapshots on pooled connections.

A read-only command runs in one REPEATABLE READ READ ONLY transaction on a pooled connection. A
reader caches rows for as long as the `generation` counter, read in its own snapshot, stands
still: every commit that changes a row bumps it, so a cached row is never one a commit changed (the caches: ../tables.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from ...errors import StoreError

# How long a read waits for a pooled connection: reads take milliseconds, so a longer wait means
# the database is unreachable, and the command must fail well within scaleout.md's 10 s.
POOL_WAIT_SECS = 4.0


class _Snapshot:
    __slots__ = ("_entered", "_store")

    def __init__(self, store: Snapshots):
        self._store = store

    def __enter__(self) -> None:
        self._entered = self._store._enter_read()

    def __exit__(self, exc_type, exc, _tb) -> None:
        if self._entered is not None:
            try:
                self._store._exit_read(self._entered)
            except psycopg.Error as failed:
                exc = exc or failed
        if isinstance(exc, psycopg.Error):
            raise self._store._fault("cannot read the store", exc) from None


class Snapshots:
    """read() and the caches; PgBase sets these attributes up."""
    _pool: ConnectionPool
    _tls: threading.local
    _owner: int | None
    _closed: bool
    _reading: int
    _read_done: threading.Condition
    _fault: Callable[[str, BaseException], StoreError]

    def read(self) -> _Snapshot:
        """A consistent snapshot for a read-only command, on a pooled connection."""
        return _Snapshot(self)

    def _enter_read(self) -> psycopg.Connection | None:
        tls = self._tls
        if self._owner == threading.get_ident() or getattr(tls, "conn", None) is not None:
            return None
        with self._read_done:
            if self._closed:
                raise StoreError("the store is closed")
            self._reading += 1
        try:
            reader = self._snapshot_connection()
        except BaseException as exc:
            self._read_finished()
            if isinstance(exc, psycopg.Error):   # psycopg_pool.PoolTimeout is one too
                raise self._fault("cannot read the store", exc) from None
            raise
        try:
            stamp = reader.execute("SELECT n FROM generation").fetchone()
            if stamp != getattr(tls, "seen_stamp", None):
                tls.cache, tls.seen_stamp = {}, stamp
        except BaseException as exc:
            self._pool.putconn(reader)
            self._read_finished()
            if isinstance(exc, psycopg.Error):
                raise self._fault("cannot read the store", exc) from None
            raise
        tls.conn = reader
        return reader

    def _snapshot_connection(self) -> psycopg.Connection:
        """A pooled connection in a snapshot. A pooled connection the server has dropped (a
        restart) is only found dead when used: then the pool replaces its dead ones and one more
        is tried."""
        for attempt in (1, 2):
            reader = self._pool.getconn(timeout=POOL_WAIT_SECS)
            try:
                reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return reader
            except psycopg.Error as exc:
                lost = connection_lost(exc, reader)
                if lost:
                    reader.close()              # the pool discards a closed connection
                self._pool.putconn(reader)
                if attempt == 2 or not lost:
                    raise
                self._pool.check()              # its other idle connections may be gone as well
        raise AssertionError("unreachable")

    def _read_finished(self) -> None:
        with self._read_done:
            self._reading -= 1
            self._read_done.notify_all()

    def _exit_read(self, reader: psycopg.Connection) -> None:
        self._tls.conn = None
        try:
            if reader.info.transaction_status != pq.TransactionStatus.IDLE:
                reader.execute("COMMIT")
        finally:
            self._pool.putconn(reader)
            self._read_finished()


def connection_lost(exc: psycopg.Error, conn: psycopg.Connection) -> bool:
    """Whether `exc` says the connection is gone (a restart, a terminated backend, the network),
    as opposed to a statement's own failure."""
    if conn.closed or conn.broken or exc.sqlstate is None:
        return True
    return isinstance(exc, (psycopg.errors.AdminShutdown, psycopg.errors.CrashShutdown,
                            psycopg.errors.CannotConnectNow))


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the server cannot be reached or is going away (connection failures,
    shutdowns, a pool that found no connection in time), not that a statement failed."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    return exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P"))
