"""Hearing of the changes every process commits: one dedicated connection that LISTENs on the
channel each change transaction notifies in (base.py), on the server's event loop, so waiting
for a notification blocks nothing.

A notification arrives only after its transaction committed, so a snapshot taken once it is
heard sees the change. A connection that drops hears nothing: the feed says so at once (the
server then re-reads instead of trusting what it heard) and connects again by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import psycopg

from .base import NOTIFY_CHANNEL
from .url import connect_kwargs, redact_text

APPLICATION_NAME = "inputlayer-listen"      # how an operator (or a test) finds these connections
HEARTBEAT_SECS = 5.0          # a quiet connection is probed this often: a dead network says nothing
# The OS gives up on a silent peer after about idle + interval * count seconds.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2}


class ChangeFeed:
    """LISTEN on the store's change channel; `run` reports what it hears until cancelled."""

    def __init__(self, url: str, node: str):
        self._url = url
        self._kwargs = {**connect_kwargs(url), **KEEPALIVES,
                        "application_name": f"{APPLICATION_NAME} {node}"[:63]}

    async def run(self, changed: Callable[[list[str]], None], state: Callable[[bool, str], Awaitable[None]],
                  retry_secs: float) -> None:
        """Forever: connect, LISTEN, call `state(True, "")`, then `changed(tables)` for every
        notification; when the connection fails, `state(False, reason)` and try again after
        `retry_secs`."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True, **self._kwargs) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    await state(True, "")
                    await self._follow(conn, changed)
            except Exception as exc:  # noqa: BLE001 -- whatever broke, the node is deaf until it listens again
                await state(False, self._reason(exc))
            await asyncio.sleep(retry_secs)

    @staticmethod
    async def _follow(conn: psycopg.AsyncConnection, changed: Callable[[list[str]], None]) -> None:
        while True:
            async for note in conn.notifies(timeout=HEARTBEAT_SECS):
                changed(note.payload.split(","))
            # Quiet for a while: make sure the connection is still there to hear anything.
            await asyncio.wait_for(conn.execute("SELECT 1"), HEARTBEAT_SECS)

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return "the database did not answer"
        if not isinstance(exc, psycopg.Error):
            return type(exc).__name__          # not the driver's: its text might hold anything
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return redact_text(text, self._url)
