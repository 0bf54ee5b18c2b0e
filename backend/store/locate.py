"""Which store a location names: a postgresql:// URL, else a data directory.

The PostgreSQL driver is imported only for a URL, so a shell on a data directory starts as fast
as before; a URL's password never reaches a message (describe_store).
"""

from __future__ import annotations

from collections.abc import Mapping

from .codec import key_from_env
from .interface import Store
from .postgres.url import is_postgres_url, redact_url


def open_store(location: str, env: Mapping[str, str], *, lock_wait_ms: int = 30_000) -> Store:
    """The store at `location`, sealed under INPUTLAYER_ENCRYPTION_KEY when set; a PostgreSQL
    store takes its server secrets from INPUTLAYER_SERVER_SECRET_FILE. A change waits at most
    `lock_wait_ms` for another process's."""
    key = key_from_env(env)
    if is_postgres_url(location):
        from .postgres.store import PostgresStore

        return PostgresStore(location, encryption_key=key, secret_file=env.get("INPUTLAYER_SERVER_SECRET_FILE"),
                             lock_wait_ms=lock_wait_ms)
    from .sqlite import SQLiteStore

    return SQLiteStore(location, encryption_key=key, busy_timeout_ms=lock_wait_ms)


def describe_store(location: str) -> str:
    """`location` as messages and logs may show it."""
    return redact_url(location) if is_postgres_url(location) else location
