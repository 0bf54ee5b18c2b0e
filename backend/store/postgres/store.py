"""The PostgreSQL store: the same rows, API and guarantees as the SQLite store.

Every row is a lookup ref (or refs) plus one `data` value that the codec keeps as JSON or seals
with AES-256-GCM. Every change runs inside write(), and its audit record is appended in that same
transaction (see base.py for how writers from several nodes are serialized).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ...errors import StoreError
from ..chain import matching_records, verify_chain
from ..codec import Codec, encode_json
from ..interface import AUDIT_FIELDS, GENESIS_HASH, audit_payload
from ..secrets import ServerSecrets
from . import schema
from .rows import PgRows


class PostgresStore(PgRows):
    """The Store on PostgreSQL: connections and transactions in base.py, snapshots in reads.py,
    rows in rows.py; here the audit chain, whole-store copies, rekey and the secrets' rotation."""

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
