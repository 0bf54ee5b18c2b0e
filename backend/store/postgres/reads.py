"""The read side of the PostgreSQL store: snapshots on pooled connections, and the node's cache.

A read-only command runs in one REPEATABLE READ READ ONLY transaction on a pooled connection, and
the rows it reads are cached for the `generation` counter its snapshot reads: every commit that
changes a row bumps it, so a row cached for the generation a snapshot sees is the row itself.

On a server node that hears every change (view.py), `consistent(fn)` serves fn's reads from that
cache without a snapshot, opening one only when a row is missing. If the snapshot then shows a
commit the node has not heard of yet, and fn already read a cached row, fn runs again on the
snapshot alone: one command never mixes rows of two generations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from ...errors import StoreError
from ..cached import CACHED, CachedReads, StaleView
from .view import NodeView, RowCache

# How long a read waits for a pooled connection: reads take milliseconds, so a longer wait means
# the database is unreachable, and the command must fail well within scaleout.md's 10 s.
POOL_WAIT_SECS = 4.0


class _Snapshot:
    __slots__ = ("_cached", "_entered", "_store")

    def __init__(self, store: Snapshots, cached: bool = False):
        self._store = store
        self._cached = cached

    def __enter__(self) -> None:
        self._entered = self._store._enter_read(self._cached)

    @property
    def nested(self) -> bool:
        """Inside another read (or the writer's transaction), whose view this one shares."""
        return self._entered is None

    def __exit__(self, exc_type, exc, _tb) -> None:
        if self._entered is not None:
            try:
                self._store._exit_read()
            except psycopg.Error as failed:
                exc = exc or failed
        if isinstance(exc, psycopg.Error):
            raise self._store._fault("cannot read the store", exc) from None


class Snapshots(CachedReads):
    """read() and the caches; PgBase sets these attributes up."""
    _pool: ConnectionPool
    _tls: threading.local
    _owner: int | None
    _closed: bool
    _reading: int
    _read_done: threading.Condition
    _fault: Callable[[str, BaseException], StoreError]
    view: NodeView

    def read(self, cached: bool = False) -> _Snapshot:
        """A consistent snapshot for a read-only command, on a pooled connection; `cached`:
        from the node's cache while it is trusted (only through consistent())."""
        return _Snapshot(self, cached)

    def _enter_read(self, cached: bool) -> psycopg.Connection | str | None:
        tls = self._tls
        if self._owner == threading.get_ident() or getattr(tls, "conn", None) is not None:
            return None
        with self._read_done:
            if self._closed:
                raise StoreError("the store is closed")
            self._reading += 1
        cache = self.view.trusted() if cached else None
        if cache is not None:
            tls.cache, tls.cached_generation, tls.served, tls.conn = cache.rows, cache.generation, False, CACHED
            return CACHED
        try:
            reader, rows = self._snapshot()
        except BaseException as exc:
            self._read_finished()
            if isinstance(exc, psycopg.Error):   # psycopg_pool.PoolTimeout is one too
                raise self._fault("cannot read the store", exc) from None
            raise
        tls.cache, tls.cached_generation, tls.conn = rows.rows, None, reader
        return reader

    def _leave_cache(self) -> psycopg.Connection:
        """A row the cache lacks: this read takes its snapshot now (errors as in read())."""
        tls = self._tls
        reader, cache = self._snapshot()
        tls.conn = reader
        if tls.cached_generation != cache.generation:
            if tls.served:
                raise StaleView()
            tls.cache = cache.rows
        return reader

    def _snapshot(self) -> tuple[psycopg.Connection, RowCache]:
        """A pooled connection in a snapshot, and the cache for the generation it sees."""
        epoch = self.view.epoch             # before the snapshot: see NodeView.cache_for
        reader, generation = self._snapshot_connection()
        return reader, self.view.cache_for(generation, epoch)

    def _snapshot_connection(self) -> tuple[psycopg.Connection, int]:
        """A pooled connection in a snapshot, and the generation it sees, in one round trip. A
        pooled connection the server has dropped (a restart) is only found dead when used: then
        the pool replaces its dead ones and one more is tried."""
        for attempt in (1, 2):
            reader = self._pool.getconn(timeout=POOL_WAIT_SECS)
            try:
                with reader.pipeline():
                    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    cursor = reader.execute("SELECT n FROM generation")
                row = cursor.fetchone()
                if row is not None:
                    return reader, row[0]
                self._pool.putconn(reader)
                raise StoreError("the store is damaged: no generation row")
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

    def _exit_read(self) -> None:
        reader, self._tls.conn = self._tls.conn, None        # a cached read may have taken a snapshot
        if reader is CACHED:
            self._read_finished()
            return
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
