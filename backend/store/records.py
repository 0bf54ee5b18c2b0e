"""The audit chain and whole-store copies, written once for both stores.

Audit records are chained by HMAC under the audit key, each appended in the transaction of the
change it records; the chain's head (sealed by the same key) is saved once per commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from .apikeys import Keys
from .chain import matching_records, verify_chain
from .interface import AUDIT_FIELDS, GENESIS_HASH, audit_payload
from .secrets import ServerSecrets

_COPIED = ("users", "kgs", "acl", "api_keys", "api_key_kgs", "tokens", "audit")


class Records(Keys):
    _audit_head: dict | None        # the chain's head after this transaction's appends
    _head_unsaved: bool
    _audit_mac: Any
    _meta: Callable[[str], dict]
    _set_meta: Callable[[str, Any], None]
    _use_secrets: Callable[[ServerSecrets], None]

    # --- audit ---------------------------------------------------------------------------

    def append_audit(self, now: float, actor: str, source: str, action: str, target: str,
                     outcome: str, detail: str) -> None:
        """Append one hash-chained record; must run inside write(), which makes this the only
        writer of the chain's head until it commits."""
        head = self._current_head()
        seq = head["seq"] + 1
        record = (seq, now, actor, source, action, target, outcome, detail)
        text, digest = audit_payload(self._audit_mac, head["hash"], record)
        self._write_audit("INSERT INTO audit VALUES (?, ?)", (seq, self.codec.seal_text("audit", str(seq), text)))
        self._audit_head = {"seq": seq, "hash": digest}
        self._head_unsaved = True

    def _current_head(self) -> dict:
        """The chain's head as this thread sees it: its own unsaved appends included."""
        if self._owner == threading.get_ident() and self._audit_head is not None:
            return self._audit_head
        return self._meta("audit_head")

    def _audit_rows(self, order: str) -> Iterator[dict]:
        assert order in ("ASC", "DESC")
        for seq, data in self._query(f"SELECT seq, data FROM audit ORDER BY seq {order}"):
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
        """Re-key every record's hash under the current audit key (after rotate-secrets, or
        SQLite's upgrade from the unkeyed chain); the caller has verified the old chain. Inside
        a write: the new head is saved, sealed, at commit."""
        prev_hash, last = GENESIS_HASH, 0
        for seq, data in self._query("SELECT seq, data FROM audit ORDER BY seq").fetchall():
            _, *record, _ = self.codec.open("audit", str(seq), data)
            text, prev_hash = audit_payload(self._audit_mac, prev_hash, tuple(record))
            self._write("UPDATE audit SET data = ? WHERE seq = ?", (self.codec.seal_text("audit", str(seq), text), seq))
            last = seq
        self._audit_head = {"seq": last, "hash": prev_hash}
        self._head_unsaved = True

    def _rotate_rows(self, new: ServerSecrets) -> None:
        """rotate-secrets' change of the rows, inside write(): every token ends, the audit chain
        is re-keyed under new.audit and the fingerprint becomes new's."""
        self._use_secrets(new)
        self._rechain()
        self._change("tokens", "DELETE FROM tokens")
        self._cache.clear()
        self._set_meta("secrets_fingerprint", {"sha256": new.fingerprint()})

    # --- whole-store copy ----------------------------------------------------------------

    def export_rows(self) -> dict[str, Any]:
        """Every stored value, opened: what a copy to another store (or rekey) takes."""
        kg_names = {ref: self.codec.open("kgs", ref, data)["name"]
                    for ref, data in self._query("SELECT ref, data FROM kgs")}
        return {
            "secrets_fingerprint": self._meta("secrets_fingerprint"),
            "audit_head": self._current_head(),
            "users": self.users(),
            "kgs": self.kgs(),
            "acl": [self._acl_open(k, u, d) for k, u, d in self._query("SELECT kg_ref, user_ref, data FROM acl")],
            "api_keys": [self._key_open(r) for r in self._query("SELECT id, data FROM api_keys")],
            "api_key_kgs": [(key_id, kg_names[ref]) for key_id, ref in
                            self._query("SELECT key_id, kg_ref FROM api_key_kgs")],
            "tokens": [self.codec.open("tokens", ref, data)
                       for ref, data in self._query("SELECT ref, data FROM tokens")],
            "audit": list(self._audit_rows("ASC")),
        }

    def _import_rows(self, rows: dict[str, Any]) -> int:
        """Fill this (new, empty) store with export_rows() of another, inside write(), but for
        the secrets' fingerprint (each store's own business). Returns the number of rows."""
        self._set_meta("audit_head", rows["audit_head"])
        for user in rows["users"]:
            self._put("users", self._user_ref(user["name"]), user, insert=True)
        for kg in rows["kgs"]:
            self._put("kgs", self._kg_ref(kg["name"]), kg, insert=True)
        for entry in rows["acl"]:
            self.grant(entry["kg"], entry["username"], entry["role"], entry["granted_by"], entry["granted_at"])
        for key in rows["api_keys"]:
            self._change("api_keys", "INSERT INTO api_keys (id, label_ref, owner_ref, data) VALUES (?, ?, ?, ?)",
                         (key["id"], self.codec.ref("label", key["label"]), self._user_ref(key["owner"]),
                          self._plain("")))
            self._key_put(key)
        for key_id, kg in rows["api_key_kgs"]:
            self._change("api_keys", "INSERT INTO api_key_kgs VALUES (?, ?)", (key_id, self._kg_ref(kg)))
        for tok in rows["tokens"]:
            self.add_token(tok)
        for rec in rows["audit"]:
            seq = rec["row_seq"]
            value = [rec["prev_hash"], *(rec[f] for f in AUDIT_FIELDS), rec["hash"]]
            self._write("INSERT INTO audit VALUES (?, ?)", (seq, self.codec.seal("audit", str(seq), value)))
        return sum(len(rows[t]) for t in _COPIED)
