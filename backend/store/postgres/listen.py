"""Hearing of the changes every process commits: one dedicated connection that LISTENs on the
channel each change transaction notifies in (base.py), on the server's event loop, so waiting
for a notification blocks nothing.

A notification arrives only after its transaction committed, so a snapshot taken once it is
heard sees the change. Every PROOF_SECS the connection makes a round trip: the server sends the
notifications of every commit made before the round trip began ahead of its answer, so once
the answer is in, the node has heard all of them, and its view (view.py) may be trusted for a
while. A connection that drops or stalls proves nothing: the trust runs out within a second,
the node re-reads the store for every command, and the feed connects again by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import psycopg

from .base import NOTIFY_CHANNEL, heard_generation
from .url import connect_kwargs, redact_text
from .view import TRUST_SECS, NodeView

APPLICATION_NAME = "inputlayer-listen"      # how an operator (or a test) finds these connections
PROOF_SECS = TRUST_SECS / 4   # how often the connection proves it hears: trust never lapses while it does
ANSWER_SECS = 5.0             # a proof unanswered this long: the connection is taken for dead
# The OS gives up on a silent peer after about idle + interval * count seconds.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2}


class ChangeFeed:
    """LISTEN on the store's change channel; `run` reports what it hears until cancelled."""

    def __init__(self, url: str, node: str, view: NodeView):
        self._url = url
        self._view = view
        self._kwargs = {**connect_kwargs(url), **KEEPALIVES,
                        "application_name": f"{APPLICATION_NAME} {node}"[:63]}

    async def run(self, changed: Callable[[list[str]], None], state: Callable[[bool, str], Awaitable[None]],
                  retry_secs: float) -> None:
        """Forever: connect, LISTEN, call `state(True, "")`, then `changed(tables)` for every
        notification; when the connection fails, `state(False, reason)` and try again after
        `retry_secs`. The view hears every notification and every proof."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True, **self._kwargs) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._view.reset()          # what it cached before was not heard of
                    await state(True, "")
                    await self._follow(conn, changed)
            except Exception as exc:  # noqa: BLE001 -- whatever broke, the node is deaf until it listens again
                self._view.reset()
                await state(False, self._reason(exc))
            await asyncio.sleep(retry_secs)

    async def _follow(self, conn: psycopg.AsyncConnection, changed: Callable[[list[str]], None]) -> None:
        while True:
            since = self._view.clock()
            await asyncio.wait_for(conn.execute("SELECT 1"), ANSWER_SECS)
            # The notifications that came ahead of the answer wait in psycopg's backlog: hear
            # them (timeout 0 reads no further) before vouching for what was heard.
            await self._hear(conn, changed, 0)
            self._view.vouch(since)
            await self._hear(conn, changed, PROOF_SECS)

    async def _hear(self, conn: psycopg.AsyncConnection, changed: Callable[[list[str]], None],
                    timeout: float) -> None:
        async for note in conn.notifies(timeout=timeout):
            self._view.heard(heard_generation(note.payload))
            changed(note.payload.partition(" ")[2].split(","))

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return "the database did not answer"
        if not isinstance(exc, psycopg.Error):
            return type(exc).__name__          # not the driver's: its text might hold anything
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return redact_text(text, self._url)
