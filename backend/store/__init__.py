"""The store: the interface the engine needs (interface), its SQLite implementation (sqlite/)
and its PostgreSQL one (postgres/, imported only when used), how values are kept plain or sealed
(codec), re-encrypting a stopped store (rekey), choosing a store by location (locate) and
copying one into another (copy)."""

from .interface import AUDIT_FIELDS, GENESIS_HASH, Store, StoreError
from .sqlite import SQLiteStore

__all__ = ["AUDIT_FIELDS", "GENESIS_HASH", "SQLiteStore", "Store", "StoreError"]
