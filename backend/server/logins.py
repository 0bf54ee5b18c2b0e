"""Logins and API-key checks as the server runs them: argon2 in its own pool, the lockout
consulted first, outcomes counted, and API-key login records written in groups."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..engine import Engine, LockoutCounter, Session
from ..errors import AuthError, LockedOut, StoreError
from ..netaddr import lockout_key
from ..protocol import Authenticate, Login
from .metrics import Metrics
from .pools import run_in

log = logging.getLogger("inputlayer.server")

UNAVAILABLE = "Authentication service unavailable"


class GroupWriter:
    """Group commit on the event loop: the items that arrive while a write is in flight go
    together in the next one, so a burst of logins costs a few transactions and thread
    hand-offs, not one each. `write(item)` returns once its own write is durable."""

    def __init__(self, write_many: Callable[[list], Awaitable[None]]):
        self._write_many = write_many
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._drainer: asyncio.Future | None = None

    async def write(self, item: Any) -> None:
        done = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._drainer is None:
            self._drainer = asyncio.ensure_future(self._drain())
        await done

    async def _drain(self) -> None:
        batch: list[tuple[Any, asyncio.Future]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                outcome = None
                try:
                    await self._write_many([item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 -- handed to every waiter of the batch
                    outcome = exc
                self._settle(batch, outcome)
        except BaseException as exc:          # cancelled: nobody may wait forever
            self._settle(batch + self._pending, exc)
            self._pending = []
            raise
        finally:
            self._drainer = None

    @staticmethod
    def _settle(batch: list[tuple[Any, asyncio.Future]], error: BaseException | None) -> None:
        for _, done in batch:
            if done.done():
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)


class Logins:
    def __init__(self, engine: Engine, lockout: LockoutCounter, metrics: Metrics, *, auth_pool: ThreadPoolExecutor,
                 exec_pool: ThreadPoolExecutor, reads_on_loop: bool = True):
        self._engine = engine
        self._lockout = lockout
        self._metrics = metrics
        self._auth_pool = auth_pool
        self._exec_pool = exec_pool
        self._reads_on_loop = reads_on_loop
        self._api_key_records = GroupWriter(
            lambda sessions: run_in(exec_pool, engine.record_api_key_logins, sessions))

    async def websocket(self, request: Login | Authenticate, address: str) -> tuple[Session | None, str]:
        """A login or authenticate message: (session, "") or (None, the message for the client)."""
        if isinstance(request, Login):
            return await self.authenticate(address, "password", self._engine.login, request.username,
                                           request.password, source="ws", address=address)
        # A valid key is checked here on the loop, sparing a thread hand-off; only its audit
        # record (an fsync) is written off it. Every refusal takes the full path. A lockout kept
        # in Redis, or a store on PostgreSQL, is a network round trip: then the check runs in the pool.
        try:
            if self._lockout.blocking or not self._reads_on_loop:
                session = await run_in(self._exec_pool, self._engine.check_api_key, request.api_key, source="ws",
                                       address=address)
            else:
                session = self._engine.check_api_key(request.api_key, source="ws", address=address)
            if session is not None:
                await self._api_key_records.write(session)
        except StoreError as exc:
            return None, self._unavailable(exc)
        if session is None:
            return await self.authenticate(address, "api_key", self._engine.authenticate, request.api_key,
                                           source="ws", address=address)
        self._metrics.login("api_key", "ok")
        return session, ""

    async def authenticate(self, peer: str, method: str, fn: Callable[..., Session], *args: Any,
                           **kwargs: Any) -> tuple[Session | None, str]:
        """Run login/authenticate off the loop and count the outcome."""
        key = lockout_key(peer)
        was_locked = bool(await self._lockout.aremaining(key))
        # A locked address costs no argon2 work: it must not queue behind the logins that do.
        pool = self._exec_pool if was_locked else self._auth_pool
        try:
            session = await run_in(pool, fn, *args, **kwargs)
        except StoreError as exc:
            return None, self._unavailable(exc)
        except AuthError as exc:
            outcome = "locked" if isinstance(exc, LockedOut) else "failed"
            self._metrics.login(method, outcome)
            if not was_locked and await self._lockout.aremaining(key):
                self._metrics.lockout()
                log.warning("address %s locked out after repeated failed authentications", peer)
            log.info("authentication %s: method=%s address=%s", outcome, method, peer)
            return None, exc.message
        self._metrics.login(method, "ok")
        return session, ""

    @staticmethod
    def _unavailable(exc: StoreError) -> str:
        """scaleout.md, Faults: a login the store cannot answer is neither a success nor a failure."""
        log.warning("authentication not possible: %s", exc)
        return UNAVAILABLE
