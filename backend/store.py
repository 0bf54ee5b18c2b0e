"""The embedded store: SQLite in WAL mode with synchronous=FULL, owner-only files.

All SQL lives here. Every row is a lookup ref (or refs) plus one `data` value that the codec
keeps as JSON or seals with AES-256-GCM, so the same code serves plain and encrypted stores.
Every change runs inside `write()` (BEGIN IMMEDIATE, or a savepoint when a batch is open), and
its audit record is appended in that same transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

from .codec import Codec, encode_json
from .errors import StoreError

APPLICATION_ID = 0x494C4144   # "ILAD": marks the file as ours, so a foreign database is refused
SCHEMA_VERSION = 2
DB_FILE = "inputlayer.db"
GENESIS_HASH = "0" * 64
READER_CACHE_ROWS = 10_000      # bounds the memory of a reader's row cache
_UNKNOWN = object()             # not in a row cache (None there means: no such row)
DEFERRED_WRITES_MAX = 256       # row writes an atomic batch holds back at most (see Store._write)
AUDIT_FIELDS = ("seq", "time", "actor", "source", "action", "target", "outcome", "detail")

SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, data) WITHOUT ROWID;
CREATE TABLE users (ref TEXT PRIMARY KEY, data NOT NULL) WITHOUT ROWID;
CREATE TABLE kgs (ref TEXT PRIMARY KEY, data NOT NULL) WITHOUT ROWID;
CREATE TABLE acl (
    kg_ref TEXT NOT NULL REFERENCES kgs(ref) ON DELETE CASCADE,
    user_ref TEXT NOT NULL REFERENCES users(ref) ON DELETE CASCADE,
    data NOT NULL,
    PRIMARY KEY (kg_ref, user_ref)
) WITHOUT ROWID;
CREATE INDEX acl_by_user ON acl(user_ref);
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label_ref TEXT NOT NULL UNIQUE,
    owner_ref TEXT NOT NULL REFERENCES users(ref) ON DELETE CASCADE,
    digest_ref TEXT UNIQUE,
    prev_digest_ref TEXT UNIQUE,
    data NOT NULL
);
CREATE INDEX api_keys_by_owner ON api_keys(owner_ref);
CREATE TABLE api_key_kgs (
    key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    kg_ref TEXT NOT NULL REFERENCES kgs(ref) ON DELETE CASCADE,
    PRIMARY KEY (key_id, kg_ref)
) WITHOUT ROWID;
CREATE INDEX api_key_kgs_by_kg ON api_key_kgs(kg_ref);
CREATE TABLE tokens (ref TEXT PRIMARY KEY, data NOT NULL) WITHOUT ROWID;
CREATE TABLE audit (seq INTEGER PRIMARY KEY, data NOT NULL);
"""
TABLES = ("meta", "users", "kgs", "acl", "api_keys", "api_key_kgs", "tokens", "audit")


# Each record's hash starts from a copy of this one: hashlib.sha256() would look the algorithm
# up in OpenSSL again for every record (~1 us a record in a bulk script).
_SHA256 = hashlib.sha256()


def audit_hash(prev_hash: str, record: tuple) -> str:
    return _audit_payload(prev_hash, record)[1]


def _audit_payload(prev_hash: str, record: tuple) -> tuple[str, str]:
    """A record as stored, the JSON array [prev_hash, seq, time, actor, source, action, target,
    outcome, detail, hash], and its hash: SHA-256 of the same array without its last element,
    so the record is encoded once to be both hashed and stored."""
    hashed = encode_json([prev_hash, *record])
    hasher = _SHA256.copy()
    hasher.update(hashed.encode())
    digest = hasher.hexdigest()
    return f'{hashed[:-1]},"{digest}"]', digest


def _private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if it does not exist (SQLite then keeps the mode for
    its -wal and -shm files)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


class _Snapshot:
    """Store.read(): a class rather than a generator, as it runs once for every read command."""
    __slots__ = ("_store", "_entered")

    def __init__(self, store: "Store"):
        self._store = store

    def __enter__(self) -> None:
        self._entered = self._store._enter_read()

    def __exit__(self, *_) -> None:
        if self._entered is not None:
            self._store._exit_read(self._entered)


class _Change:
    """Store.write(): a class rather than a generator-based context manager, as it runs once
    for every change."""
    __slots__ = ("_store", "_savepoint")

    def __init__(self, store: "Store"):
        self._store = store

    def __enter__(self) -> None:
        self._savepoint = self._store._enter_write()

    def __exit__(self, exc_type, *_) -> None:
        self._store._exit_write(self._savepoint, exc_type is not None)


class Store:
    def __init__(self, data_dir: str | os.PathLike, *, encryption_key: bytes | None = None,
                 busy_timeout_ms: int = 30_000, path: Path | None = None):
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
        self._cache: dict[tuple[str, str], dict | None] = {}
        # The audit chain's head, as this transaction's appends left it: saved once, at commit.
        self._audit_head: dict | None = None
        self._head_unsaved = False
        # Whether this transaction changed any row besides the audit log: only then do readers'
        # caches go stale (logins append audit records all the time, and must not flush them).
        self._rows_changed = False
        self._atomic = False
        # Row writes an atomic batch holds back, in order: see _write().
        self._deferred: list[tuple[str, tuple]] = []
        self._open(busy_timeout_ms)

    # --- opening -------------------------------------------------------------------------

    def _open(self, busy_timeout_ms: int) -> None:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            _private_file(self.path)
        except OSError as exc:
            raise StoreError(f"cannot open the store in {self.dir}: {exc.strerror or exc}") from None
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

    def _configure(self) -> None:
        try:
            app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
            tables = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id != APPLICATION_ID and (app_id != 0 or tables):
                raise StoreError(f"cannot open the store: {self.path} is not an InputLayer store "
                                 "(another program's database); choose another --data-dir")
            if app_id == APPLICATION_ID:
                self._check_format()        # before anything could write: a wrong key changes no byte
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA secure_delete=ON")
            if app_id != APPLICATION_ID:
                self._create_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the store: {self.path} is not a valid database ({exc}); "
                             "restore it from a backup or choose another --data-dir") from None

    def _check_format(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise StoreError(f"cannot open the store: {self.path} has format version {version}, "
                             f"this program reads version {SCHEMA_VERSION}")
        row = self.conn.execute("SELECT data FROM meta WHERE name = 'format'").fetchone()
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
        self._secrets = self._meta("secrets")
        self.secret = self._secrets["hmac"].encode()

    def _create_schema(self) -> None:
        self._main.execute("BEGIN IMMEDIATE")
        try:
            if self.conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                for statement in filter(str.strip, SCHEMA.split(";")):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                fmt = {"encrypted": self.codec.encrypted, "key_id": self.codec.key_id}
                self._main.execute("INSERT INTO meta VALUES ('format', ?)", (json.dumps(fmt),))
                # Server-side secrets live in their own table, apart from the digests they key.
                self._set_meta("secrets", {"hmac": secrets.token_hex(32), "token": secrets.token_hex(32)})
                self._set_meta("audit_head", {"seq": 0, "hash": GENESIS_HASH})
            self._main.execute("COMMIT")
        except BaseException:
            self._main.execute("ROLLBACK")
            raise
        self._secrets = self._meta("secrets")
        self.secret = self._secrets["hmac"].encode()

    @property
    def token_secret(self) -> bytes:
        return self._secrets["token"].encode()

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

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for reader, in_use in self._readers:
                with in_use:                 # never close a connection another thread is reading on
                    reader.close()
            self._main.close()

    # --- transactions --------------------------------------------------------------------

    def write(self) -> "_Change":
        """One change, atomically: a transaction, or a savepoint inside an open batch (a context
        manager)."""
        return _Change(self)

    def _enter_write(self) -> tuple | None:
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

    def _exit_write(self, savepoint: tuple | None, failed: bool) -> None:
        try:
            if self._atomic:
                return
            if savepoint is not None:
                name, *head = savepoint
                self._depth -= 1
                if failed:
                    self._main.execute(f"ROLLBACK TO {name}")
                    self._cache.clear()
                    self._audit_head, self._head_unsaved = head    # its appends are undone too
                self._main.execute(f"RELEASE {name}")
                return
            self._depth, self._owner = 0, None
            if failed:
                self._rollback()
            else:
                self._commit()
        finally:
            self._lock.release()

    def read(self) -> "_Snapshot":
        """A consistent snapshot for a read-only command (a context manager). Readers use
        connections of their own (WAL lets them run beside the writer), so reads never queue
        behind the write lock."""
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

    def _forget(self) -> None:
        self._deferred.clear()
        self._cache.clear()
        self._audit_head = None
        self._head_unsaved = False
        self._rows_changed = False

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
                self._set_meta("audit_head", self._audit_head)
            if self._rows_changed:
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

    # --- encoding helpers ----------------------------------------------------------------

    def _meta(self, name: str) -> dict:
        row = self.conn.execute("SELECT data FROM meta WHERE name = ?", (name,)).fetchone()
        return self.codec.open("meta", name, row[0])

    def _set_meta(self, name: str, value: dict) -> None:
        self._run_deferred()
        self._main.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, self.codec.seal("meta", name, value)))

    def _memo(self, key: tuple, load, *args, writer_too: bool):
        """`load(*args)`, remembered: by the writer within its transaction (only for lookups its
        own writes keep up to date), by a reader for as long as no commit has changed a row."""
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

    def _get(self, table: str, ref: str) -> dict | None:
        return self._memo((table, ref), self._load_row, table, ref, writer_too=True)

    def _load_row(self, table: str, ref: str) -> dict | None:
        row = self.conn.execute(f"SELECT data FROM {table} WHERE ref = ?", (ref,)).fetchone()
        return None if row is None else self.codec.open(table, ref, row[0])

    def _all(self, table: str, sort_key: str) -> list[dict]:
        rows = [self.codec.open(table, ref, data) for ref, data in self.conn.execute(f"SELECT ref, data FROM {table}")]
        return sorted(rows, key=lambda r: r[sort_key])

    def _change(self, sql: str, params=()) -> None:
        """Every write of a row other than the audit log's goes through here (or _insert_now)."""
        self._rows_changed = True
        self._write(sql, params)

    def _write(self, sql: str, params) -> None:
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

    def _insert_now(self, sql: str, params) -> int:
        """An insert whose new rowid is needed at once."""
        self._rows_changed = True
        return self.conn.execute(sql, params).lastrowid

    def _put(self, table: str, ref: str, value: dict, *, insert: bool) -> None:
        sealed = self.codec.seal(table, ref, value)
        if insert:
            self._change(f"INSERT INTO {table} (ref, data) VALUES (?, ?)", (ref, sealed))
        else:
            self._change(f"UPDATE {table} SET data = ? WHERE ref = ?", (sealed, ref))
        self._cache.pop((table, ref), None)

    # --- users ---------------------------------------------------------------------------

    def _user_ref(self, name: str) -> str:
        return self.codec.ref("user", name)

    def user(self, name: str) -> dict | None:
        return self._get("users", self._user_ref(name))

    def users(self) -> list[dict]:
        return self._all("users", "name")

    def user_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM users").fetchone()[0]

    def admin_count(self) -> int:
        return sum(1 for u in self.users() if u["role"] == "admin")

    def add_user(self, name: str, role: str, password_hash: str, now: float) -> None:
        self._put("users", self._user_ref(name), {"name": name, "role": role, "password_hash": password_hash,
                                                  "password_version": 1, "created_at": now,
                                                  "last_login_at": None}, insert=True)

    def drop_user(self, name: str) -> None:
        self._change("DELETE FROM users WHERE ref = ?", (self._user_ref(name),))
        self._cache.clear()     # cascades reach other tables

    def _update_user(self, name: str, **changes) -> None:
        user = self.user(name)
        if user is not None:
            self._put("users", self._user_ref(name), {**user, **changes}, insert=False)

    def set_password(self, name: str, password_hash: str, *, new_version: bool) -> None:
        """new_version ends the user's other password sessions (a rehash does not)."""
        user = self.user(name)
        self._update_user(name, password_hash=password_hash,
                          password_version=user["password_version"] + int(new_version))

    def set_role(self, name: str, role: str) -> None:
        self._update_user(name, role=role)

    def touch_login(self, name: str, now: float) -> None:
        self._update_user(name, last_login_at=now)

    # --- knowledge graphs ----------------------------------------------------------------

    def _kg_ref(self, name: str) -> str:
        return self.codec.ref("kg", name)

    def kg(self, name: str) -> dict | None:
        return self._get("kgs", self._kg_ref(name))

    def kgs(self) -> list[dict]:
        return self._all("kgs", "name")

    def add_kg(self, name: str, creator: str, now: float) -> None:
        self._put("kgs", self._kg_ref(name), {"name": name, "created_at": now, "created_by": creator}, insert=True)

    def drop_kg(self, name: str) -> None:
        self._change("DELETE FROM kgs WHERE ref = ?", (self._kg_ref(name),))
        self._cache.clear()

    # --- ACLs ----------------------------------------------------------------------------

    def _acl_open(self, kg_ref: str, user_ref: str, data) -> dict:
        return self.codec.open("acl", f"{kg_ref}/{user_ref}", data)

    def acl_entry(self, kg: str, user: str) -> dict | None:
        kg_ref, user_ref = self._kg_ref(kg), self._user_ref(user)

        return self._memo(("acl", kg_ref, user_ref), self._load_acl_entry, kg_ref, user_ref, writer_too=False)

    def _load_acl_entry(self, kg_ref: str, user_ref: str) -> dict | None:
        row = self.conn.execute("SELECT data FROM acl WHERE kg_ref = ? AND user_ref = ?", (kg_ref, user_ref)).fetchone()
        return None if row is None else self._acl_open(kg_ref, user_ref, row[0])

    def acl_for_kg(self, kg: str) -> list[dict]:
        kg_ref = self._kg_ref(kg)
        rows = self.conn.execute("SELECT user_ref, data FROM acl WHERE kg_ref = ?", (kg_ref,))
        return sorted((self._acl_open(kg_ref, u, d) for u, d in rows), key=lambda e: e["username"])

    def acl_for_user(self, user: str) -> list[dict]:
        user_ref = self._user_ref(user)
        rows = self.conn.execute("SELECT kg_ref, data FROM acl WHERE user_ref = ?", (user_ref,))
        return sorted((self._acl_open(k, user_ref, d) for k, d in rows), key=lambda e: e["kg"])

    def grant(self, kg: str, user: str, role: str, granted_by: str, now: float) -> None:
        kg_ref, user_ref = self._kg_ref(kg), self._user_ref(user)
        value = {"kg": kg, "username": user, "role": role, "granted_by": granted_by, "granted_at": now}
        # An upsert rewrites the row in place; REPLACE would delete and re-insert it (~30 % slower).
        self._change("INSERT INTO acl VALUES (?, ?, ?) "
                     "ON CONFLICT (kg_ref, user_ref) DO UPDATE SET data = excluded.data",
                     (kg_ref, user_ref, self.codec.seal("acl", f"{kg_ref}/{user_ref}", value)))

    def revoke(self, kg: str, user: str) -> None:
        self._change("DELETE FROM acl WHERE kg_ref = ? AND user_ref = ?", (self._kg_ref(kg), self._user_ref(user)))

    # --- API keys ------------------------------------------------------------------------

    def _key_open(self, row) -> dict:
        key_id, data = row
        return {"id": key_id, **self.codec.open("api_keys", str(key_id), data)}

    def _key_put(self, key: dict) -> None:
        value = {k: v for k, v in key.items() if k != "id"}
        digest, prev = key.get("digest"), key.get("prev_digest")
        self._change(
            "UPDATE api_keys SET digest_ref = ?, prev_digest_ref = ?, data = ? WHERE id = ?",
            (digest and self.codec.ref("digest", digest), prev and self.codec.ref("digest", prev),
             self.codec.seal("api_keys", str(key["id"]), value), key["id"]))

    def key_by_digest(self, digest: str) -> dict | None:
        """The key whose current or previous (rotating) secret has this digest."""
        ref = self.codec.ref("digest", digest)
        return self._memo(("digest", ref), self._load_key_by_digest_ref, ref, writer_too=False)

    def _load_key_by_digest_ref(self, ref: str) -> dict | None:
        row = self.conn.execute("SELECT id, data FROM api_keys WHERE digest_ref = ? OR prev_digest_ref = ?",
                                (ref, ref)).fetchone()
        return None if row is None else self._key_open(row)

    def key(self, label: str) -> dict | None:
        row = self.conn.execute("SELECT id, data FROM api_keys WHERE label_ref = ?",
                                (self.codec.ref("label", label),)).fetchone()
        return None if row is None else self._key_open(row)

    def key_by_id(self, key_id: int) -> dict | None:
        return self._memo(("key", key_id), self._load_key_by_id, key_id, writer_too=False)

    def _load_key_by_id(self, key_id: int) -> dict | None:
        row = self.conn.execute("SELECT id, data FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else self._key_open(row)

    def keys(self, owner: str | None = None) -> list[dict]:
        if owner is None:
            rows = self.conn.execute("SELECT id, data FROM api_keys")
        else:
            rows = self.conn.execute("SELECT id, data FROM api_keys WHERE owner_ref = ?", (self._user_ref(owner),))
        return sorted((self._key_open(r) for r in rows), key=lambda k: k["label"])

    def key_kgs(self, key_id: int) -> list[str]:
        return list(self._memo(("key_kgs", key_id), self._load_key_kgs, key_id, writer_too=False))

    def _load_key_kgs(self, key_id: int) -> list[str]:
        rows = self.conn.execute("SELECT k.ref, k.data FROM api_key_kgs s JOIN kgs k ON k.ref = s.kg_ref "
                                 "WHERE s.key_id = ?", (key_id,))
        return sorted(self.codec.open("kgs", ref, data)["name"] for ref, data in rows)

    def add_key(self, label: str, owner: str, role: str, kgs: tuple[str, ...], digest: str,
                now: float, expires_at: float | None, *, ips: tuple[str, ...] = (),
                rate: tuple[int, int] | None = None) -> None:
        label_ref = self.codec.ref("label", label)
        # A revoked key's label may be reused: its row only remains for `.apikey list`.
        self._change("DELETE FROM api_keys WHERE label_ref = ?", (label_ref,))
        key_id = self._insert_now("INSERT INTO api_keys (label_ref, owner_ref, data) VALUES (?, ?, '')",
                                  (label_ref, self._user_ref(owner)))
        self._key_put({"id": key_id, "label": label, "owner": owner, "role": role, "scoped": bool(kgs),
                       "digest": digest, "prev_digest": None, "prev_valid_until": None, "created_at": now,
                       "expires_at": expires_at, "last_used_at": None, "revoked_at": None,
                       "ips": list(ips), "rate": list(rate) if rate else None})
        for kg in kgs:
            self._change("INSERT INTO api_key_kgs VALUES (?, ?)", (key_id, self._kg_ref(kg)))

    def revoke_key(self, key_id: int, now: float) -> None:
        key = self.key_by_id(key_id)
        self._key_put({**key, "revoked_at": now, "digest": None, "prev_digest": None, "prev_valid_until": None})

    def rotate_key(self, key_id: int, new_digest: str, old_valid_until: float | None) -> None:
        key = self.key_by_id(key_id)
        previous = key["digest"] if old_valid_until is not None else None
        self._key_put({**key, "digest": new_digest, "prev_digest": previous, "prev_valid_until": old_valid_until})

    def touch_key(self, key_id: int, now: float) -> None:
        self._key_put({**self.key_by_id(key_id), "last_used_at": now})

    # --- session tokens ------------------------------------------------------------------

    def token(self, jti: str) -> dict | None:
        return self._get("tokens", self.codec.ref("token", jti))

    def add_token(self, jti: str, username: str, issued_at: float, expires_at: float) -> None:
        self._put("tokens", self.codec.ref("token", jti), {"jti": jti, "username": username, "issued_at": issued_at,
                                                          "expires_at": expires_at, "revoked_at": None}, insert=True)

    def revoke_token(self, jti: str, now: float) -> None:
        self._put("tokens", self.codec.ref("token", jti), {**self.token(jti), "revoked_at": now}, insert=False)

    def forget_expired_tokens(self, now: float) -> None:
        """Expired tokens fail on their own; their records only need to live that long."""
        for ref, data in self.conn.execute("SELECT ref, data FROM tokens").fetchall():
            if self.codec.open("tokens", ref, data)["expires_at"] < now:
                self._change("DELETE FROM tokens WHERE ref = ?", (ref,))

    # --- audit ---------------------------------------------------------------------------

    def append_audit(self, now: float, actor: str, source: str, action: str, target: str,
                     outcome: str, detail: str) -> None:
        """Append one hash-chained record; must run inside write()."""
        head = self._current_head()
        seq = head["seq"] + 1
        record = (seq, now, actor, source, action, target, outcome, detail)
        text, digest = _audit_payload(head["hash"], record)
        self._write("INSERT INTO audit VALUES (?, ?)", (seq, self.codec.seal_text("audit", str(seq), text)))
        self._audit_head = {"seq": seq, "hash": digest}
        self._head_unsaved = True

    def _current_head(self) -> dict:
        """The chain's head as this thread sees it: its own unsaved appends included."""
        if self._owner == threading.get_ident() and self._audit_head is not None:
            return self._audit_head
        return self._meta("audit_head")

    def _audit_rows(self, order: str) -> Iterator[dict]:
        for seq, data in self.conn.execute(f"SELECT seq, data FROM audit ORDER BY seq {order}"):
            prev_hash, *record, digest = self.codec.open("audit", str(seq), data)
            yield {**dict(zip(AUDIT_FIELDS, record)), "prev_hash": prev_hash, "hash": digest, "row_seq": seq}

    def audit_records(self, *, limit: int, actor: str | None, action: str | None,
                      since: float | None) -> list[dict]:
        """Newest first; `actor` matches the actor or the target, `action` a name or a prefix."""
        found = []
        for rec in self._audit_rows("DESC"):
            if since is not None and rec["time"] < since:
                break
            if actor is not None and actor not in (rec["actor"], rec["target"]):
                continue
            if action is not None and rec["action"] != action and not rec["action"].startswith(action + "."):
                continue
            found.append(rec)
            if len(found) == limit:
                break
        return found

    def verify_audit(self) -> tuple[int, str | None]:
        """(records checked, None) or (count, what is wrong) at the first record that fails."""
        prev_hash, expected_seq, count = GENESIS_HASH, 1, 0
        try:
            for rec in self._audit_rows("ASC"):
                if rec["row_seq"] != expected_seq or rec["seq"] != expected_seq:
                    return count, f"Audit log broken at record {expected_seq}: record missing or out of order"
                if rec["prev_hash"] != prev_hash:
                    return count, f"Audit log broken at record {expected_seq}: chain does not link to the record before"
                if audit_hash(prev_hash, tuple(rec[f] for f in AUDIT_FIELDS)) != rec["hash"]:
                    return count, f"Audit log broken at record {expected_seq}: contents do not match its hash"
                prev_hash, expected_seq, count = rec["hash"], expected_seq + 1, count + 1
        except StoreError:
            return count, f"Audit log broken at record {expected_seq}: the sealed record was altered"
        head = self._current_head()
        if head != {"seq": count, "hash": prev_hash}:
            return count, f"Audit log broken at record {count + 1}: the latest records were removed"
        return count, None

    # --- whole-store copy (rekey) --------------------------------------------------------

    def export_rows(self) -> dict:
        """Every stored value, opened: what `rekey` copies into a store with another key."""
        kg_names = {ref: self.codec.open("kgs", ref, data)["name"]
                    for ref, data in self.conn.execute("SELECT ref, data FROM kgs")}
        return {
            "secrets": self._meta("secrets"),
            "audit_head": self._current_head(),
            "users": self.users(),
            "kgs": self.kgs(),
            "acl": [self._acl_open(k, u, d) for k, u, d in self.conn.execute("SELECT kg_ref, user_ref, data FROM acl")],
            "api_keys": [self._key_open(r) for r in self.conn.execute("SELECT id, data FROM api_keys")],
            "api_key_kgs": [(key_id, kg_names[ref]) for key_id, ref in
                            self.conn.execute("SELECT key_id, kg_ref FROM api_key_kgs")],
            "tokens": [self.codec.open("tokens", ref, data)
                       for ref, data in self.conn.execute("SELECT ref, data FROM tokens")],
            "audit": list(self._audit_rows("ASC")),
        }

    def import_rows(self, rows: dict) -> int:
        """Fill this (new, empty) store with `export_rows()` of another; inside write()."""
        self._set_meta("secrets", rows["secrets"])
        self._set_meta("audit_head", rows["audit_head"])
        for user in rows["users"]:
            self._put("users", self._user_ref(user["name"]), user, insert=True)
        for kg in rows["kgs"]:
            self._put("kgs", self._kg_ref(kg["name"]), kg, insert=True)
        for entry in rows["acl"]:
            self.grant(entry["kg"], entry["username"], entry["role"], entry["granted_by"], entry["granted_at"])
        for key in rows["api_keys"]:
            self._change("INSERT INTO api_keys (id, label_ref, owner_ref, data) VALUES (?, ?, ?, '')",
                         (key["id"], self.codec.ref("label", key["label"]), self._user_ref(key["owner"])))
            self._key_put(key)
        self._main.executemany("INSERT INTO api_key_kgs VALUES (?, ?)",
                              [(key_id, self._kg_ref(kg)) for key_id, kg in rows["api_key_kgs"]])
        for tok in rows["tokens"]:
            self._put("tokens", self.codec.ref("token", tok["jti"]), tok, insert=True)
        for rec in rows["audit"]:
            seq = rec["row_seq"]
            value = [rec["prev_hash"], *(rec[f] for f in AUDIT_FIELDS), rec["hash"]]
            self._main.execute("INSERT INTO audit VALUES (?, ?)", (seq, self.codec.seal("audit", str(seq), value)))
        self._secrets = rows["secrets"]
        self.secret = rows["secrets"]["hmac"].encode()
        return sum(len(rows[t]) for t in ("users", "kgs", "acl", "api_keys", "api_key_kgs", "tokens", "audit"))

    # --- whole-store facts ---------------------------------------------------------------

    def data_version(self) -> int:
        """Changes when any other connection commits: lets a server notice a local shell's change."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]
