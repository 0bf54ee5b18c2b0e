"""The SQLite store's audit log: records chained by HMAC under the audit key, each appended in
the transaction of the change it records, the chain's head (sealed by the same key) saved once
per commit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..chain import matching_records, verify_chain
from ..interface import AUDIT_FIELDS, GENESIS_HASH, audit_payload
from .rows import Rows


class AuditChain(Rows):
    def append_audit(self, now: float, actor: str, source: str, action: str, target: str,
                     outcome: str, detail: str) -> None:
        """Append one hash-chained record; must run inside write()."""
        head = self._current_head()
        seq = head["seq"] + 1
        record = (seq, now, actor, source, action, target, outcome, detail)
        text, digest = audit_payload(self._audit_mac, head["hash"], record)
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
        the upgrade from the unkeyed chain); the caller has verified the old chain. Inside a
        write: the new head is saved, sealed, at commit."""
        prev_hash, last = GENESIS_HASH, 0
        for seq, data in self.conn.execute("SELECT seq, data FROM audit ORDER BY seq").fetchall():
            _, *record, _ = self.codec.open("audit", str(seq), data)
            text, prev_hash = audit_payload(self._audit_mac, prev_hash, tuple(record))
            self._write("UPDATE audit SET data = ? WHERE seq = ?", (self.codec.seal_text("audit", str(seq), text), seq))
            last = seq
        self._audit_head = {"seq": last, "hash": prev_hash}
        self._head_unsaved = True

