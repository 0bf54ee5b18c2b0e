"""The SQLite store's tables of users, knowledge graphs, ACL entries and session tokens.

Each row is its lookup ref(s) plus one value the codec keeps plain or sealed; a user's or a
graph's removal cascades to the rows that name it.
"""

from __future__ import annotations

import secrets

from .rows import Rows, known


class Tables(Rows):
    # --- users ---------------------------------------------------------------------------

    def user(self, name: str) -> dict | None:
        return self._get("users", self._user_ref(name))

    def users(self) -> list[dict]:
        return self._all("users", "name")

    def user_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM users").fetchone()[0]

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
        self._change("DELETE FROM users WHERE ref = ?", (self._user_ref(name),))
        self._cache.clear()     # cascades reach other tables

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
        self._change("DELETE FROM kgs WHERE ref = ?", (self._kg_ref(name),))
        self._cache.clear()

    # --- ACLs ----------------------------------------------------------------------------

    def _acl_open(self, kg_ref: str, user_ref: str, data: bytes | str) -> dict:
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

    # --- session tokens ------------------------------------------------------------------

    def token(self, jti: str) -> dict | None:
        return self._get("tokens", self.codec.ref("token", jti))

    def add_token(self, record: dict) -> None:
        ref = self.codec.ref("token", record["jti"])
        self._change("INSERT INTO tokens (ref, key_id, expires_at, data) VALUES (?, ?, ?, ?)",
                     (ref, record["key_id"], record["expires_at"],
                      self.codec.seal("tokens", ref, {"revoked_at": None, **record})))
        self._cache.pop(("tokens", ref), None)

    def revoke_token(self, jti: str, now: float) -> None:
        self._put("tokens", self.codec.ref("token", jti), {**known(self.token(jti), "token"), "revoked_at": now}, insert=False)

    def forget_expired_tokens(self, now: float) -> None:
        """Expired tokens fail on their own; their records only need to live that long. By the
        index: the cost does not grow with the number of live tokens."""
        # Rows this transaction cached stay: an expired token is refused by its expiry anyway.
        self._change("DELETE FROM tokens WHERE expires_at < ?", (now,))

    def end_key_tokens(self, key_id: int) -> None:
        self._change("DELETE FROM tokens WHERE key_id = ?", (key_id,))
        self._forget_cached("tokens")

    def _forget_cached(self, table: str) -> None:
        for cached in [k for k in self._cache if k[0] == table]:
            del self._cache[cached]
