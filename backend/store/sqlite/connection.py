"""Opening the SQLite file (WAL, synchronous=FULL, owner-only), its connections, the meta table
and the writer's held-back writes.

One writing connection is shared by the server's threads under a lock; each reading thread gets
a connection of its own (WAL lets readers run beside the writer).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, cast

from ...errors import StoreError
from ..codec import Codec
from ..interface import GENESIS_HASH, audit_mac, head_mac
from ..secrets import ServerSecrets, load_secrets, read_secrets, secrets_path, write_secrets
from . import lockfile
from .schema import APPLICATION_ID, DB_FILE, MIGRATES_FROM, SCHEMA, SCHEMA_VERSION, private_file

DEFERRED_WRITES_MAX = 256       # row writes an atomic batch holds back at most (see _write)


class Connection:
    """The writer, the readers and the state of the writer's open transaction."""

    def __init__(self, data_dir: str | os.PathLike, *, encryption_key: bytes | None = None,
                 busy_timeout_ms: int = 30_000, path: Path | None = None, take_lock: bool = True,
                 secrets: ServerSecrets | None = None):
        """`take_lock`: hold the store's lock file shared while open (False: the caller holds
        it, as rekey does, exclusively). `secrets`: use these server secrets instead of the data
        directory's `secrets` file (rekey builds a copy of a store that way, and writes the file
        itself)."""
        self.dir = Path(data_dir)
        self.path = path or self.dir / DB_FILE
        self.codec = Codec(encryption_key)
        self._lock = threading.RLock()   # the writing connection, shared by the server's threads
        self._depth = 0                  # nesting of write()/batch() on this connection
        self._owner: int | None = None   # the thread inside write()/batch()
        self._tls = threading.local()    # a thread's own reading connection, while in read()
        self._readers: list[tuple[sqlite3.Connection, threading.Lock]] = []
        self._closed = False
        self._busy_timeout = busy_timeout_ms / 1000
        # Rows read or written while this connection holds the write transaction: no other
        # process can change them meanwhile, so a batch of commands reads each row once.
        self._cache: dict[Any, Any] = {}
        # The audit chain's head, as this transaction's appends left it: saved once, at commit.
        self._audit_head: dict | None = None
        self._head_unsaved = False
        # The tables this transaction changed, besides the audit log: only then do readers'
        # caches go stale (logins append audit records all the time, and must not flush them).
        self._changed: set[str] = set()
        self._atomic = False
        # Row writes an atomic batch holds back, in order: see _write().
        self._deferred: list[tuple[str, Any]] = []
        self._given_secrets = secrets
        self.secrets_file = secrets_path(self.dir)
        self.secrets: ServerSecrets          # set once open: see _use_secrets
        self.secret = self.token_secret = b""
        self._audit_mac = audit_mac(b"")
        self._lock_fd: int | None = None
        self._open(busy_timeout_ms, take_lock)

    # --- opening -------------------------------------------------------------------------

    def _open(self, busy_timeout_ms: int, take_lock: bool) -> None:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open the store in {self.dir}: {exc.strerror or exc}") from None
        if take_lock:
            self._lock_fd = lockfile.acquire(self.path, exclusive=False)
        try:
            self._connect(busy_timeout_ms)
        except BaseException:
            self._release_lock()
            raise

    def _connect(self, busy_timeout_ms: int) -> None:
        try:
            private_file(self.path)
        except OSError as exc:
            raise StoreError(f"cannot open the store in {self.dir}: {exc.strerror or exc}") from None
        self._check_readonly()
        try:
            self._main = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                         timeout=busy_timeout_ms / 1000)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store: {self.path}: {exc}") from None
        # The cursor of every row write: Connection.execute() would make one per call. Nothing
        # iterates over it, so statements on it never interrupt one another.
        self._writes = self._main.cursor()
        try:
            self._configure()
        except BaseException:
            self.conn.close()       # leaves no -wal/-shm behind a refused open
            raise
        for suffix in ("-wal", "-shm"):
            extra = Path(str(self.path) + suffix)
            if extra.exists():
                os.chmod(extra, 0o600)

    def _check_readonly(self) -> None:
        """Check the file is ours, in our format, under our key, on a connection that cannot
        write any file (not even -shm): a refused open changes no byte, even when a crash left
        a WAL that the first writing connection would merge and delete."""
        while True:
            wal, shm = (Path(str(self.path) + suffix).exists() for suffix in ("-wal", "-shm"))
            # Without a WAL the file alone is the store; with one, its index is read, never rebuilt.
            mode = "immutable=1" if not wal else "mode=ro&readonly_shm=1" if shm else "mode=ro"
            try:
                self._probe(f"{self.path.resolve().as_uri()}?{mode}")
                return
            except StoreError:
                # Read as immutable while another process began writing (its WAL appears
                # first): read again, through the WAL.
                if wal or not Path(str(self.path) + "-wal").exists():
                    raise

    def _probe(self, uri: str) -> None:
        try:
            probe = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=self._busy_timeout)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store: {self.path}: {exc}") from None
        try:
            app_id = probe.execute("PRAGMA application_id").fetchone()[0]
            tables = probe.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id != APPLICATION_ID and (app_id != 0 or tables):
                raise StoreError(f"cannot open the store: {self.path} is not an InputLayer store "
                                 "(another program's database); choose another --data-dir")
            if app_id == APPLICATION_ID:
                self._check_format(probe)
        except (sqlite3.DatabaseError, ValueError, KeyError) as exc:
            raise StoreError(f"cannot open the store: {self.path} is not a valid database ({exc}); "
                             "restore it from a backup or choose another --data-dir") from None
        finally:
            probe.close()

    def _configure(self) -> None:
        try:
            app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA secure_delete=ON")
            if app_id != APPLICATION_ID:
                self._create_schema()
            else:
                self._open_secrets()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the store: {self.path} is not a valid database ({exc}); "
                             "restore it from a backup or choose another --data-dir") from None

    def _check_format(self, probe: sqlite3.Connection) -> None:
        version = probe.execute("PRAGMA user_version").fetchone()[0]
        if version not in (MIGRATES_FROM, SCHEMA_VERSION):
            raise StoreError(f"cannot open the store: {self.path} has format version {version}, "
                             f"this program reads version {SCHEMA_VERSION}")
        row = probe.execute("SELECT data FROM meta WHERE name = 'format'").fetchone()
        if row is None:
            raise StoreError(f"cannot open the store: {self.path} is damaged (no format record)")
        fmt = json.loads(row[0])
        if fmt["encrypted"] and not self.codec.encrypted:
            raise StoreError("the store is encrypted: set INPUTLAYER_ENCRYPTION_KEY to its key")
        if not fmt["encrypted"] and self.codec.encrypted:
            raise StoreError("the store is not encrypted: unset INPUTLAYER_ENCRYPTION_KEY, or encrypt "
                             "the store first with `inputlayer-server rekey`")
        if fmt["encrypted"] and fmt["key_id"] != self.codec.key_id:
            raise StoreError("wrong encryption key: INPUTLAYER_ENCRYPTION_KEY is not the key of this store")

    def _create_schema(self) -> None:
        server_secrets = self._given_secrets or self._secrets_for_new_store()
        self._main.execute("BEGIN IMMEDIATE")
        try:
            if self.conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                for statement in filter(str.strip, SCHEMA.split(";")):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                fmt = {"encrypted": self.codec.encrypted, "key_id": self.codec.key_id}
                self._main.execute("INSERT INTO meta VALUES ('format', ?)", (json.dumps(fmt),))
                self._set_meta("secrets_fingerprint", {"sha256": server_secrets.fingerprint()})
                mac = audit_mac(server_secrets.audit)
                self._set_meta("audit_head", {"seq": 0, "hash": GENESIS_HASH,
                                              "mac": head_mac(mac, 0, GENESIS_HASH)})
            else:
                self._check_format(self._main)      # another process created it meanwhile
            self._main.execute("COMMIT")
        except BaseException:
            self._main.execute("ROLLBACK")
            raise
        self._open_secrets()

    def _secrets_for_new_store(self) -> ServerSecrets:
        """The directory's secrets file, made now if there is none (two processes creating one
        store at once agree on whichever file was linked first)."""
        found = read_secrets(self.secrets_file, self.codec)
        if found is None:
            write_secrets(self.secrets_file, self.codec, ServerSecrets.generate(), replace=False)
            found = read_secrets(self.secrets_file, self.codec)
            assert found is not None       # just created, by this process or the winner of a race
        return found

    def _open_secrets(self) -> None:
        """Load the server secrets the store's fingerprint names (upgrading a version-2 store,
        whose secrets were in `meta`, first)."""
        if self.conn.execute("PRAGMA user_version").fetchone()[0] == MIGRATES_FROM:
            from .migrate import migrate_from_v2
            from .store import SQLiteStore

            migrate_from_v2(cast(SQLiteStore, self))     # a Connection is always part of a SQLiteStore
        fingerprint = self._meta("secrets_fingerprint")["sha256"]
        if self._given_secrets is not None:
            if self._given_secrets.fingerprint() != fingerprint:
                raise StoreError("the server secrets given do not belong to this store")
            self._use_secrets(self._given_secrets)
        else:
            self._use_secrets(load_secrets(self.secrets_file, self.codec, fingerprint))

    def _use_secrets(self, server_secrets: ServerSecrets) -> None:
        self.secrets = server_secrets
        self.secret = server_secrets.hmac
        self.token_secret = server_secrets.token
        self._audit_mac = audit_mac(server_secrets.audit)

    # --- connections ---------------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection this thread works on: its reader inside read(), else the writer, whose
        deferred writes run first so that what it reads includes them."""
        reader = getattr(self._tls, "conn", None)
        if reader is not None:
            return reader
        if self._deferred:
            self._run_deferred()
        return self._main

    def _open_reader(self) -> tuple[sqlite3.Connection, threading.Lock]:
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            try:
                reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                         timeout=self._busy_timeout)
                reader.execute("PRAGMA query_only=ON")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the store: {exc}") from None
            self._readers.append((reader, threading.Lock()))
            self._tls.cache, self._tls.seen_stamp = {}, None
            return self._readers[-1]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for reader, in_use in self._readers:
                with in_use:                 # never close a connection another thread is reading on
                    reader.close()
            self._main.close()
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            lockfile.release(self._lock_fd)
            self._lock_fd = None

    def data_version(self) -> int:
        """Changes when any other connection commits: lets a server notice a local shell's change."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    # --- meta ----------------------------------------------------------------------------

    def _meta(self, name: str) -> dict:
        row = self.conn.execute("SELECT data FROM meta WHERE name = ?", (name,)).fetchone()
        return self.codec.open("meta", name, row[0])

    def _set_meta(self, name: str, value: dict) -> None:
        self._run_deferred()
        self._main.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, self.codec.seal("meta", name, value)))

    # --- row writes ----------------------------------------------------------------------

    def _query(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        """A read on this thread's connection (the shared rows' SQL is SQLite's already)."""
        return self.conn.execute(sql, params)

    def _change(self, table: str, sql: str, params: Any = ()) -> None:
        """Every write of a row other than the audit log's goes through here (or _insert_id)."""
        self._changed.add(table)
        self._write(sql, params)

    def _write(self, sql: str, params: Any) -> None:
        """Run a row write, or in an atomic batch (--single-transaction) hold it back to run with
        the next few hundred: interleaving SQLite with the engine's Python costs each of them its
        CPU caches (a -1 grant took ~45 us written at once, ~37 us held back). Anything else that
        touches the writer's connection (a read, a commit) runs the held-back writes first, in
        order. A failure met late is still safe: any failure rolls an atomic batch back whole."""
        if not self._atomic:
            self._writes.execute(sql, params)
            return
        self._deferred.append((sql, params))
        if len(self._deferred) >= DEFERRED_WRITES_MAX:
            self._run_deferred()

    def _run_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        execute = self._writes.execute
        for sql, params in deferred:
            execute(sql, params)

    def _write_audit(self, sql: str, params: Any) -> None:
        self._write(sql, params)

    def _insert_id(self, table: str, sql: str, params: Any) -> int:
        """An insert whose new rowid is needed at once."""
        self._changed.add(table)
        rowid = self.conn.execute(sql, params).lastrowid
        assert rowid is not None    # an INSERT always sets it
        return rowid

    def _plain(self, text: str) -> str | bytes:
        """An unsealed value in the `data` columns (SQLite's are untyped)."""
        return text
