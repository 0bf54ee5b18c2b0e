"""A node's link to Redis, and whether it is usable now (scaleout.md, Faults).

Two clients share one state: the synchronous one for the engine's worker threads (and the shell),
the asyncio one for the server's event loop, which must never wait on a socket. When a call
fails the link is *degraded*: callers count in the node's memory instead, one warning is logged,
and the callers leave Redis alone for `retry_secs` while the server's heartbeat looks for it every
second, so the node returns to Redis by itself soon after it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

log = logging.getLogger("inputlayer.cluster")

T = TypeVar("T")

SOCKET_TIMEOUT = 2.0        # a Redis that hangs costs a call at most about twice this, once per retry


def _options() -> dict:
    # One retry: a connection Redis dropped (it restarted) is re-made at once; more would make
    # a hanging Redis cost every caller several timeouts.
    return {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT,
            "retry": Retry(NoBackoff(), 1)}


class RedisLink:
    def __init__(self, url: str, prefix: str, *, retry_secs: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic):
        self.url = url
        self.prefix = prefix
        self.sync = redis.Redis.from_url(url, **_options())
        self._async: aredis.Redis | None = None
        self._retry_secs = retry_secs
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._reason = ""
        self._retry_at = 0.0
        self.on_change: list[Callable[[bool], None]] = []     # called with `degraded` on each change

    @property
    def aio(self) -> aredis.Redis:
        """The asyncio client, made on first use on the loop that uses it."""
        if self._async is None:
            options = _options() | {"retry": AsyncRetry(NoBackoff(), 1)}
            self._async = aredis.Redis.from_url(self.url, **options)
        return self._async

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # --- state ---------------------------------------------------------------------------

    @property
    def degraded(self) -> str:
        """Why Redis is not in use now, or "" when it is."""
        return self._reason

    def usable(self) -> bool:
        return not self._reason or self._monotonic() >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            first = not self._reason
            self._reason = f"Redis unreachable: {_describe(exc)}"
            self._retry_at = self._monotonic() + self._retry_secs
        if first:
            log.warning("%s; counting lockouts and rate limits in this node's memory until it is back",
                        self._reason)
            self._changed(True)

    def succeeded(self) -> None:
        if not self._reason:
            return
        with self._lock:
            was, self._reason = self._reason, ""
        if was:
            log.info("Redis is reachable again: shared counters and sessions resume")
            self._changed(False)

    def _changed(self, degraded: bool) -> None:
        for callback in self.on_change:
            callback(degraded)

    # --- calls ---------------------------------------------------------------------------

    def call(self, fn: Callable[[redis.Redis], T], fallback: Callable[[], T]) -> T:
        """fn(client) when Redis is usable and answers, else fallback(): never neither."""
        if self.usable():
            try:
                result = fn(self.sync)
            except RedisError as exc:
                self.failed(exc)
            else:
                self.succeeded()
                return result
        return fallback()

    async def acall(self, fn: Callable[[aredis.Redis], Awaitable[T]], fallback: Callable[[], T]) -> T:
        """The same, on the event loop with the asyncio client."""
        if self.usable():
            try:
                result = await fn(self.aio)
            except (RedisError, OSError) as exc:
                self.failed(exc)
            else:
                self.succeeded()
                return result
        return fallback()

    async def probe(self) -> bool:
        """PING; updates the state either way (the heartbeat's health check)."""
        try:
            await self.aio.ping()
        except (RedisError, OSError) as exc:
            self.failed(exc)
            return False
        self.succeeded()
        return True

    def close(self) -> None:
        self.sync.close()

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None


def _describe(exc: BaseException) -> str:
    # redis-py's messages name host and port, never the URL's password.
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
