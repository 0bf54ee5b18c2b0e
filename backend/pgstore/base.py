"""Connections and transactions of the PostgreSQL store.

One writing connection per process, shared by the server's threads under a lock, as with
SQLite. Every change transaction first takes a transaction-level advisory lock, so changes from
all nodes are serialized as SQLite's BEGIN IMMEDIATE serializes processes: a check and the change
it guards see the same rows, and the audit chain's one head is read and updated by one writer at
a time (seq has no gaps). A change that touched rows also bumps `generation` and sends NOTIFY in
its own transaction, so listeners hear of exactly what committed.

Reads run on pooled connections in REPEATABLE READ READ ONLY transactions: one snapshot a command.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from ..codec import Codec
from ..errors import StoreError
from ..store import GENESIS_HASH
from . import schema, serversecrets
from .url import CONNECT_TIMEOUT_SECS, connect_kwargs, redact_text, redact_url

NOTIFY_CHANNEL = "inputlayer_changes"
READER_CACHE_ROWS = 10_000      # bounds the memory of a reader's row cache
READERS_MAX = 8                 # pooled reading connections of one process
LOCK_TIMEOUT = "30s"
_UNKNOWN = object()             # not in a row cache (None there means: no such row)


class _Snapshot:
    __slots__ = ("_entered", "_store")

    def __init__(self, store: PgBase):
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


class _Change:
    __slots__ = ("_savepoint", "_store")

    def __init__(self, store: PgBase):
        self._store = store

    def __enter__(self) -> None:
        self._savepoint = self._store._enter_write()

    def __exit__(self, exc_type, exc, _tb) -> None:
        self._store._exit_write(self._savepoint, exc_type is not None)
        if isinstance(exc, psycopg.Error):
            raise self._store._fault("cannot write to the store", exc) from None


class PgBase:
    """Transactions, snapshots and row caches; the rows themselves are in PostgresStore."""

    def __init__(self, url: str, *, encryption_key: bytes | None = None,
                 secret_file: str | None = None):
        self.url = url
        self.shown_url = redact_url(url)
        self.codec = Codec(encryption_key)
        self.data_type = "bytea" if self.codec.encrypted else "text"
        self._lock = threading.RLock()
        self._depth = 0
        self._owner: int | None = None
        self._tls = threading.local()
        self._closed = False
        self._reading = 0                         # threads inside read(): close() waits for them
        self._read_done = threading.Condition()
        self._atomic = False
        self._cache: dict[tuple, Any] = {}
        self._audit_head: dict | None = None       # the chain's head after this transaction's appends
        self._head_unsaved = False
        self._changed: set[str] = set()            # tables changed: the NOTIFY payload
        self._failed = False                       # a statement failed inside an atomic batch
        self._savepoints: dict[str, tuple] = {}    # savepoint -> the audit head to restore
        try:
            self._kwargs = connect_kwargs(url)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        self._secrets = serversecrets.load(secret_file)
        fingerprint = serversecrets.fingerprint(self._secrets)
        self.secret = self._secrets["hmac"].encode()
        self._main = self._connect()
        try:
            self._prepare_schema(fingerprint)
            self._pool = ConnectionPool(url, min_size=1, max_size=READERS_MAX, kwargs=self._reader_kwargs(),
                                        configure=self._configure_reader, open=True, name="inputlayer-readers",
                                        timeout=CONNECT_TIMEOUT_SECS)
        except BaseException:
            self._main.close()
            raise

    @property
    def token_secret(self) -> bytes:
        return self._secrets["token"].encode()

    # --- connections ---------------------------------------------------------------------

    def _fault(self, doing: str, exc: BaseException) -> StoreError:
        """A driver error as one line, with no password in it."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreError(f"{doing}: {redact_text(text, self.url)}")

    def _reader_kwargs(self) -> dict:
        return {**self._kwargs, "autocommit": True,
                "options": f"-c search_path={schema.NAMESPACE} -c default_transaction_read_only=on"}

    @staticmethod
    def _configure_reader(conn: psycopg.Connection) -> None:
        conn.prepare_threshold = 0       # every read statement repeats: prepare it at once

    def _connect(self) -> psycopg.Connection:
        try:
            # lock_timeout: a change waits for another node's at most as long as SQLite's busy timeout.
            conn = psycopg.connect(self.url, autocommit=True, **self._kwargs,
                                   options=f"-c search_path={schema.NAMESPACE} -c lock_timeout={LOCK_TIMEOUT}")
        except psycopg.Error as exc:
            raise self._fault(f"cannot open the store {self.shown_url}", exc) from None
        conn.prepare_threshold = 0
        return conn

    def _prepare_schema(self, fingerprint: str) -> None:
        try:
            if not self._schema_exists():
                self._create_schema(fingerprint)
            self._check_schema(fingerprint)
        except psycopg.Error as exc:
            raise self._fault(f"cannot open the store {self.shown_url}", exc) from None

    def _schema_exists(self) -> bool:
        # A catalog query, not to_regclass(): that one may answer from a catalog snapshot taken
        # before the advisory lock was granted, missing the tables another node just created.
        row = self._main.execute("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = 'meta'",
                                 (schema.NAMESPACE,)).fetchone()
        return row is not None

    def _create_schema(self, fingerprint: str) -> None:
        with self._main.transaction():
            self._main.execute("SELECT pg_advisory_xact_lock(%s)", (schema.LOCK_KEY,))
            if self._schema_exists():       # another node created it while this one waited
                return
            if self._main.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                  (schema.NAMESPACE,)).fetchone():
                raise StoreError(f"cannot open the store: {self.shown_url} has a schema "
                                 f"'{schema.NAMESPACE}' that is not an InputLayer store")
            for statement in schema.ddl(self.data_type):
                self._main.execute(statement)  # type: ignore[call-overload]  # fixed text, no input
            self._main.execute("INSERT INTO meta VALUES ('format', %s)", (self._plain(schema.format_record(self.codec)),))
            self._set_meta("secrets_fingerprint", {"sha256": fingerprint})
            self._set_meta("audit_head", {"seq": 0, "hash": GENESIS_HASH})

    def _check_schema(self, fingerprint: str) -> None:
        row = self._main.execute("SELECT data FROM meta WHERE name = 'format'").fetchone()
        if row is None:
            raise StoreError(f"cannot open the store: {self.shown_url} is damaged (no format record)")
        text = row[0] if isinstance(row[0], str) else bytes(row[0]).decode()
        schema.check_format(text, self.codec, self.shown_url)
        if self._meta("secrets_fingerprint")["sha256"] != fingerprint:
            raise StoreError("the server secrets file is not this store's: every node must use the same "
                             "INPUTLAYER_SERVER_SECRET_FILE")

    def _plain(self, text: str) -> str | bytes:
        """An unsealed value (the format record) in the type of the `data` columns."""
        return text.encode() if self.codec.encrypted else text

    @property
    def conn(self) -> psycopg.Connection:
        """This thread's connection: its reader inside read(), else the writer."""
        reader = getattr(self._tls, "conn", None)
        return reader if reader is not None else self._main

    def close(self) -> None:
        with self._lock:
            with self._read_done:
                self._closed = True
                self._read_done.wait_for(lambda: self._reading == 0)
            self._pool.close()
            self._main.close()

    # --- transactions --------------------------------------------------------------------

    def write(self) -> _Change:
        """One change, atomically: a transaction, or a savepoint inside an open batch."""
        return _Change(self)

    def _enter_write(self) -> str | None:
        self._lock.acquire()
        try:
            if getattr(self._tls, "conn", None) is not None:
                raise RuntimeError("write() inside read(): a reader connection cannot write")
            if self._atomic:
                return None
            if self._depth:
                name = f"sp{self._depth}"
                self._main.execute(f"SAVEPOINT {name}")  # type: ignore[call-overload]
                self._savepoints[name] = (self._audit_head, self._head_unsaved)
                self._depth += 1
                return name
            self._begin()
            self._depth, self._owner = 1, threading.get_ident()
            return None
        except psycopg.Error as exc:
            self._lock.release()
            raise self._fault("cannot write to the store", exc) from None
        except BaseException:
            self._lock.release()
            raise

    def _exit_write(self, savepoint: str | None, failed: bool) -> None:
        try:
            if self._atomic:
                self._failed = self._failed or failed
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

    def _end_savepoint(self, name: str, failed: bool) -> None:
        try:
            if failed:
                head = self._savepoints.pop(name)
                self._main.execute(f"ROLLBACK TO {name}")  # type: ignore[call-overload]
                self._cache.clear()
                self._audit_head, self._head_unsaved = head     # its appends are undone too
            else:
                self._savepoints.pop(name)
            self._main.execute(f"RELEASE {name}")  # type: ignore[call-overload]
        except psycopg.Error as exc:
            raise self._fault("cannot write to the store", exc) from None

    def begin_batch(self, *, atomic: bool = False) -> None:
        """A transaction every following write() joins: each write a savepoint, or, `atomic`,
        all or nothing (a failure must end the batch with end_batch(False))."""
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

    def _forget(self) -> None:
        """Drop what the writer knew of its transaction."""
        self._cache = {}
        self._audit_head = None
        self._head_unsaved = False
        self._changed = set()
        self._failed = False
        self._savepoints = {}

    def _begin(self) -> None:
        self._forget()
        if self._closed:
            raise StoreError("the store is closed")
        try:
            if self._main.broken or self._main.closed:
                self._main = self._connect()         # the server restarted, or the network dropped
            self._main.execute("BEGIN")
            self._main.execute("SELECT pg_advisory_xact_lock(%s)", (schema.LOCK_KEY,))
        except psycopg.Error as exc:
            self._rollback()
            raise self._fault("cannot write to the store", exc) from None

    def _commit(self) -> None:
        try:
            if self._failed or self._main.info.transaction_status == pq.TransactionStatus.INERROR:
                # PostgreSQL would answer COMMIT with a silent rollback: say so instead.
                raise StoreError("cannot write to the store: a change in this transaction failed; "
                                 "nothing was committed")
            if self._head_unsaved:
                self._set_meta("audit_head", self._audit_head)
            if self._changed:
                self._main.execute("UPDATE generation SET n = n + 1 WHERE id = 1")
                self._main.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, ",".join(sorted(self._changed))))
            self._main.execute("COMMIT")
            self._forget()
        except psycopg.Error as exc:
            self._rollback()
            raise self._fault("cannot write to the store", exc) from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        self._forget()
        try:
            if self._main.info.transaction_status != pq.TransactionStatus.IDLE:
                self._main.execute("ROLLBACK")
        except psycopg.Error:
            self._main.close()          # a broken connection: reopened at the next change

    # --- snapshots -----------------------------------------------------------------------

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
            reader = self._pool.getconn()
        except BaseException as exc:
            self._read_finished()
            if isinstance(exc, psycopg.Error):   # psycopg_pool.PoolTimeout is one too
                raise self._fault("cannot read the store", exc) from None
            raise
        try:
            reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            stamp = reader.execute("SELECT n FROM generation").fetchone()
            if stamp != getattr(tls, "seen_stamp", None):
                tls.cache, tls.seen_stamp = {}, stamp
        except BaseException:
            self._pool.putconn(reader)
            self._read_finished()
            raise
        tls.conn = reader
        return reader

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

    # --- caches and meta -----------------------------------------------------------------

    def _memo(self, key: tuple, load: Callable, *args, writer_too: bool):
        """`load(*args)`, remembered: by the writer within its transaction (only for lookups its
        own writes keep up to date), by a reader while no commit has changed a row."""
        if self._owner == threading.get_ident():
            if not writer_too:
                return load(*args)
            cache = self._cache
        elif getattr(self._tls, "conn", None) is not None:
            cache = self._tls.cache
            if len(cache) >= READER_CACHE_ROWS:
                cache.clear()
        else:
            return load(*args)
        value = cache.get(key, _UNKNOWN)
        if value is _UNKNOWN:
            value = cache[key] = load(*args)
        return value

    def _meta(self, name: str) -> dict:
        row = self.conn.execute("SELECT data FROM meta WHERE name = %s", (name,)).fetchone()
        if row is None:
            raise StoreError(f"the store is damaged: no {name} record")
        return self.codec.open("meta", name, self._stored(row[0]))

    def _set_meta(self, name: str, value: dict | None) -> None:
        self._main.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                           (name, self.codec.seal("meta", name, value or {})))

    def _stored(self, data):
        """A `data` value as the codec takes it: bytes when sealed, text when plain."""
        return bytes(data) if isinstance(data, memoryview) else data

    def data_version(self) -> int:
        """Changes whenever a commit anywhere changes a row (not for audit-only commits)."""
        return int(self._scalar("SELECT n FROM generation"))

    def _scalar(self, sql, params=()):
        """The one value a query returns."""
        row = self.conn.execute(sql, params).fetchone()
        if row is None:
            raise StoreError("the store is damaged: an expected row is missing")
        return row[0]

