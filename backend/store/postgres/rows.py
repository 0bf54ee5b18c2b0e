"""The PostgreSQL store's rows: users, knowledge graphs, ACL entries, API keys, session tokens.

Each row is its lookup ref(s) plus one `data` value the codec keeps as JSON or seals with
AES-256-GCM; a user's or a graph's removal cascades to the rows that name it.
"""

from __future__ import annotations

import secrets
from typing import Any

from ...errors import StoreError
from .base import PgBase

ROW_TABLES = ("users", "kgs", "tokens")


class PgRows(PgBase):
    # --- row helpers ---------------------------------------------------------------------

    def _change(self, table: str, sql: str, params=()) -> None:
        """Every write of a row other than the audit log's goes through here."""
        self._changed.add(table)
        self._main.execute(sql, params)

    def _get(self, table: str, ref: str) -> dict | None:
        return self._memo((table, ref), self._load_row, table, ref, writer_too=True)

    def _load_row(self, table: str, ref: str) -> dict | None:
        assert table in ROW_TABLES
        row = self.conn.execute(f"SELECT data FROM {table} WHERE ref = %s", (ref,)).fetchone()
        return None if row is None else self.codec.open(table, ref, row[0])

    def _all(self, table: str, sort_key: str) -> list[dict]:
        assert table in ROW_TABLES
        rows = self.conn.execute(f"SELECT ref, data FROM {table}")
        return sorted((self.codec.open(table, ref, data) for ref, data in rows),
                      key=lambda r: r[sort_key])

    def _put(self, table: str, ref: str, value: dict, *, insert: bool) -> None:
        assert table in ROW_TABLES
        sealed = self.codec.seal(table, ref, value)
        if insert:
            self._change(table, f"INSERT INTO {table} (ref, data) VALUES (%s, %s)", (ref, sealed))
        else:
            self._change(table, f"UPDATE {table} SET data = %s WHERE ref = %s", (sealed, ref))
        self._cache.pop((table, ref), None)

    # --- users ---------------------------------------------------------------------------

    def _user_ref(self, name: str) -> str:
        return self.codec.ref("user", name)

    def user(self, name: str) -> dict | None:
        return self._get("users", self._user_ref(name))

    def users(self) -> list[dict]:
        return self._all("users", "name")

    def user_count(self) -> int:
        return int(self._scalar("SELECT count(*) FROM users"))

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
        self._change("users", "DELETE FROM users WHERE ref = %s", (self._user_ref(name),))
        self._changed.update(("acl", "api_keys"))       # the cascade reaches them
        self._cache.clear()

    def _update_user(self, name: str, **changes) -> None:
        user = self.user(name)
        if user is not None:
            self._put("users", self._user_ref(name), {**user, **changes}, insert=False)

    def set_password(self, name: str, password_hash: str, *, new_version: bool) -> None:
        """new_version ends the user's other password sessions (a rehash does not)."""
        user = self.user(name)
        if user is not None:
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
        self._change("kgs", "DELETE FROM kgs WHERE ref = %s", (self._kg_ref(name),))
        self._changed.update(("acl", "api_keys"))
        self._cache.clear()

    # --- ACLs ----------------------------------------------------------------------------

    def _acl_open(self, kg_ref: str, user_ref: str, data) -> dict:
        return self.codec.open("acl", f"{kg_ref}/{user_ref}", data)

    def acl_entry(self, kg: str, user: str) -> dict | None:
        kg_ref, user_ref = self._kg_ref(kg), self._user_ref(user)
        return self._memo(("acl", kg_ref, user_ref), self._load_acl_entry, kg_ref, user_ref, writer_too=False)

    def _load_acl_entry(self, kg_ref: str, user_ref: str) -> dict | None:
        row = self.conn.execute("SELECT data FROM acl WHERE kg_ref = %s AND user_ref = %s",
                                (kg_ref, user_ref)).fetchone()
        return None if row is None else self._acl_open(kg_ref, user_ref, row[0])

    def acl_for_kg(self, kg: str) -> list[dict]:
        kg_ref = self._kg_ref(kg)
        rows = self.conn.execute("SELECT user_ref, data FROM acl WHERE kg_ref = %s", (kg_ref,))
        return sorted((self._acl_open(kg_ref, u, d) for u, d in rows), key=lambda e: e["username"])

    def acl_for_user(self, user: str) -> list[dict]:
        user_ref = self._user_ref(user)
        rows = self.conn.execute("SELECT kg_ref, data FROM acl WHERE user_ref = %s", (user_ref,))
        return sorted((self._acl_open(k, user_ref, d) for k, d in rows), key=lambda e: e["kg"])

    def grant(self, kg: str, user: str, role: str, granted_by: str, now: float) -> None:
        kg_ref, user_ref = self._kg_ref(kg), self._user_ref(user)
        value = {"kg": kg, "username": user, "role": role, "granted_by": granted_by, "granted_at": now}
        self._change("acl", "INSERT INTO acl VALUES (%s, %s, %s) "
                     "ON CONFLICT (kg_ref, user_ref) DO UPDATE SET data = excluded.data",
                     (kg_ref, user_ref, self.codec.seal("acl", f"{kg_ref}/{user_ref}", value)))

    def revoke(self, kg: str, user: str) -> None:
        self._change("acl", "DELETE FROM acl WHERE kg_ref = %s AND user_ref = %s",
                     (self._kg_ref(kg), self._user_ref(user)))

    # --- API keys ------------------------------------------------------------------------

    def _key_open(self, row) -> dict:
        key_id, data = row
        return {"id": key_id, **self.codec.open("api_keys", str(key_id), data)}

    def _key_put(self, key: dict) -> None:
        value = {k: v for k, v in key.items() if k != "id"}
        digest, prev = key.get("digest"), key.get("prev_digest")
        self._change("api_keys",
                     "UPDATE api_keys SET digest_ref = %s, prev_digest_ref = %s, data = %s WHERE id = %s",
                     (digest and self.codec.ref("digest", digest), prev and self.codec.ref("digest", prev),
                      self.codec.seal("api_keys", str(key["id"]), value), key["id"]))

    def key_by_digest(self, digest: str) -> dict | None:
        """The key whose current or previous (rotating) secret has this digest."""
        ref = self.codec.ref("digest", digest)
        return self._memo(("digest", ref), self._load_key_by_digest_ref, ref, writer_too=False)

    def _load_key_by_digest_ref(self, ref: str) -> dict | None:
        row = self.conn.execute("SELECT id, data FROM api_keys WHERE digest_ref = %s OR prev_digest_ref = %s",
                                (ref, ref)).fetchone()
        return None if row is None else self._key_open(row)

    def key(self, label: str) -> dict | None:
        row = self.conn.execute("SELECT id, data FROM api_keys WHERE label_ref = %s",
                                (self.codec.ref("label", label),)).fetchone()
        return None if row is None else self._key_open(row)

    def key_by_id(self, key_id: int) -> dict | None:
        return self._memo(("key", key_id), self._load_key_by_id, key_id, writer_too=False)

    def _load_key_by_id(self, key_id: int) -> dict | None:
        row = self.conn.execute("SELECT id, data FROM api_keys WHERE id = %s", (key_id,)).fetchone()
        return None if row is None else self._key_open(row)

    def keys(self, owner: str | None = None) -> list[dict]:
        if owner is None:
            rows = self.conn.execute("SELECT id, data FROM api_keys")
        else:
            rows = self.conn.execute("SELECT id, data FROM api_keys WHERE owner_ref = %s", (self._user_ref(owner),))
        return sorted((self._key_open(r) for r in rows), key=lambda k: k["label"])

    def key_kgs(self, key_id: int) -> list[str]:
        return list(self._memo(("key_kgs", key_id), self._load_key_kgs, key_id, writer_too=False))

    def _load_key_kgs(self, key_id: int) -> list[str]:
        rows = self.conn.execute("SELECT k.ref, k.data FROM api_key_kgs s JOIN kgs k ON k.ref = s.kg_ref "
                                 "WHERE s.key_id = %s", (key_id,))
        return sorted(self.codec.open("kgs", ref, data)["name"] for ref, data in rows)

    def add_key(self, label: str, owner: str, role: str, kgs: tuple[str, ...], digest: str,
                now: float, expires_at: float | None, *, ips: tuple[str, ...] = (),
                rate: tuple[int, int] | None = None) -> None:
        label_ref = self.codec.ref("label", label)
        # A revoked key's label may be reused: its row only remains for `.apikey list`.
        self._change("api_keys", "DELETE FROM api_keys WHERE label_ref = %s", (label_ref,))
        owner_row = self.user(owner)
        if owner_row is None:
            raise StoreError(f"no user {owner!r}")
        self._changed.add("api_keys")
        key_id = self._scalar("INSERT INTO api_keys (label_ref, owner_ref, data) VALUES (%s, %s, %s) RETURNING id",
                              (label_ref, self._user_ref(owner), self._plain("")))
        self._key_put({"id": key_id, "label": label, "owner": owner, "owner_id": owner_row["id"], "role": role,
                       "scoped": bool(kgs),
                       "digest": digest, "prev_digest": None, "prev_valid_until": None, "created_at": now,
                       "expires_at": expires_at, "last_used_at": None, "revoked_at": None,
                       "ips": list(ips), "rate": list(rate) if rate else None})
        for kg in kgs:
            self._change("api_keys", "INSERT INTO api_key_kgs VALUES (%s, %s)", (key_id, self._kg_ref(kg)))

    def _existing_key(self, key_id: int) -> dict:
        key = self.key_by_id(key_id)
        if key is None:
            raise StoreError(f"no API key with id {key_id}")
        return key

    def update_key(self, key_id: int, **changes: Any) -> None:
        """Change a key's role, expires_at, ips or rate in place (its secret stays)."""
        self._key_put({**self._existing_key(key_id), **changes})

    def set_key_scope(self, key_id: int, kgs: tuple[str, ...] | None) -> None:
        """Limit a key to `kgs`, or (None) let it reach every KG."""
        self._change("api_keys", "DELETE FROM api_key_kgs WHERE key_id = %s", (key_id,))
        for kg in kgs or ():
            self._change("api_keys", "INSERT INTO api_key_kgs VALUES (%s, %s)", (key_id, self._kg_ref(kg)))
        self.update_key(key_id, scoped=kgs is not None)

    def revoke_key(self, key_id: int, now: float) -> None:
        key = self._existing_key(key_id)
        self._key_put({**key, "revoked_at": now, "digest": None, "prev_digest": None, "prev_valid_until": None})

    def rotate_key(self, key_id: int, new_digest: str, old_valid_until: float | None) -> None:
        key = self._existing_key(key_id)
        previous = key["digest"] if old_valid_until is not None else None
        self._key_put({**key, "digest": new_digest, "prev_digest": previous, "prev_valid_until": old_valid_until})

    def touch_key(self, key_id: int, now: float) -> None:
        self._key_put({**self._existing_key(key_id), "last_used_at": now})

    # --- session tokens ------------------------------------------------------------------

    def token(self, jti: str) -> dict | None:
        return self._get("tokens", self.codec.ref("token", jti))

    def add_token(self, record: dict) -> None:
        ref = self.codec.ref("token", record["jti"])
        self._change("tokens", "INSERT INTO tokens (ref, key_id, expires_at, data) VALUES (%s, %s, %s, %s)",
                     (ref, record["key_id"], record["expires_at"],
                      self.codec.seal("tokens", ref, {"revoked_at": None, **record})))
        self._cache.pop(("tokens", ref), None)

    def revoke_token(self, jti: str, now: float) -> None:
        token = self.token(jti)
        if token is not None:
            self._put("tokens", self.codec.ref("token", jti), {**token, "revoked_at": now}, insert=False)

    def forget_expired_tokens(self, now: float) -> None:
        """Expired tokens fail on their own; their records only need to live that long. By the
        index: the cost does not grow with the number of live tokens."""
        self._change("tokens", "DELETE FROM tokens WHERE expires_at < %s", (now,))

    def end_key_tokens(self, key_id: int) -> None:
        """Delete every token issued through this key (it was revoked or rotated)."""
        self._change("tokens", "DELETE FROM tokens WHERE key_id = %s", (key_id,))
        for cached in [k for k in self._cache if k[0] == "tokens"]:
            del self._cache[cached]
