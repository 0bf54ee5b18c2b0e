"""SQLiteStore: the Store interface on one SQLite file, and copying a whole store (rekey)."""

from __future__ import annotations

from typing import Any

from ..interface import AUDIT_FIELDS
from ..secrets import ServerSecrets, pending_path, write_secrets
from .audit import AuditChain
from .keys import Keys
from .tables import Tables


class SQLiteStore(Tables, Keys, AuditChain):
    """SQLite in WAL mode with synchronous=FULL, owner-only files: see the modules beside this
    one for its connections and transactions, row caches, tables and audit chain."""

    def export_rows(self) -> dict[str, Any]:
        """Every stored value, opened: what `rekey` copies into a store with another key."""
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
        """Fill this (new, empty) store with `export_rows()` of another; inside write()."""
        self._set_meta("secrets_fingerprint", rows["secrets_fingerprint"])
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
            self.add_token(tok)
        for rec in rows["audit"]:
            seq = rec["row_seq"]
            value = [rec["prev_hash"], *(rec[f] for f in AUDIT_FIELDS), rec["hash"]]
            self._main.execute("INSERT INTO audit VALUES (?, ?)", (seq, self.codec.seal("audit", str(seq), value)))
        return sum(len(rows[t]) for t in ("users", "kgs", "acl", "api_keys", "api_key_kgs", "tokens", "audit"))

    def replace_secrets(self, new: ServerSecrets) -> None:
        """rotate-secrets, inside write(): `secrets.new` is written first and becomes `secrets`
        once this transaction has committed the new fingerprint (the caller promotes it; an
        interrupted rotation is finished or undone when the store is next opened). This store
        works under the new secrets from here on: if the transaction fails, close it."""
        write_secrets(pending_path(self.secrets_file), self.codec, new, replace=True)
        self._use_secrets(new)
        self._rechain()
        self._change("DELETE FROM tokens")
        self._cache.clear()
        self._set_meta("secrets_fingerprint", {"sha256": new.fingerprint()})
