"""The PostgreSQL store: the same rows, API and guarantees as the SQLite store.

Every row is a lookup ref (or refs) plus one `data` value that the codec keeps as JSON or seals
with AES-256-GCM. Every change runs inside write(), and its audit record is appended in that same
transaction (see base.py for how writers from several nodes are serialized).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any

from ...errors import StoreError
from ..chain import matching_records, verify_chain
from ..codec import Codec, encode_json
from ..interface import AUDIT_FIELDS, GENESIS_HASH, audit_payload
from ..secrets import ServerSecrets
from . import schema
from .base import PgBase

ROW_TABLES = ("users", "kgs", "tokens")


class PostgresStore(PgBase):
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

    # --- audit ---------------------------------------------------------------------------

    def append_audit(self, now: float, actor: str, source: str, action: str, target: str,
                     outcome: str, detail: str) -> None:
        """Append one hash-chained record; must run inside write(), whose advisory lock makes
        this the only writer of the chain's head until it commits."""
        head = self._current_head()
        seq = head["seq"] + 1
        record = (seq, now, actor, source, action, target, outcome, detail)
        text, digest = audit_payload(self._audit_mac, head["hash"], record)
        self._main.execute("INSERT INTO audit VALUES (%s, %s)", (seq, self.codec.seal_text("audit", str(seq), text)))
        self._audit_head = {"seq": seq, "hash": digest}
        self._head_unsaved = True

    def _current_head(self) -> dict:
        """The chain's head as this thread sees it: its own unsaved appends included."""
        if self._owner == threading.get_ident() and self._audit_head is not None:
            return self._audit_head
        return self._meta("audit_head")

    def _audit_rows(self, order: str) -> Iterator[dict]:
        assert order in ("ASC", "DESC")
        cursor = self.conn.cursor()
        for seq, data in cursor.execute(f"SELECT seq, data FROM audit ORDER BY seq {order}"):
            prev_hash, *record, digest = self.codec.open("audit", str(seq), data)
            yield {**dict(zip(AUDIT_FIELDS, record)), "prev_hash": prev_hash, "hash": digest, "row_seq": seq}

    def audit_records(self, *, limit: int, actor: str | None, action: str | None,
                      since: float | None, outcome: str | None = None,
                      hide_action: str | None = None) -> list[dict]:
        """Newest first; `actor` matches the actor or the target, `action` a name or a prefix,
        `outcome` exactly; records whose action `hide_action` names (or prefixes) are left out."""
        return matching_records(self._audit_rows("DESC"), limit=limit, actor=actor, action=action, since=since,
                                outcome=outcome, hide_action=hide_action)

    def verify_audit(self) -> tuple[int, str | None]:
        """(records checked, None) or (count, what is wrong) at the first record that fails."""
        unsaved = self._owner == threading.get_ident() and self._audit_head is not None
        return verify_chain(self._audit_rows("ASC"), self._current_head, self._audit_mac, head_sealed=not unsaved)

    def _rechain(self) -> None:
        """Re-key every record's hash under the current audit key (rotate-secrets); the caller
        has verified the old chain. Inside write(): the new head is saved, sealed, at commit."""
        prev_hash, last = GENESIS_HASH, 0
        for seq, data in self._main.execute("SELECT seq, data FROM audit ORDER BY seq").fetchall():
            _, *record, _ = self.codec.open("audit", str(seq), data)
            text, prev_hash = audit_payload(self._audit_mac, prev_hash, tuple(record))
            self._main.execute("UPDATE audit SET data = %s WHERE seq = %s",
                               (self.codec.seal_text("audit", str(seq), text), seq))
            last = seq
        self._audit_head = {"seq": last, "hash": prev_hash}
        self._head_unsaved = True

    def replace_secrets(self, new: ServerSecrets) -> None:
        """rotate-secrets, inside write(): every token ends, the audit chain is re-keyed under
        new.audit and the fingerprint becomes new's. The secrets file is the operator's: every
        node must be given the new one (a node with the old one then refuses to start)."""
        self._use_secrets(new)
        self._rechain()
        self._change("tokens", "DELETE FROM tokens")
        self._cache.clear()
        self._set_meta("secrets_fingerprint", {"sha256": new.fingerprint()})

    # --- whole-store copy ----------------------------------------------------------------

    def export_rows(self) -> dict[str, Any]:
        """Every stored value, opened: what a copy to another store takes."""
        kg_names = {ref: self.codec.open("kgs", ref, data)["name"]
                    for ref, data in self.conn.execute("SELECT ref, data FROM kgs")}
        return {
            "secrets_fingerprint": self._meta("secrets_fingerprint"),
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

    def import_rows(self, rows: dict[str, Any]) -> int:
        """Fill this (new, empty) store with export_rows() of another; inside write(). The
        secrets come from the server secrets file, so they must be the source's already."""
        if rows["secrets_fingerprint"]["sha256"] != self.secrets.fingerprint():
            raise StoreError("the server secrets file does not hold the secrets of the store being copied")
        self._set_meta("audit_head", rows["audit_head"])
        for user in rows["users"]:
            self._put("users", self._user_ref(user["name"]), user, insert=True)
        for kg in rows["kgs"]:
            self._put("kgs", self._kg_ref(kg["name"]), kg, insert=True)
        for entry in rows["acl"]:
            self.grant(entry["kg"], entry["username"], entry["role"], entry["granted_by"], entry["granted_at"])
        for key in rows["api_keys"]:
            self._change("api_keys", "INSERT INTO api_keys (id, label_ref, owner_ref, data) VALUES (%s, %s, %s, %s)",
                         (key["id"], self.codec.ref("label", key["label"]), self._user_ref(key["owner"]),
                          self._plain("")))
            self._key_put(key)
        # Explicit ids leave the identity behind: new keys must continue after the copied ones.
        self._main.execute("SELECT setval(pg_get_serial_sequence('api_keys', 'id'), "
                           "greatest((SELECT max(id) FROM api_keys), 1))")
        for key_id, kg in rows["api_key_kgs"]:
            self._change("api_keys", "INSERT INTO api_key_kgs VALUES (%s, %s)", (key_id, self._kg_ref(kg)))
        for tok in rows["tokens"]:
            self.add_token(tok)
        for rec in rows["audit"]:
            seq = rec["row_seq"]
            value = encode_json([rec["prev_hash"], *(rec[f] for f in AUDIT_FIELDS), rec["hash"]])
            self._main.execute("INSERT INTO audit VALUES (%s, %s)", (seq, self.codec.seal_text("audit", str(seq), value)))
        return sum(len(rows[t]) for t in ("users", "kgs", "acl", "api_keys", "api_key_kgs", "tokens", "audit"))

    def rekey(self, new_key: bytes | None) -> int:
        """Re-seal everything under `new_key` (None: plaintext) in one transaction: the schema is
        dropped and made anew under the new key and refilled, so a failure (or a crash) leaves
        the store as it was, under its old key. Returns the number of rows copied."""
        old_codec = self.codec
        try:
            with self.write():
                rows = self.export_rows()
                problem = self.verify_audit()[1]
                if problem:
                    raise StoreError(f"refusing to rekey: {problem}")
                generation = self._scalar("SELECT n FROM generation")
                self._main.execute(f"DROP SCHEMA {schema.NAMESPACE} CASCADE")
                self.codec = Codec(new_key)
                schema.create(self._main, self.codec, self.shown_url, self.secrets)
                # Readers elsewhere compare this counter: it must move on, never start over.
                self._main.execute("UPDATE generation SET n = %s", (generation,))
                copied = self.import_rows(rows)
        except BaseException:
            self.codec = old_codec          # the transaction rolled back: the old key still holds
            raise
        return copied
