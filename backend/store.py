"""The embedded store: SQLite in WAL mode with synchronous=FULL, owner-only files.

All SQL lives here. Every change runs inside `write()` (BEGIN IMMEDIATE, or a savepoint when a
batch is open), and its audit record is appended in that same transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import StoreError

APPLICATION_ID = 0x494C4144   # "ILAD": marks the file as ours, so a foreign database is refused
SCHEMA_VERSION = 1
DB_FILE = "inputlayer.db"
SECRET_FILE = "hmac.key"
GENESIS_HASH = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    password_version INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    last_login_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kgs (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acl (
    kg TEXT NOT NULL REFERENCES kgs(name) ON DELETE CASCADE,
    username TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    role TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at REAL NOT NULL,
    PRIMARY KEY (kg, username)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS acl_by_user ON acl(username);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    role TEXT NOT NULL,
    scoped INTEGER NOT NULL,
    digest TEXT UNIQUE,
    prev_digest TEXT UNIQUE,
    prev_valid_until REAL,
    created_at REAL NOT NULL,
    expires_at REAL,
    last_used_at REAL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS api_keys_by_owner ON api_keys(owner);
CREATE TABLE IF NOT EXISTS api_key_kgs (
    key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    kg TEXT NOT NULL REFERENCES kgs(name) ON DELETE CASCADE,
    PRIMARY KEY (key_id, kg)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS api_key_kgs_by_kg ON api_key_kgs(kg);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_actor ON audit(actor);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit(target);
"""

AUDIT_FIELDS = ("seq", "time", "actor", "source", "action", "target", "outcome", "detail")


def audit_hash(prev_hash: str, record: tuple) -> str:
    payload = json.dumps([prev_hash, *record], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if it does not exist (SQLite then keeps the mode for
    its -wal and -shm files)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        pass


class Store:
    def __init__(self, data_dir: str | os.PathLike, *, busy_timeout_ms: int = 30_000):
        self.dir = Path(data_dir)
        self.path = self.dir / DB_FILE
        self._lock = threading.RLock()   # one connection, shared by the server's threads
        self._depth = 0                  # nesting of write()/batch() on this connection
        self._open(busy_timeout_ms)
        self.secret = self._load_secret()

    # --- opening -------------------------------------------------------------------------

    def _open(self, busy_timeout_ms: int) -> None:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.dir.is_dir():
                raise StoreError(f"cannot open the store: {self.dir} is not a directory")
            _private_file(self.path)
        except OSError as exc:
            raise StoreError(f"cannot open the store in {self.dir}: {exc.strerror or exc}") from None
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                        timeout=busy_timeout_ms / 1000)
            self.conn.row_factory = sqlite3.Row
            app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
            tables = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id != APPLICATION_ID and (app_id != 0 or tables):
                raise StoreError(f"cannot open the store: {self.path} is not an InputLayer store "
                                 "(another program's database); choose another --data-dir")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            if app_id != APPLICATION_ID:
                self._create_schema()
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise StoreError(f"cannot open the store: {self.path} has schema version {version}, "
                                 f"this program reads version {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the store: {self.path} is not a valid database ({exc}); "
                             "restore it from a backup or choose another --data-dir") from None
        for suffix in ("-wal", "-shm"):
            extra = Path(str(self.path) + suffix)
            if extra.exists():
                os.chmod(extra, 0o600)

    def _create_schema(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if self.conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                for statement in filter(str.strip, SCHEMA.split(";")):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('audit_head', ?)", (f"0:{GENESIS_HASH}",))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def _load_secret(self) -> bytes:
        """The HMAC key for API-key digests, kept in its own 0600 file apart from the digests."""
        path = self.dir / SECRET_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            tmp = self.dir / f".{SECRET_FILE}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
            try:
                os.write(fd, os.urandom(32))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)          # atomic: a racing process keeps the first secret
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) != 32:
            raise StoreError(f"cannot open the store: {path} is damaged (expected 32 bytes)")
        return data

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    # --- transactions --------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One change, atomically: a transaction, or a savepoint inside an open batch."""
        with self._lock:
            if self._depth:
                name = f"sp{self._depth}"
                self.conn.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield self.conn
                except BaseException:
                    self.conn.execute(f"ROLLBACK TO {name}")
                    self.conn.execute(f"RELEASE {name}")
                    raise
                finally:
                    self._depth -= 1
                self.conn.execute(f"RELEASE {name}")
                return
            self._begin()
            self._depth = 1
            try:
                yield self.conn
            except BaseException:
                self._depth = 0
                self._rollback()
                raise
            self._depth = 0
            self._commit()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for a read-only command."""
        with self._lock:
            if self._depth:
                yield self.conn
                return
            try:
                self.conn.execute("BEGIN")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"cannot read the store: {exc}") from None
            try:
                yield self.conn
            finally:
                self.conn.execute("COMMIT")

    def begin_batch(self) -> None:
        """Start a transaction that every following write() joins (for --single-transaction)."""
        with self._lock:
            self._begin()
            self._depth = 1

    def end_batch(self, commit: bool) -> None:
        with self._lock:
            self._depth = 0
            self._commit() if commit else self._rollback()

    @property
    def in_batch(self) -> bool:
        return self._depth > 0

    def _begin(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot write to the store: {exc}") from None

    def _commit(self) -> None:
        try:
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback()
            raise StoreError(f"cannot write to the store: {exc}") from None

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # --- users ---------------------------------------------------------------------------

    def user(self, name: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()

    def users(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM users ORDER BY name").fetchall()

    def user_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM users").fetchone()[0]

    def admin_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM users WHERE role = 'admin'").fetchone()[0]

    def add_user(self, name: str, role: str, password_hash: str, now: float) -> None:
        self.conn.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                          (name, role, password_hash, now))

    def drop_user(self, name: str) -> None:
        self.conn.execute("DELETE FROM users WHERE name = ?", (name,))

    def set_password(self, name: str, password_hash: str, *, new_version: bool) -> None:
        """new_version ends the user's other password sessions (a rehash does not)."""
        self.conn.execute("UPDATE users SET password_hash = ?, password_version = password_version + ? "
                          "WHERE name = ?", (password_hash, int(new_version), name))

    def set_role(self, name: str, role: str) -> None:
        self.conn.execute("UPDATE users SET role = ? WHERE name = ?", (role, name))

    def touch_login(self, name: str, now: float) -> None:
        self.conn.execute("UPDATE users SET last_login_at = ? WHERE name = ?", (now, name))

    # --- knowledge graphs ------------------------------------------------------------------

    def kg(self, name: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM kgs WHERE name = ?", (name,)).fetchone()

    def kgs(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM kgs ORDER BY name").fetchall()

    def add_kg(self, name: str, creator: str, now: float) -> None:
        self.conn.execute("INSERT INTO kgs VALUES (?, ?, ?)", (name, now, creator))

    def drop_kg(self, name: str) -> None:
        self.conn.execute("DELETE FROM kgs WHERE name = ?", (name,))

    # --- ACLs ----------------------------------------------------------------------------

    def acl_entry(self, kg: str, user: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM acl WHERE kg = ? AND username = ?", (kg, user)).fetchone()

    def acl_for_kg(self, kg: str) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM acl WHERE kg = ? ORDER BY username", (kg,)).fetchall()

    def acl_for_user(self, user: str) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM acl WHERE username = ? ORDER BY kg", (user,)).fetchall()

    def grant(self, kg: str, user: str, role: str, granted_by: str, now: float) -> None:
        self.conn.execute("INSERT OR REPLACE INTO acl VALUES (?, ?, ?, ?, ?)", (kg, user, role, granted_by, now))

    def revoke(self, kg: str, user: str) -> None:
        self.conn.execute("DELETE FROM acl WHERE kg = ? AND username = ?", (kg, user))

    # --- API keys ------------------------------------------------------------------------

    def key_by_digest(self, digest: str) -> sqlite3.Row | None:
        """The key whose current or (still rotating) previous secret has this digest."""
        row = self.conn.execute("SELECT *, 0 AS is_previous FROM api_keys WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            row = self.conn.execute("SELECT *, 1 AS is_previous FROM api_keys WHERE prev_digest = ?",
                                    (digest,)).fetchone()
        return row

    def key(self, label: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM api_keys WHERE label = ?", (label,)).fetchone()

    def key_by_id(self, key_id: int) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()

    def keys(self, owner: str | None = None) -> list[sqlite3.Row]:
        if owner is None:
            return self.conn.execute("SELECT * FROM api_keys ORDER BY label").fetchall()
        return self.conn.execute("SELECT * FROM api_keys WHERE owner = ? ORDER BY label", (owner,)).fetchall()

    def key_kgs(self, key_id: int) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT kg FROM api_key_kgs WHERE key_id = ? ORDER BY kg", (key_id,))]

    def key_reaches(self, key_id: int, kg: str) -> bool:
        return self.conn.execute("SELECT 1 FROM api_key_kgs WHERE key_id = ? AND kg = ?",
                                 (key_id, kg)).fetchone() is not None

    def add_key(self, label: str, owner: str, role: str, kgs: tuple[str, ...], digest: str,
                now: float, expires_at: float | None) -> None:
        # A revoked key's label may be reused: its row only remains for `.apikey list`.
        self.conn.execute("DELETE FROM api_keys WHERE label = ? AND revoked_at IS NOT NULL", (label,))
        cur = self.conn.execute(
            "INSERT INTO api_keys (label, owner, role, scoped, digest, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (label, owner, role, int(bool(kgs)), digest, now, expires_at))
        self.conn.executemany("INSERT INTO api_key_kgs VALUES (?, ?)", [(cur.lastrowid, kg) for kg in kgs])

    def revoke_key(self, key_id: int, now: float) -> None:
        self.conn.execute("UPDATE api_keys SET revoked_at = ?, digest = NULL, prev_digest = NULL, "
                          "prev_valid_until = NULL WHERE id = ?", (now, key_id))

    def rotate_key(self, key_id: int, new_digest: str, old_valid_until: float | None) -> None:
        if old_valid_until is None:
            self.conn.execute("UPDATE api_keys SET digest = ?, prev_digest = NULL, prev_valid_until = NULL "
                              "WHERE id = ?", (new_digest, key_id))
        else:
            self.conn.execute("UPDATE api_keys SET prev_digest = digest, prev_valid_until = ?, digest = ? "
                              "WHERE id = ?", (old_valid_until, new_digest, key_id))

    def touch_key(self, key_id: int, now: float) -> None:
        self.conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))

    # --- audit ---------------------------------------------------------------------------

    def append_audit(self, now: float, actor: str, source: str, action: str, target: str,
                     outcome: str, detail: str) -> None:
        """Append one hash-chained record; must run inside write()."""
        head = self.conn.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()[0]
        last_seq, prev_hash = head.split(":")
        seq = int(last_seq) + 1
        record = (seq, now, actor, source, action, target, outcome, detail)
        digest = audit_hash(prev_hash, record)
        self.conn.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (*record, prev_hash, digest))
        self.conn.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", (f"{seq}:{digest}",))

    def audit_records(self, *, limit: int, actor: str | None, action: str | None,
                      since: float | None) -> list[sqlite3.Row]:
        clauses, params = [], []
        if actor is not None:
            clauses.append("(actor = ? OR target = ?)")
            params += [actor, actor]
        if action is not None:
            clauses.append("(action = ? OR action LIKE ? ESCAPE '\\')")
            params += [action, action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ".%"]
        if since is not None:
            clauses.append("time >= ?")
            params.append(since)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self.conn.execute(f"SELECT * FROM audit {where} ORDER BY seq DESC LIMIT ?",
                                 (*params, limit)).fetchall()

    def verify_audit(self) -> tuple[int, str | None]:
        """(records checked, None) or (seq, what is wrong) for the first record that fails."""
        prev_hash, expected_seq, count = GENESIS_HASH, 1, 0
        for row in self.conn.execute("SELECT * FROM audit ORDER BY rowid"):
            record = tuple(row[f] for f in AUDIT_FIELDS)
            if row["seq"] != expected_seq:
                return count, f"Audit log broken at record {expected_seq}: record missing or out of order"
            if row["prev_hash"] != prev_hash:
                return count, f"Audit log broken at record {row['seq']}: chain does not link to the record before"
            if audit_hash(prev_hash, record) != row["hash"]:
                return count, f"Audit log broken at record {row['seq']}: contents do not match its hash"
            prev_hash, expected_seq, count = row["hash"], expected_seq + 1, count + 1
        head = self.conn.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
        if head is None or head[0] != f"{count}:{prev_hash}":
            return count, f"Audit log broken at record {count + 1}: the latest records were removed"
        return count, None

    # --- whole-store facts ---------------------------------------------------------------

    def data_version(self) -> int:
        """Changes when any other connection commits: lets a server notice a local shell's change."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]
