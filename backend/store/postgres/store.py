"""The PostgreSQL store: the same rows, API and guarantees as the SQLite store.

Every row is a lookup ref (or refs) plus one `data` value that the codec keeps as JSON or seals
with AES-256-GCM. Every change runs inside write(), and its audit record is appended in that same
transaction (see base.py for how writers from several nodes are serialized).
"""

from __future__ import annotations

from typing import Any

from ...errors import StoreError
from ..codec import Codec
from ..records import Records
from ..secrets import ServerSecrets
from . import schema
from .base import PgBase


class PostgresStore(Records, PgBase):
    """The Store on PostgreSQL: connections and transactions in base.py, snapshots in reads.py;
    the rows, written once for both stores, in ../tables.py, ../apikeys.py and ../records.py;
    here whole-store copies, rekey and the secrets' rotation."""

    def replace_secrets(self, new: ServerSecrets) -> None:
        """rotate-secrets, inside write(). The secrets file is the operator's: every node must
        be given the new one (a node with the old one then refuses to start)."""
        self._rotate_rows(new)

    def import_rows(self, rows: dict[str, Any]) -> int:
        """Fill this (new, empty) store with export_rows() of another; inside write(). The
        secrets come from the server secrets file, so they must be the source's already."""
        if rows["secrets_fingerprint"]["sha256"] != self.secrets.fingerprint():
            raise StoreError("the server secrets file does not hold the secrets of the store being copied")
        copied = self._import_rows(rows)
        # Explicit ids leave the identity behind: new keys must continue after the copied ones.
        self._send("SELECT setval(pg_get_serial_sequence('api_keys', 'id'), "
                   "greatest((SELECT max(id) FROM api_keys), 1))")
        return copied

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
                self.conn.execute(f"DROP SCHEMA {schema.NAMESPACE} CASCADE")
                self.codec = Codec(new_key)
                schema.create(self.conn, self.codec, self.shown_url, self.secrets)
                # Readers elsewhere compare this counter: it must move on, never start over.
                self._send("UPDATE generation SET n = %s", (generation,))
                copied = self.import_rows(rows)
        except BaseException:
            self.codec = old_codec          # the transaction rolled back: the old key still holds
            raise
        self._forget()                      # rows cached under the old key's refs
        return copied
