"""Reading and writing the SQLite store's rows through its row caches.

The writer remembers rows within its transaction (no other process can change them meanwhile,
so a batch of commands reads each row once); a reader remembers them for as long as no commit
has changed a row (the `rows_gen` stamp, checked when each snapshot begins).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ...errors import StoreError
from .transactions import Transactions

READER_CACHE_ROWS = 10_000      # bounds the memory of a reader's row cache
_UNKNOWN = object()             # not in a row cache (None there means: no such row)


def known(row: dict | None, what: str) -> dict:
    """A row the caller found before changing it, in this same transaction."""
    if row is None:
        raise StoreError(f"no such {what}")
    return row


class Rows(Transactions):
    def _memo(self, key: tuple, load: Callable[..., Any], *args: Any, writer_too: bool) -> Any:
        """`load(*args)`, remembered: by the writer within its transaction (only for lookups its
        own writes keep up to date), by a reader for as long as no commit has changed a row."""
        if self._owner == threading.get_ident():
            if not writer_too:
                return load(*args)
            cache = self._cache
        elif getattr(self._tls, "conn", None) is not None:
            cache = self._tls.cache
            if len(cache) >= READER_CACHE_ROWS:
                cache.clear()
        else:
            return load(*args)
        value = cache.get(key, _UNKNOWN)
        if value is _UNKNOWN:
            value = cache[key] = load(*args)
        return value

    def _get(self, table: str, ref: str) -> dict | None:
        return self._memo((table, ref), self._load_row, table, ref, writer_too=True)

    def _load_row(self, table: str, ref: str) -> dict | None:
        row = self.conn.execute(f"SELECT data FROM {table} WHERE ref = ?", (ref,)).fetchone()
        return None if row is None else self.codec.open(table, ref, row[0])

    def _all(self, table: str, sort_key: str) -> list[dict]:
        rows = [self.codec.open(table, ref, data) for ref, data in self.conn.execute(f"SELECT ref, data FROM {table}")]
        return sorted(rows, key=lambda r: r[sort_key])

    def _put(self, table: str, ref: str, value: dict, *, insert: bool) -> None:
        sealed = self.codec.seal(table, ref, value)
        if insert:
            self._change(f"INSERT INTO {table} (ref, data) VALUES (?, ?)", (ref, sealed))
        else:
            self._change(f"UPDATE {table} SET data = ? WHERE ref = ?", (sealed, ref))
        self._cache.pop((table, ref), None)

    def _user_ref(self, name: str) -> str:
        return self.codec.ref("user", name)

    def _kg_ref(self, name: str) -> str:
        return self.codec.ref("kg", name)
