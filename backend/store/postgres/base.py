"""Connections and transactions of the PostgreSQL store.

One writing connection per process, shared by the server's threads under a lock, as with
SQLite. Every change transaction first takes a transaction-level advisory lock, so changes from
all nodes are serialized as SQLite's BEGIN IMMEDIATE serializes processes: a check and the change
it guards see the same rows, and the audit chain's one head is read and updated by one writer at
a time (seq has no gaps). A change that touched rows also bumps `generation` and sends NOTIFY in
its own transaction, so listeners hear of exactly what committed.

Reads run on pooled connections, one snapshot a command (reads.py).
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from ...errors import StoreError, StoreUnavailable
from ..codec import Codec
from ..interface import audit_mac, head_mac
from ..secrets import ServerSecrets
from . import schema, serversecrets
from .reads import Snapshots, connection_lost, unreachable
from .url import CONNECT_TIMEOUT_SECS, connect_kwargs, redact_text, redact_url

NOTIFY_CHANNEL = "inputlayer_changes"
READERS_MAX = 8                 # pooled reading connections of one process


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


class PgBase(Snapshots):
    """Transactions, snapshots and row caches; the rows themselves are in PostgresStore."""

    def __init__(self, url: str, *, encryption_key: bytes | None = None,
                 secret_file: str | None = None, lock_wait_ms: int = 30_000):
        """`lock_wait_ms`: how long a change waits for another node's (SQLite's busy timeout)."""
        self.url = url
        self.shown_url = redact_url(url)
        self.codec = Codec(encryption_key)
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
        self._lock_wait_ms = lock_wait_ms
        self._use_secrets(serversecrets.load(secret_file))
        self._main = self._connect()
        try:
            schema.prepare(self._main, self.codec, self.shown_url, self.secrets)
            self._pool = ConnectionPool(url, min_size=1, max_size=READERS_MAX, kwargs=self._reader_kwargs(),
                                        configure=self._configure_reader, open=True, name="inputlayer-readers",
                                        timeout=CONNECT_TIMEOUT_SECS)
        except psycopg.Error as exc:
            self._main.close()
            raise self._fault(f"cannot open the store {self.shown_url}", exc) from None
        except BaseException:
            self._main.close()
            raise

    def _use_secrets(self, secrets: ServerSecrets) -> None:
        self.secrets = secrets
        self.secret = secrets.hmac
        self.token_secret = secrets.token
        self._audit_mac = audit_mac(secrets.audit)

    # --- connections ---------------------------------------------------------------------

    def _fault(self, doing: str, exc: BaseException) -> StoreError:
        """A driver error as one line, with no password in it: the server's own message when
        there is one (without the statement or position), else the driver's first line."""
        diag = getattr(exc, "diag", None)
        text = (diag and diag.message_primary) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        kind = StoreUnavailable if unreachable(exc) else StoreError
        return kind(f"{doing}: {redact_text(text, self.url)}")

    def _reader_kwargs(self) -> dict:
        return {**self._kwargs, "autocommit": True,
                "options": f"-c search_path={schema.NAMESPACE} -c default_transaction_read_only=on"}

    @staticmethod
    def _configure_reader(conn: psycopg.Connection) -> None:
        conn.prepare_threshold = 0       # every read statement repeats: prepare it at once

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.url, autocommit=True, **self._kwargs,
                                   options=f"-c search_path={schema.NAMESPACE} -c lock_timeout={self._lock_wait_ms}")
        except psycopg.Error as exc:
            raise self._fault(f"cannot open the store {self.shown_url}", exc) from None
        conn.prepare_threshold = 0
        return conn

    def _plain(self, text: str) -> str | bytes:
        """An unsealed value in the type of the `data` columns."""
        return schema.plain(self.codec, text)

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
                self._main.execute(f"SAVEPOINT {name}")
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
                self._main.execute(f"ROLLBACK TO {name}")
                self._cache.clear()
                self._audit_head, self._head_unsaved = head     # its appends are undone too
            else:
                self._savepoints.pop(name)
            self._main.execute(f"RELEASE {name}")
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
        for attempt in (1, 2):
            try:
                if self._main.broken or self._main.closed:
                    self._main = self._connect()     # the server restarted, or the network dropped
                self._main.execute("BEGIN")
                self._main.execute("SELECT pg_advisory_xact_lock(%s)", (schema.LOCK_KEY,))
                return
            except psycopg.Error as exc:
                lost = connection_lost(exc, self._main)
                self._rollback()
                if lost:
                    self._main.close()
                # Nothing was written yet: a connection found dead is replaced and tried once more.
                if attempt == 2 or not lost:
                    raise self._fault("cannot write to the store", exc) from None

    def _commit(self) -> None:
        try:
            if self._failed or self._main.info.transaction_status == pq.TransactionStatus.INERROR:
                # PostgreSQL would answer COMMIT with a silent rollback: say so instead.
                raise StoreError("cannot write to the store: a change in this transaction failed; "
                                 "nothing was committed")
            head = self._audit_head
            if self._head_unsaved and head is not None:
                self._set_meta("audit_head", {**head, "mac": head_mac(self._audit_mac, head["seq"], head["hash"])})
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

    # --- caches and meta -----------------------------------------------------------------

    def _meta(self, name: str) -> dict:
        row = self.conn.execute("SELECT data FROM meta WHERE name = %s", (name,)).fetchone()
        if row is None:
            raise StoreError(f"the store is damaged: no {name} record")
        return self.codec.open("meta", name, row[0])

    def _set_meta(self, name: str, value: dict | None) -> None:
        self._main.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                           (name, self.codec.seal("meta", name, value or {})))

    def data_version(self) -> int:
        """Changes whenever a commit anywhere changes a row (not for audit-only commits)."""
        return int(self._scalar("SELECT n FROM generation"))

    def _scalar(self, sql, params=()):
        """The one value a query returns."""
        row = self.conn.execute(sql, params).fetchone()
        if row is None:
            raise StoreError("the store is damaged: an expected row is missing")
        return row[0]


