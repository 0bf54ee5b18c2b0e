"""The PostgreSQL store (scaleout.md): psycopg 3 and psycopg-pool, the SQLite store's API."""

from .store import PostgresStore
from .url import is_postgres_url, redact_url

__all__ = ["PostgresStore", "is_postgres_url", "redact_url"]
