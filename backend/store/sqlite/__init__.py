"""The Store on one SQLite file: connections, snapshots and held-back writes (connection,
transactions), and the class that joins them with the rows both stores share (store)."""

from .connection import DEFERRED_WRITES_MAX
from .schema import DB_FILE, TABLES
from .store import SQLiteStore

__all__ = ["DB_FILE", "DEFERRED_WRITES_MAX", "TABLES", "SQLiteStore"]
