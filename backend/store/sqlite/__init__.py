"""The Store on one SQLite file: connections, snapshots and held-back writes (connection,
transactions), row caches (rows), the tables (tables, keys), the audit chain (audit), and the
class that joins them (store)."""

from .connection import DEFERRED_WRITES_MAX
from .schema import DB_FILE, TABLES
from .store import SQLiteStore

__all__ = ["DB_FILE", "DEFERRED_WRITES_MAX", "TABLES", "SQLiteStore"]
