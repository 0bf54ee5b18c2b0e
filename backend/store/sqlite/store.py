"""SQLiteStore: the Store interface on one SQLite file, and copying a whole store (rekey)."""

from __future__ import annotations

from typing import Any

from ..records import Records
from ..secrets import ServerSecrets, pending_path, write_secrets
from .transactions import Transactions


class SQLiteStore(Records, Transactions):
    """SQLite in WAL mode with synchronous=FULL, owner-only files: connections, held-back
    writes and transactions in the modules beside this one; the rows, written once for both
    stores, in ../tables.py, ../apikeys.py and ../records.py."""

    def import_rows(self, rows: dict[str, Any]) -> int:
        """Fill this (new, empty) store with `export_rows()` of another; inside write()."""
        self._set_meta("secrets_fingerprint", rows["secrets_fingerprint"])
        return self._import_rows(rows)

    def replace_secrets(self, new: ServerSecrets) -> None:
        """rotate-secrets, inside write(): `secrets.new` is written first and becomes `secrets`
        once this transaction has committed the new fingerprint (the caller promotes it; an
        interrupted rotation is finished or undone when the store is next opened). This store
        works under the new secrets from here on: if the transaction fails, close it."""
        write_secrets(pending_path(self.secrets_file), self.codec, new, replace=True)
        self._rotate_rows(new)
