"""The store: the interface the engine needs (interface), its SQLite implementation (sqlite/),
how values are kept plain or sealed (codec), and re-encrypting a stopped store (rekey)."""

from .interface import AUDIT_FIELDS, GENESIS_HASH, Store, StoreError
from .sqlite import SQLiteStore

__all__ = ["AUDIT_FIELDS", "GENESIS_HASH", "SQLiteStore", "Store", "StoreError"]
