"""The Server: builds the engine with what it needs from the server, binds, serves, watches the
store for principals that went away, and shuts down."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server as WebSocketServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from .. import __version__
from ..cluster import RedisLink, SharedLockout, SharedRateLimiter
from ..cluster.sessions import SharedSessions
from ..config import Config, ServerConfig
from ..engine import Clock, Engine, Lockout, LockoutCounter, RateCounter, RateLimiter, system_clock
from ..engine.limits import account_lockout_config
from ..errors import SessionEnded, StoreUnavailable
from ..netaddr import client_address, networks
from ..protocol import CHUNK_ROWS, GOING_AWAY, INTERNAL_ERROR, STREAM_THRESHOLD
from ..store import Store
from . import connection as connections
from .changes import LISTEN_RETRY_SECS, Changes, postgres_url
from .connection import Connection, describe
from .http import HttpEndpoints
from .logins import Logins
from .metrics import Metrics
from .pools import auth_pool, run_in
from .sessions import LiveSessions

log = logging.getLogger("inputlayer.server")

POLL_INTERVAL = 0.3                 # how often the store is checked for another process's changes
FULL_SWEEP_INTERVAL = 1.0           # every session is re-checked at least this often (key expiry)
# The least time between two sweeps: every login touches a row, so a login storm notifies
# without pause, and its notifications then share one sweep a gap instead of one each.
SWEEP_GAP = 0.05
SHUTDOWN_GRACE = 30.0               # how long a command in flight may take to finish at shutdown


@dataclass
class ServerOptions:
    """Knobs that tests turn; production uses the defaults."""
    stream_threshold: int = STREAM_THRESHOLD
    chunk_rows: int = CHUNK_ROWS
    poll_interval: float = POLL_INTERVAL
    listen_retry: float = LISTEN_RETRY_SECS
    full_sweep_interval: float = FULL_SWEEP_INTERVAL
    # argon2 runs here: one core stays free for the event loop, so a password storm slows
    # password logins, not the API-key traffic beside it.
    auth_workers: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) - 1))
    exec_workers: int = 8
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    open_timeout: float = 10.0


class Server:
    """The composition root of a served store: the lockout, the rate limits and the session
    directory are made here (in memory, or in Redis for a cluster) and given to the engine it
    builds. The store is the caller's to close."""

    def __init__(self, store: Store, config: Config, *, clock: Clock = system_clock,
                 shared_key: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 options: ServerOptions | None = None):
        self.store = store
        self.cfg: ServerConfig = config.server
        self.ssl_context = ssl_context
        self.options = options or ServerOptions()
        self.host = self.cfg.host
        self.port = self.cfg.port
        self.clock = clock                  # the rate limits' too, so tests can hold time still
        self.metrics = Metrics()
        self.sessions = LiveSessions(self.end_session_threadsafe, lambda: self.node)
        self.cluster = config.cluster
        self.link: RedisLink | None = None
        self.lockout, self.account_lockout, rates, self.directory = self._shared_state(config, clock)
        self.engine = Engine(store, config, clock=clock, shared_key=shared_key, lockout=self.lockout,
                             rate_limiter=rates, directory=self.directory, target=lambda: f"{self.host}:{self.port}",
                             account_lockout=self.account_lockout)
        self.connections: set[Connection] = set()
        self.trusted = networks(self.cfg.trusted_proxies)
        self.started = time.monotonic()
        self._auth_pool = auth_pool(self.options.auth_workers)
        self._exec_pool = ThreadPoolExecutor(self.options.exec_workers, thread_name_prefix="il-exec")
        self._sweep_pool = ThreadPoolExecutor(1, thread_name_prefix="il-sweep")    # one sweep at a time
        # A PostgreSQL read is a network round trip: never on the event loop.
        self.logins = Logins(self.engine, self.lockout, self.metrics, auth_pool=self._auth_pool,
                             exec_pool=self._exec_pool, reads_on_loop=postgres_url(store) is None)
        self.changes = Changes(store, self.poke, retry_secs=self.options.listen_retry)
        self.http = HttpEndpoints(self)
        self.stopping = False
        self._ws_server: WebSocketServer | None = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poke: asyncio.Event | None = None
        self._watcher: asyncio.Task | None = None
        self._cluster_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Future] = set()

    def _shared_state(self, config: Config, clock: Clock) -> tuple[LockoutCounter, LockoutCounter, RateCounter,
                                                                   LiveSessions | SharedSessions]:
        """The address lockout, the per-account lockout (its keys are `user:<name>`, apart from
        any address), the rate limits and the session directory: this node's alone, or with
        Redis the cluster's."""
        accounts = account_lockout_config(config.security)
        if not config.cluster.redis_url:
            return Lockout(config.security, clock), Lockout(accounts, clock), RateLimiter(clock), self.sessions
        self.link = link = RedisLink(config.cluster.redis_url, config.cluster.key_prefix)
        link.on_change.append(self._cluster_changed)
        return (SharedLockout(config.security, clock, link), SharedLockout(accounts, clock, link),
                SharedRateLimiter(clock, link), SharedSessions(self.sessions, link, config.cluster.session_ttl_secs))

    @property
    def node(self) -> str:
        """This node's name in the cluster's session directory: host:port of its listener, the
        machine's name for a wildcard host (every node may listen on 0.0.0.0:8080)."""
        if self.cluster.node:
            return self.cluster.node
        host = self.host if self.host not in ("", "0.0.0.0", "::") else socket.gethostname()
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def cluster_state(self) -> str:
        """What /health says of the cluster: local-counters, redis, or why Redis is not in use."""
        if self.link is None:
            return "local-counters"
        return self.link.degraded or "redis"

    def _cluster_changed(self, degraded: bool) -> None:
        if degraded:
            self.metrics.cluster_outage()       # called from any thread: the counter locks itself

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/ws"

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, then accept connections. The bound port is in `self.port` before the first
        connection is accepted (callers print it in between with `on_bound`)."""
        await self.bind()
        await self.start_serving()

    async def bind(self) -> None:
        """Bind and listen. Connections that arrive now wait in the backlog until
        `start_serving` (so a caller can print the port first and lose none)."""
        self._loop = asyncio.get_running_loop()
        self._poke = asyncio.Event()
        infos = await self._loop.getaddrinfo(self.cfg.host or None, self.cfg.port, type=socket.SOCK_STREAM,
                                             flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        self._socket = socket.create_server(address[:2], family=family, backlog=1024)
        self.host, self.port = self.cfg.host, self._socket.getsockname()[1]

    async def start_serving(self) -> None:
        ws_logger = logging.getLogger("inputlayer.websockets")
        if ws_logger.getEffectiveLevel() < logging.INFO:
            ws_logger.setLevel(logging.INFO)      # its DEBUG lines print frames: passwords, keys
        self._ws_server = await serve(
            self._handle, sock=self._socket, ssl=self.ssl_context,
            process_request=self.http.process_request, max_size=self.cfg.max_message_bytes, max_queue=8,
            ping_interval=self.options.ping_interval, ping_timeout=self.options.ping_timeout,
            open_timeout=self.options.open_timeout, close_timeout=5, logger=ws_logger,
            server_header=f"inputlayer/{__version__}",
            # No permessage-deflate: frames mix secrets (a new key) with text a client chose, the
            # mix that compression side channels (CRIME/BREACH) read; and the messages are small.
            compression=None)
        self._watcher = asyncio.create_task(self._watch_store())
        self.changes.start(self.node)
        if isinstance(self.directory, SharedSessions):
            self._cluster_task = asyncio.create_task(self.directory.run(self.sessions.kill))
            log.info("in a cluster as node %s: lockouts, rate limits and sessions shared through Redis", self.node)
        log.info("listening on %s", self.url)

    async def stop(self) -> None:
        """Stop accepting, let commands in flight finish, tell every client `Server shutting
        down` (close code 1001), then release the pools."""
        if self.stopping:
            return
        self.stopping = True
        log.info("shutting down: %d connections", len(self.connections))
        if self._ws_server is not None:
            self._ws_server.server.close()            # stop accepting; open connections stay
        await asyncio.gather(*(self._shutdown(c) for c in list(self.connections)), return_exceptions=True)
        await self.changes.stop()
        for task in (self._watcher, self._cluster_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._ws_server is not None:
            await self._close_all(self._ws_server)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await run_in(self._sweep_pool, self.engine.flush_refusals, everything=True)
        except Exception as exc:  # noqa: BLE001 -- shutting down: say so and go on
            log.error("could not audit the refusals of locked addresses: %s", describe(exc))
        for pool in (self._auth_pool, self._exec_pool, self._sweep_pool):
            pool.shutdown(wait=True, cancel_futures=True)
        if self.link is not None:
            if isinstance(self.directory, SharedSessions):
                await self.directory.leave()
            await self.link.aclose()
            self.link.close()
        log.info("stopped")

    async def _close_all(self, ws_server: WebSocketServer) -> None:
        for ws in list(ws_server.all_connections):
            if ws.protocol.state is State.CONNECTING and ws.transport is not None:
                ws.transport.abort()       # never finished its handshake
        ws_server.close(close_connections=True, code=GOING_AWAY, reason="Server shutting down")
        try:
            await asyncio.wait_for(ws_server.wait_closed(), 15)
        except TimeoutError:
            log.warning("some connections did not close in time")

    async def _shutdown(self, conn: Connection) -> None:
        conn.ending = True
        try:
            await asyncio.wait_for(conn.busy.acquire(), SHUTDOWN_GRACE)   # what is in flight ends
            acquired = True
        except TimeoutError:
            acquired = False
        try:
            await conn.close(GOING_AWAY, "Server shutting down")
        finally:
            if acquired:
                conn.busy.release()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future:
        """Call `fn` (engine and store work, which blocks) in the command pool; await it."""
        return run_in(self._exec_pool, fn, *args, **kwargs)

    def poke(self) -> None:
        """Have the watcher re-check the sessions now."""
        if self._poke is not None:
            self._poke.set()

    def address(self, ws: ServerConnection, forwarded_for: list[str]) -> str:
        peer = ws.remote_address[0] if ws.remote_address else ""
        return client_address(peer, forwarded_for, self.trusted)

    # --- connections ---------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        address = self.address(ws, ws.request.headers.get_all("X-Forwarded-For"))
        query = parse_qs(urlsplit(ws.request.path).query)
        kg = query["kg"][0] if query.get("kg") else None
        conn = Connection(ws, address, kg, max_program_lines=self.cfg.max_program_lines)
        self.connections.add(conn)
        self.metrics.connection()
        log.debug("connection opened: address=%s", address)
        try:
            if self.stopping:
                await conn.close(GOING_AWAY, "Server shutting down")
                return
            await connections.serve(self, conn)
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 -- never let one connection take the server down
            log.error("internal error on a connection from %s: %s", address, describe(exc))
            await conn.close(INTERNAL_ERROR, "Internal error")
        finally:
            self.connections.discard(conn)
            self.sessions.remove(conn)
            log.debug("connection closed: address=%s code=%s", address, ws.close_code)

    # --- ending sessions -----------------------------------------------------------------

    async def end_session(self, conn: Connection, reason: str) -> None:
        """Tell the client why and close (1008), at once."""
        if conn.ending:
            return
        conn.ending = True
        self.sessions.remove(conn)
        user = conn.session.username if conn.session else "-"
        log.info("session ended: user=%s address=%s reason=%s", user, conn.address, reason)
        await conn.perform(conn.protocol.session_ended(reason))

    def end_session_threadsafe(self, conn: Connection, reason: str) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(lambda: self._spawn(self.end_session(conn, reason)))
        self._loop.call_soon_threadsafe(self.poke)

    async def _watch_store(self) -> None:
        """End the sessions whose principal is gone: right after a command that changed the
        store, when another process commits (heard as a notification while listening, else by
        polling the store's change counter), and every second anyway (keys expire with time)."""
        assert self._poke is not None and self._loop is not None
        last_mark = None
        last_full = 0.0
        unreachable = False               # the store could not be read: said once, not every round
        while True:
            try:
                try:
                    await asyncio.wait_for(self._poke.wait(), self.options.poll_interval)
                except TimeoutError:
                    pass
                poked = self._poke.is_set()
                self._poke.clear()
                if self.engine.refusals_pending:
                    await run_in(self._sweep_pool, self.engine.flush_refusals)
                listening = self.changes.listening
                mark = last_mark if listening else await run_in(self._sweep_pool, self._data_version)
                if not listening:                 # the store was just read
                    unreachable = self._answered(unreachable)
                now = self._loop.time()
                if not (poked or mark != last_mark or now - last_full >= self.options.full_sweep_interval):
                    continue
                last_mark, last_full = mark, now
                if not len(self.sessions):
                    continue
                for conn, reason in await run_in(self._sweep_pool, self._sweep):
                    self._spawn(self.end_session(conn, reason))
                unreachable = self._answered(unreachable)
                await asyncio.sleep(SWEEP_GAP)
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                if not unreachable:
                    log.warning("sessions cannot be re-checked: %s", exc)
                    unreachable = True
                last_mark = None                  # check every session once it answers again
                await asyncio.sleep(self.options.poll_interval)
            except Exception as exc:  # noqa: BLE001 -- the watcher must outlive one bad sweep
                log.error("session check failed: %s", describe(exc))
                await asyncio.sleep(self.options.poll_interval)

    @staticmethod
    def _answered(unreachable: bool) -> bool:
        """The store was read: it is no longer unreachable (say so if it was)."""
        if unreachable:
            log.info("the store answers again: sessions are re-checked again")
        return False

    def _data_version(self) -> int:
        with self.store.read():
            return self.store.data_version()

    def _sweep(self) -> list[tuple[Connection, str]]:
        ended = []
        for conn in self.sessions.connections():
            if conn.ending or conn.session is None:
                continue
            try:
                self.engine.check_session(conn.session)
            except SessionEnded as exc:
                ended.append((conn, exc.reason))
        return ended
