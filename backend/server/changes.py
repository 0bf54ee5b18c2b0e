"""How a node hears of the changes other processes commit (scaleout.md, Changes reach every node).

On PostgreSQL the node listens (store/postgres/listen.py): each notification has the sessions
re-checked at once, and nothing is polled; and while the listening connection keeps proving it
hears, read commands are answered from the node's cache (store/postgres/view.py). While it does
not listen (not yet, or its connection dropped or stalled) it is deaf, and acts so: the store
watcher polls the change counter again, and every command reads a snapshot of the store. SQLite
has nothing to listen to: its watcher polls `PRAGMA data_version`, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..store import Store

log = logging.getLogger("inputlayer.server")

LISTEN_RETRY_SECS = 1.0          # how soon a dropped listener connects again


class Changes:
    """The node's ears. `listening` is True only while a LISTEN connection is up."""

    def __init__(self, store: Store, poke: Callable[[], None], *, retry_secs: float = LISTEN_RETRY_SECS):
        self._store = store
        self._poke = poke
        self._retry = retry_secs
        self._task: asyncio.Task | None = None
        self.listening = False
        self.heard = 0                      # notifications heard: for the logs and the tests
        self._lost_reason: str | None = None

    def start(self, node: str) -> None:
        """Listen from now on, if the store can tell (a PostgreSQL store)."""
        url = postgres_url(self._store)
        if url is None:
            return
        from ..store.postgres.listen import ChangeFeed
        from ..store.postgres.store import PostgresStore

        assert isinstance(self._store, PostgresStore)
        feed = ChangeFeed(url, node, self._store.view)
        self._task = asyncio.ensure_future(feed.run(self._changed, self._state, self._retry))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.listening = False

    @property
    def state(self) -> str | None:
        """What /health says: `listening`, or why not; None when there is nothing to listen to."""
        if self._task is None:
            return None
        if self.listening:
            return "listening"
        return f"not listening: {self._lost_reason}" if self._lost_reason else "not listening yet"

    def _changed(self, tables: list[str]) -> None:
        self.heard += 1
        self._poke()

    async def _state(self, up: bool, reason: str) -> None:
        was, self.listening = self.listening, up
        if up:
            log.info("listening for changes" + (" again" if self._lost_reason is not None else ""))
            self._lost_reason = None
            # What committed while nobody listened was not heard: check the sessions once now.
            self._poke()
        elif was or self._lost_reason is None:
            log.warning("not listening for changes (%s): reading the store afresh until listening again", reason)
            self._lost_reason = reason
            self._poke()


def postgres_url(store: Store) -> str | None:
    """The URL of a PostgreSQL store, None for any other (without importing the driver)."""
    from ..store.postgres.url import is_postgres_url

    url = getattr(store, "url", None)
    return url if isinstance(url, str) and is_postgres_url(url) else None
