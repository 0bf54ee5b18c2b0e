"""Connections and transactions of the PostgreSQL store.

One writing connection per process, shared by the server's threads under a lock, as with
SQLite. Every change transaction first takes a transaction-level advisory lock, so changes from
all nodes are serialized as SQLite's BEGIN IMMEDIATE serializes processes: a check and the change
it guards see the same rows, and the audit chain's one head is read and updated by one writer at
a time (seq has no gaps). A change that touched rows also bumps `generation` and sends NOTIFY in
its own transaction, so listeners hear of exactly what committed.

Round trips, not fsync, bound the writer: a change's row writes (and a batch command's savepoint)
are held back and sent together, in one pipeline, when something must read the writer's
connection or at commit, whose statements join the same pipeline. A command of a batch that
fails before its writes were sent just drops them; once sent, its savepoint undoes them.

Reads run on pooled connections, one snapshot a command, or from the node's cache while it
hears every change (reads.py, view.py).
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from ...errors import StoreError, StoreUnavailable
from ..batches import Batches
from ..cached import CACHED
from ..codec import Codec
from ..interface import audit_mac, head_mac
from ..secrets import ServerSecrets
from . import schema, serversecrets
from .reads import Snapshots, connection_lost, unreachable
from .url import CONNECT_TIMEOUT_SECS, connect_kwargs, redact_text, redact_url
from .view import NodeView

NOTIFY_CHANNEL = "inputlayer_changes"
READERS_MAX = 8                 # pooled reading connections of one process
HELD_MAX = 1000                 # statements held back at most before they are sent


def notice(generation: int, tables: set[str]) -> str:
    """A change's NOTIFY payload: the generation it committed, and the tables it changed."""
    return f"{generation} {','.join(sorted(tables))}"


def heard_generation(payload: str) -> int | None:
    """The generation in a payload of notice(); None for one that does not say."""
    first = payload.partition(" ")[0]
    return int(first) if first.isdigit() else None


@lru_cache(maxsize=512)
def dialect(sql: str) -> str:
    """The shared rows' SQL (`?` placeholders, as SQLite's) in psycopg's `%s` style."""
    return sql.replace("?", "%s")


class PgBase(Batches, Snapshots):
    """Connections, transactions and snapshots; the rows themselves are in ../tables.py."""

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
        self.view = NodeView(time.monotonic)       # what a server node heard (reads.py, view.py)
        self._closed = False
        self._reading = 0                         # threads inside read(): close() waits for them
        self._read_done = threading.Condition()
        self._atomic = False
        self._cache: dict[tuple, Any] = {}
        self._cache_stamp: Any = None              # the generation the writer's cached rows are of
        self._begun_at: Any = None                 # the generation its transaction began at
        self._audit_head: dict | None = None       # the chain's head after this transaction's appends
        self._head_unsaved = False
        self._changed: set[str] = set()            # tables changed: the NOTIFY payload
        self._failed = False                       # a statement failed inside an atomic batch
        # Open savepoints, outermost first: the audit head to restore, and where in _held the
        # savepoint goes (None once sent: a savepoint is only sent with something after it).
        self._savepoints: dict[str, list] = {}
        self._held: list[tuple[str, Any]] = []     # statements not yet sent, in order (_send)
        self._audit_held: list[tuple[str, Any]] = []   # an atomic batch's audit appends (_send_audit)
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
        """This thread's connection: its reader inside read(), else the writer, with the
        statements held back sent first (a read sees this transaction's own writes)."""
        reader = getattr(self._tls, "conn", None)
        if reader is CACHED:
            return self._leave_cache()
        if reader is not None:
            return reader
        if self._owner == threading.get_ident() and (
                self._held or self._audit_held or any(entry[2] is not None for entry in self._savepoints.values())):
            self._send_held()       # a statement that fails must find its command's savepoint
        return self._main

    # --- the shared rows' statements (tables.py): `?` placeholders ---------------------------

    def _query(self, sql: str, params: Any = ()) -> psycopg.Cursor:
        return self.conn.execute(dialect(sql), params)

    def _change(self, table: str, sql: str, params: Any = ()) -> None:
        """Every write of a row other than the audit log's goes through here."""
        self._changed.add(table)
        self._send(dialect(sql), params)

    def _write(self, sql: str, params: Any) -> None:
        self._send(dialect(sql), params)

    def _write_audit(self, sql: str, params: Any) -> None:
        self._send_audit(dialect(sql), params)

    def _insert_id(self, table: str, sql: str, params: Any) -> int:
        self._changed.add(table)
        return int(self._scalar(dialect(sql) + " RETURNING id", params))

    # --- held-back writes ----------------------------------------------------------------

    def _send(self, sql: str, params: Any = ()) -> None:
        """A write inside the transaction: held back, to be sent with the next ones."""
        self._held.append((sql, params))
        if len(self._held) >= HELD_MAX:
            self._send_held()

    def _send_audit(self, sql: str, params: Any) -> None:
        """An audit append: in an atomic batch (no savepoints, all or nothing) held apart and
        sent after the row writes, so that each kind goes as one run; nothing reads the audit
        log without sending all held statements first."""
        if self._atomic:
            self._audit_held.append((sql, params))
            if len(self._audit_held) >= HELD_MAX:
                self._send_held()
        else:
            self._send(sql, params)

    def _send_held(self) -> None:
        """Send the held statements in one pipeline: one round trip for all of them. A failure
        leaves the transaction failed: nothing of it may commit."""
        held, self._held = self._held, []
        for name, entry in reversed(self._savepoints.items()):
            if entry[2] is not None:
                held.insert(entry[2], (f"SAVEPOINT {name}", ()))
                entry[2] = None
        held += self._audit_held
        self._audit_held = []
        try:
            with self._main.cursor() as cursor, self._main.pipeline():
                # A run of one statement goes as one executemany: far less Python per row.
                for sql, run in groupby(held, key=itemgetter(0)):
                    rows = [params for _, params in run]
                    if len(rows) == 1:
                        cursor.execute(sql, rows[0])
                    else:
                        cursor.executemany(sql, rows)
        except psycopg.Error as exc:
            self._failed = True
            raise self._fault("cannot write to the store", exc) from None

    def close(self) -> None:
        with self._lock:
            with self._read_done:
                self._closed = True
                self._read_done.wait_for(lambda: self._reading == 0)
            self._pool.close()
            self._main.close()

    # --- transactions --------------------------------------------------------------------

    def _enter_write(self) -> str | None:
        self._lock.acquire()
        try:
            if getattr(self._tls, "conn", None) is not None:
                raise RuntimeError("write() inside read(): a reader connection cannot write")
            if self._atomic:
                return None
            if self._depth:
                name = f"sp{self._depth}"
                self._savepoints[name] = [self._audit_head, self._head_unsaved, len(self._held)]
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

    def _exit_write(self, savepoint: str | None, exc: BaseException | None) -> None:
        super()._exit_write(savepoint, exc)
        if isinstance(exc, psycopg.Error):
            raise self._fault("cannot write to the store", exc) from None

    def _atomic_change_failed(self) -> None:
        self._failed = True

    def _end_savepoint(self, name: str, failed: bool) -> None:
        head, head_unsaved, mark = self._savepoints.pop(name)
        if not failed:
            if mark is None:
                self._send(f"RELEASE {name}")
            return
        self._cache.clear()
        self._audit_head, self._head_unsaved = head, head_unsaved   # its appends are undone too
        if mark is not None:
            del self._held[mark:]          # nothing of it was sent: its savepoint neither
            return
        # Not pipelined: psycopg forgets its prepared statements when a ROLLBACK completes, which
        # statements queued behind it in a pipeline would still name.
        try:
            self.conn.execute(f"ROLLBACK TO {name}")
            self._main.execute(f"RELEASE {name}")
        except psycopg.Error as exc:
            raise self._fault("cannot write to the store", exc) from None

    def _forget(self, *, keep_rows: bool = False) -> None:
        """Drop what the writer knew of its transaction; `keep_rows`: not the rows it read,
        which stay good for as long as the generation counter stands still (see _begin)."""
        if not keep_rows:
            self._cache, self._cache_stamp = {}, None
        self._audit_head = None
        self._head_unsaved = False
        self._changed = set()
        self._failed = False
        self._savepoints = {}
        self._held = []
        self._audit_held = []

    def _begin(self) -> None:
        self._forget(keep_rows=True)
        if self._closed:
            raise StoreError("the store is closed")
        for attempt in (1, 2):
            try:
                if self._main.broken or self._main.closed:
                    self._main = self._connect()     # the server restarted, or the network dropped
                with self._main.pipeline():
                    self._main.execute("BEGIN")
                    self._main.execute("SELECT pg_advisory_xact_lock(%s)", (schema.LOCK_KEY,))
                    # Read after the lock: no other writer can change a row until this commits.
                    stamp = self._main.execute("SELECT n FROM generation")
                self._begun_at = stamp.fetchone()
                if self._begun_at != self._cache_stamp:
                    self._cache = {}        # another commit changed rows since this writer's last
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
            self._held += self._audit_held          # before the commit's own statements
            self._audit_held = []
            head = self._audit_head
            if self._head_unsaved and head is not None:
                self._set_meta("audit_head", {**head, "mac": head_mac(self._audit_mac, head["seq"], head["hash"])})
            generation = self._begun_at[0] + 1 if self._changed else None
            if generation is not None:
                self._send("UPDATE generation SET n = n + 1 WHERE id = 1")
                self._send("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, notice(generation, self._changed)))
            self._send("COMMIT")
            self._send_held()
            if self._main.info.transaction_status != pq.TransactionStatus.IDLE:
                raise StoreError("cannot write to the store: the commit did not complete")
            begun_at = self._begun_at
            self._forget(keep_rows=True)
            self._cache_stamp = (generation,) if generation is not None else begun_at
            if generation is not None:
                self.view.heard(generation)         # this node's next read sees its own change
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
        self._send("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET data = excluded.data",
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


