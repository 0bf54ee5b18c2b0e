"""The rows both stores keep, written once: users, knowledge graphs, ACL entries and session
tokens, through the row caches.

Each row is its lookup ref(s) plus one `data` value the codec keeps plain or sealed; a user's or
a graph's removal cascades to the rows that name it. SQL here uses `?` placeholders (the
PostgreSQL store converts them). The store below supplies the dialect: _query (a read on this
thread's connection), _change (a row write, held back or not, naming its table for NOTIFY),
_write and _write_audit (writes that change no row others cache), _insert_id, _plain.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from .codec import Codec

ROW_TABLES = ("users", "kgs", "tokens")
READER_CACHE_ROWS = 10_000      # bounds the memory of a reader's row cache
_UNKNOWN = object()             # not in a row cache (None there means: no such row)


def known(row: dict | None, what: str) -> dict:
    """A row the caller found before changing it, in this same transaction."""
    if row is None:
        raise StoreError(f"no such {what}")
    return row


class Tables:
    """The row layer; the store's connection and transaction classes set these up."""
    codec: Codec
    _owner: int | None
    _tls: threading.local
    _cache: dict[Any, Any]
    _changed: set[str]                            # tables this transaction changed
    _query: Callable[..., Any]                    # (sql, params=()) -> a cursor
    _change: Callable[..., None]                  # (table, sql, params=())
    _write: Callable[[str, Any], None]            # an audit row rewrite (rechain)
    _write_audit: Callable[[str, Any], None]      # an audit append
    _insert_id: Callable[[str, str, Any], int]    # (table, sql, params) -> the new row's id
    _plain: Callable[[str], str | bytes]          # an unsealed value in the `data` columns' type

    # --- row helpers ---------------------------------------------------------------------

    def _memo(self, key: tuple, load: Callable[..., Any], *args: Any, writer_too: bool) -> Any:
        """`load(*args)`, remembered: by the writer within its transaction (only for lookups its
        own writes keep up to date), by a reader for as long as no commit has changed a row."""
        if self._owner == threading.get_ident():
            if not writer_too:
                return load(*args)
            value = self._cache.get(key, _UNKNOWN)
            if value is _UNKNOWN:
                value = self._cache[key] = load(*args)
            return value
        tls = self._tls
        if getattr(tls, "conn", None) is None:
            return load(*args)
        cache = tls.cache
        value = cache.get(key, _UNKNOWN)
        if value is not _UNKNOWN:
            tls.served = True               # see cached.py: a read that used the cache
            return value
        if len(cache) >= READER_CACHE_ROWS:
            cache.clear()
        value = load(*args)
        # The load may have taken the read's snapshot, whose generation has a cache of its own.
        tls.cache[key] = value
        return value

    def _get(self, table: str, ref: str) -> dict | None:
        return self._memo((table, ref), self._load_row, table, ref, writer_too=True)

    def _load_row(self, table: str, ref: str) -> dict | None:
        assert table in ROW_TABLES
        row = self._query(f"SELECT data FROM {table} WHERE ref = ?", (ref,)).fetchone()
        return None if row is None else self.codec.open(table, ref, row[0])

    def _all(self, table: str, sort_key: str) -> list[dict]:
        assert table in ROW_TABLES
        rows = [self.codec.open(table, ref, data) for ref, data in self._query(f"SELECT ref, data FROM {table}")]
        return sorted(rows, key=lambda r: r[sort_key])

    def _put(self, table: str, ref: str, value: dict, *, insert: bool) -> None:
        assert table in ROW_TABLES
        sealed = self.codec.seal(table, ref, value)
        if insert:
            self._change(table, f"INSERT INTO {table} (ref, data) VALUES (?, ?)", (ref, sealed))
        else:
            self._change(table, f"UPDATE {table} SET data = ? WHERE ref = ?", (sealed, ref))
        self._cache.pop((table, ref), None)

    def _user_ref(self, name: str) -> str:
        return self.codec.ref("user", name)

    def _kg_ref(self, name: str) -> str:
        return self.codec.ref("kg", name)

    # --- users ---------------------------------------------------------------------------

    def user(self, name: str) -> dict | None:
        return self._get("users", self._user_ref(name))

    def users(self) -> list[dict]:
        return self._all("users", "name")

    def user_count(self) -> int:
        return int(self._query("SELECT count(*) FROM users").fetchone()[0])

    def admin_count(self) -> int:
        return sum(1 for u in self.users() if u["role"] == "admin")

    def add_user(self, name: str, role: str, password_hash: str, now: float) -> str:
        """The id is random (128 bits), so it is never reused: not after a drop, not by a copy."""
        user_id = secrets.token_hex(16)
        self._put("users", self._user_ref(name), {"id": user_id, "name": name, "role": role,
                                                  "password_hash": password_hash, "password_version": 1,
                                                  "created_at": now, "last_login_at": None}, insert=True)
        return user_id

    def drop_user(self, name: str) -> None:
        self._change("users", "DELETE FROM users WHERE ref = ?", (self._user_ref(name),))
        self._changed.update(("acl", "api_keys"))       # the cascade reaches them
        self._cache.clear()

    def _update_user(self, name: str, **changes: object) -> None:
        user = self.user(name)
        if user is not None:
            self._put("users", self._user_ref(name), {**user, **changes}, insert=False)

    def set_password(self, name: str, password_hash: str, *, new_version: bool) -> None:
        """new_version ends the user's other password sessions (a rehash does not)."""
        user = known(self.user(name), "user")
        self._update_user(name, password_hash=password_hash,
                          password_version=user["password_version"] + int(new_version))

    def set_role(self, name: str, role: str) -> None:
        self._update_user(name, role=role)

    def touch_login(self, name: str, now: float) -> None:
        self._update_user(name, last_login_at=now)

    # --- knowledge graphs ----------------------------------------------------------------

    def kg(self, name: str) -> dict | None:
        return self._get("kgs", self._kg_ref(name))

    def kgs(self) -> list[dict]:
        return self._all("kgs", "name")

    def add_kg(self, name: str, creator: str, now: float) -> None:
        self._put("kgs", self._kg_ref(name), {"name": name, "created_at": now, "created_by": creator}, insert=True)

    def drop_kg(self, name: str) -> None:
        self._change("kgs", "DELETE FROM kgs WHERE ref = ?", (self._kg_ref(name),))
        self._changed.update(("acl", "api_keys"))
        self._cache.clear()

    # --- ACLs ----------------------------------------------------------------------------

    def _acl_open(self, kg_ref: str, user_ref: str, data: bytes | str) -> dict:
        return self.codec.open("acl", f"{kg_ref}/{user_ref}", data)

    def acl_entry(self, kg: str, user: str) -> dict | None:
        kg_ref, user_ref = self._kg_ref(kg), self._user_ref(user)
        return self._memo(("acl", kg_ref, user_ref), self._load_acl_entry, kg_ref, user_ref, writer_too=False)

    def _load_acl_entry(self, kg_ref: str, user_ref: str) -> dict | None:
        row = self._query("SELECT data FROM acl WHERE kg_ref = ? AND user_ref = ?", (kg_ref, user_ref)).fetchone()
        return None if row is None else self._acl_open(kg_ref, user_ref, row[0])

    def acl_for_kg(self, kg: str) -> list[dict]:
        kg_ref = self._kg_ref(kg)
        rows = self._query("SELECT user_ref, data FROM acl WHERE kg_ref = ?", (kg_ref,))
        return sorted((self._acl_open(kg_ref, u, d) for u, d in rows), key=lambda e: e["username"])

    def acl_for_user(self, user: str) -> list[dict]:
        user_ref = self._user_ref(user)
        rows = self._query("SELECT kg_ref, data FROM acl WHERE user_ref = ?", (user_ref,))
        return sorted((self._acl_open(k, user_ref, d) for k, d in rows), key=lambda e: e["kg"])

    def grant(self, kg: str, user: str, role: str, granted_by: str, now: float) -> None:
        kg_ref, user_ref = self._kg_ref(kg), self._user_ref(user)
        value = {"kg": kg, "username": user, "role": role, "granted_by": granted_by, "granted_at": now}
        # An upsert rewrites the row in place; SQLite's REPLACE would delete and re-insert it (~30 % slower).
        self._change("acl", "INSERT INTO acl VALUES (?, ?, ?) "
                     "ON CONFLICT (kg_ref, user_ref) DO UPDATE SET data = excluded.data",
                     (kg_ref, user_ref, self.codec.seal("acl", f"{kg_ref}/{user_ref}", value)))

    def revoke(self, kg: str, user: str) -> None:
        self._change("acl", "DELETE FROM acl WHERE kg_ref = ? AND user_ref = ?",
                     (self._kg_ref(kg), self._user_ref(user)))

    # --- session tokens ------------------------------------------------------------------

    def token(self, jti: str) -> dict | None:
        return self._get("tokens", self.codec.ref("token", jti))

    def add_token(self, record: dict) -> None:
        ref = self.codec.ref("token", record["jti"])
        self._change("tokens", "INSERT INTO tokens (ref, key_id, expires_at, data) VALUES (?, ?, ?, ?)",
                     (ref, record["key_id"], record["expires_at"],
                      self.codec.seal("tokens", ref, {"revoked_at": None, **record})))
        self._cache.pop(("tokens", ref), None)

    def revoke_token(self, jti: str, now: float) -> None:
        token = known(self.token(jti), "token")
        self._put("tokens", self.codec.ref("token", jti), {**token, "revoked_at": now}, insert=False)

    def forget_expired_tokens(self, now: float) -> None:
        """Expired tokens fail on their own; their records only need to live that long. By the
        index: the cost does not grow with the number of live tokens."""
        # Rows this transaction cached stay: an expired token is refused by its expiry anyway.
        self._change("tokens", "DELETE FROM tokens WHERE expires_at < ?", (now,))

    def end_key_tokens(self, key_id: int) -> None:
        """Delete every token issued through this key (it was revoked or rotated)."""
        self._change("tokens", "DELETE FROM tokens WHERE key_id = ?", (key_id,))
        for cached in [k for k in self._cache if k[0] == "tokens"]:
            del self._cache[cached]
