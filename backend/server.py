"""`inputlayer-server`: the engine served over WebSocket (protocol.md), with HTTP endpoints on
the same port.

Built on the `websockets` library's asyncio API. The event loop only moves messages: every engine
call blocks (SQLite, argon2) and runs in a thread pool. Logins and API-key checks run in a pool of
their own, bounded to the number of cores, so a storm of wrong passwords queues there and never
stalls the commands of clients that are already in.

Nothing secret is logged: a log line names the command (never the line), the user and the
address, never a password, key or program text. The `websockets` library's own debug logging,
which prints frames, is kept at INFO or above whatever the level asked for.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import functools
import ipaddress
import itertools
import json
import logging
import os
import secrets
import socket
import ssl
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Iterable, NamedTuple
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from . import __version__
from .config import Config, ServerConfig, TLSConfig
from .codec import json_encoder
from .engine import Engine, RateLimited, Session, UnrecordedDenial
from .errors import AuthError, CommandError, ConfigError, PermissionDenied, SessionEnded, StoreError
from .registry import Invocation, clip, match_command, parse_program
from .result import Result

log = logging.getLogger("inputlayer.server")

WS_PATHS = frozenset({"/ws", "/v1/ws"})
STREAM_THRESHOLD = 1 << 20          # a reply whose JSON is larger than this is streamed
CHUNK_ROWS = 500                    # at most this many rows in one result_chunk
CHUNK_BYTES = 512 * 1024            # ...and about this many bytes, so each chunk fits a client's limit
RATE_LIMIT = 100                    # messages a second per connection
POLL_INTERVAL = 0.3                 # how often the store is checked for another process's changes
FULL_SWEEP_INTERVAL = 1.0           # every session is re-checked at least this often (key expiry)
SHUTDOWN_GRACE = 30.0               # how long a command in flight may take to finish at shutdown
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# --- addresses ---------------------------------------------------------------------------------

def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _networks(cidrs: Iterable[str]) -> tuple:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _in(ip, networks) -> bool:
    return ip is not None and any(ip.version == n.version and ip in n for n in networks)


def client_address(peer: str, forwarded_for: list[str], trusted_proxies) -> str:
    """The address a connection is accounted to (security.md, Lockout): the TCP peer, unless the
    peer is a trusted proxy; then the right-most X-Forwarded-For entry that is not itself a
    trusted proxy. Entries left of that one are the client's own words and are never believed."""
    peer_ip = _ip(peer)
    address = str(peer_ip) if peer_ip is not None else peer
    if not _in(peer_ip, trusted_proxies):
        return address
    entries = [e.strip() for header in forwarded_for for e in header.split(",") if e.strip()]
    for entry in reversed(entries):
        ip = _ip(entry)
        if ip is None:
            return address          # a garbled header: account the request to the proxy itself
        if not _in(ip, trusted_proxies):
            return str(ip)
        address = str(ip)
    return address


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback


# --- TLS ---------------------------------------------------------------------------------------

def tls_context(tls: TLSConfig, keystore_password: str | None) -> ssl.SSLContext | None:
    """A server context from PEM files or a PKCS#12 keystore, TLS 1.2 at least; None without TLS."""
    if not (tls.cert or tls.key or tls.keystore):
        return None
    if tls.keystore and (tls.cert or tls.key):
        raise ConfigError("TLS: give either a certificate and key (PEM) or a keystore (PKCS#12), not both")
    if not tls.keystore and not (tls.cert and tls.key):
        raise ConfigError("TLS: a PEM certificate needs its key, and a key its certificate "
                          "(--tls-cert and --tls-key)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert:
        try:
            ctx.load_cert_chain(tls.cert, tls.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS: cannot load {tls.cert} / {tls.key}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        return ctx
    _load_keystore(ctx, tls.keystore, keystore_password)
    return ctx


def _load_keystore(ctx: ssl.SSLContext, path: str, password: str | None) -> None:
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, \
        PrivateFormat, pkcs12

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"TLS: cannot read keystore {path}: {exc.strerror or exc}") from None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password.encode() if password else None)
    except (ValueError, TypeError):
        raise ConfigError(f"TLS: cannot open keystore {path}: wrong password "
                          "(INPUTLAYER_TLS_KEYSTORE_PASSWORD) or not a PKCS#12 file") from None
    if key is None or cert is None:
        raise ConfigError(f"TLS: keystore {path} must hold a private key and its certificate")
    # ssl loads keys from files only: the key goes to a private temporary file, encrypted under
    # a one-time password that never leaves this process, and is removed at once.
    one_time = secrets.token_bytes(32)
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(one_time))
    chain = cert.public_bytes(Encoding.PEM) + b"".join(c.public_bytes(Encoding.PEM) for c in extra or ())
    with tempfile.TemporaryDirectory(prefix="inputlayer-tls-") as tmp:
        cert_file, key_file = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for name, content in ((cert_file, chain), (key_file, key_pem)):
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
        try:
            ctx.load_cert_chain(cert_file, key_file, password=one_time)
        except ssl.SSLError as exc:
            raise ConfigError(f"TLS: keystore {path} holds an unusable key or certificate: {exc}") from None


# --- metrics -----------------------------------------------------------------------------------

class Metrics:
    """Counters for /metrics, in Prometheus text format. Updated on the event loop only."""

    def __init__(self) -> None:
        self.logins: collections.Counter = collections.Counter()       # (method, outcome)
        self.commands: collections.Counter = collections.Counter()     # (command, outcome)
        self.lockouts = 0
        self.connections_total = 0
        self.latency_buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_count = 0
        self.latency_sum = 0.0

    def command(self, name: str, outcome: str, seconds: float) -> None:
        self.commands[(name, outcome)] += 1
        self.latency_count += 1
        self.latency_sum += seconds
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        if bucket < len(LATENCY_BUCKETS):
            self.latency_buckets[bucket] += 1      # cumulated when rendered

    def render(self, *, connections: int, sessions: int, locked: int, uptime: float) -> str:
        out = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{labels} {_number(value)}")

        metric("inputlayer_up", "gauge", "1 while the server runs.", [("", 1)])
        metric("inputlayer_uptime_seconds", "gauge", "Seconds since the server started.", [("", uptime)])
        metric("inputlayer_connections", "gauge", "Open WebSocket connections.", [("", connections)])
        metric("inputlayer_connections_total", "counter", "WebSocket connections accepted.",
               [("", self.connections_total)])
        metric("inputlayer_sessions", "gauge", "Authenticated sessions.", [("", sessions)])
        metric("inputlayer_logins_total", "counter", "Authentication attempts by method and outcome.",
               [(_labels(method=m, outcome=o), n) for (m, o), n in sorted(self.logins.items())])
        metric("inputlayer_lockouts_total", "counter", "Addresses locked out after repeated failures.",
               [("", self.lockouts)])
        metric("inputlayer_locked_addresses", "gauge", "Addresses locked out now.", [("", locked)])
        metric("inputlayer_commands_total", "counter", "Commands by name and outcome.",
               [(_labels(command=c, outcome=o), n) for (c, o), n in sorted(self.commands.items())])
        out.append("# HELP inputlayer_command_duration_seconds Command latency.")
        out.append("# TYPE inputlayer_command_duration_seconds histogram")
        for bound, count in zip(LATENCY_BUCKETS, itertools.accumulate(self.latency_buckets)):
            out.append(f'inputlayer_command_duration_seconds_bucket{{le="{bound}"}} {count}')
        out.append(f'inputlayer_command_duration_seconds_bucket{{le="+Inf"}} {self.latency_count}')
        out.append(f"inputlayer_command_duration_seconds_sum {_number(self.latency_sum)}")
        out.append(f"inputlayer_command_duration_seconds_count {self.latency_count}")
        return "\n".join(out) + "\n"


def _labels(**labels: str) -> str:
    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}"


class ProgramShape(NamedTuple):      # a tuple, not a frozen dataclass: made for every message
    """What the server needs to know of a program before running it, from the parse the
    engine then runs."""
    name: str        # the metric label: its command (`.user create`), or `program` for several lines
    quick: bool      # every line of bounded cost (registry `quick`): run it on the event loop,
                     # saving a hand-off to a thread that would cost more than the command
    writes: bool     # some line changes the store


def program_shape(planned: list[tuple[int, str, Invocation | CommandError]]) -> ProgramShape:
    # A line that did not parse still names its command when it starts like one (metrics).
    commands = [p.command if isinstance(p, Invocation) else _command_of(text) for _, text, p in planned]
    if len(commands) == 1:
        name = commands[0].name if commands[0] else "unknown"
    else:
        name = "program" if commands else "empty"
    return ProgramShape(name, bool(commands) and all(c is not None and c.quick for c in commands),
                        any(c is not None and c.writes for c in commands))


def _command_of(line: str):
    words = line.split()
    if not words or not words[0].startswith("."):
        return None
    return match_command([words[0][1:], *words[1:]])[0]


AUTH_NICENESS = 10       # W5, a storm's p99 on the sessions: ~20 ms at +0, ~17 ms at +10


def _below_sessions() -> None:
    """Run this thread's work (argon2 for password logins, ~20 ms of CPU each) at a lower CPU
    priority than the event loop, so a storm of logins slows logins, not the sessions already
    in. Only Linux sets a nice value per thread; elsewhere it would reach the whole process."""
    if sys.platform.startswith("linux"):
        thread = threading.get_native_id()
        try:
            niceness = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness + AUTH_NICENESS))
        except OSError:
            pass


# --- results on the wire -----------------------------------------------------------------------

def combine(results: list[Result]) -> Result:
    """One reply for a program: the message lines of all its commands when every line only
    reported an action, else the table of its last command (with the KG it switched to)."""
    if not results:
        return Result([], [])
    if len(results) == 1:
        return results[0]
    switched = next((r.switched_kg for r in reversed(results) if r.switched_kg is not None), None)
    if len(results) > 1 and all(r.is_message for r in results):
        return Result(["message"], [row for r in results for row in r.rows], switched)
    last = results[-1]
    return Result(last.columns, last.rows, switched)


def reply_frames(result: Result, elapsed_ms: int, *, threshold: int = STREAM_THRESHOLD,
                 chunk_rows: int = CHUNK_ROWS, chunk_bytes: int = CHUNK_BYTES) -> list[str]:
    """The JSON text frames that answer one execute: one `result`, or a stream when that would
    be larger than `threshold` bytes."""
    rows = result.rows
    message: dict[str, Any] = {"type": "result", "columns": result.columns, "rows": rows,
                               "row_count": len(rows), "total_count": len(rows), "truncated": False,
                               "execution_time_ms": elapsed_ms}
    if result.switched_kg is not None:
        message["switched_kg"] = result.switched_kg
    text = _to_json(message)
    if len(text) <= threshold // 4 or len(text.encode()) <= threshold:      # UTF-8: at most 4 bytes a character
        return [text]
    start: dict[str, Any] = {"type": "result_start", "columns": result.columns, "total_count": len(rows),
                             "truncated": False, "execution_time_ms": elapsed_ms}
    if result.switched_kg is not None:
        start["switched_kg"] = result.switched_kg
    frames = [_to_json(start)]
    chunk: list[list[str]] = []
    size = 0
    for row in rows:
        row_size = len(_to_json(row).encode()) + 1
        if chunk and (len(chunk) >= chunk_rows or size + row_size > chunk_bytes):
            frames.append(_to_json({"type": "result_chunk", "rows": chunk, "chunk_index": len(frames) - 1}))
            chunk, size = [], 0
        chunk.append(row)
        size += row_size
    if chunk:
        frames.append(_to_json({"type": "result_chunk", "rows": chunk, "chunk_index": len(frames) - 1}))
    frames.append(json.dumps({"type": "result_end", "row_count": len(rows), "chunk_count": len(frames) - 1}))
    return frames


_to_json = json_encoder(", ", ": ")


def _rate_headers(response: Response, limit: int, remaining: int, reset_in: int) -> None:
    """The de-facto standard headers of a rate-limited API (a key's `rate=`)."""
    response.headers["X-RateLimit-Limit"] = str(limit)
    response.headers["X-RateLimit-Remaining"] = str(remaining)
    response.headers["X-RateLimit-Reset"] = str(reset_in)


def _error(message: str) -> str:
    return _to_json({"type": "error", "message": message})


def _auth_error(message: str) -> str:
    return _to_json({"type": "auth_error", "message": message})


# --- connections -------------------------------------------------------------------------------

class Client:
    """One WebSocket connection, before and after it authenticates."""

    def __init__(self, ws: ServerConnection, address: str, kg: str | None):
        self.ws = ws
        self.address = address
        self.kg = kg
        self.session: Session | None = None
        self.busy = asyncio.Lock()           # held while a message is being answered
        self.ending = False                  # told to go (session ended, shutdown)
        self._sent: collections.deque[float] = collections.deque()

    def allow(self, now: float) -> bool:
        """At most RATE_LIMIT messages in any one-second window."""
        sent = self._sent
        while sent and now - sent[0] >= 1.0:
            sent.popleft()
        if len(sent) >= RATE_LIMIT:
            return False
        sent.append(now)
        return True

    async def send(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            pass

    async def close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code, reason[:120])
        except ConnectionClosed:
            pass


class GroupWriter:
    """Group commit on the event loop: the items that arrive while a write is in flight go
    together in the next one, so a burst of logins costs a few transactions and thread
    hand-offs, not one each. `write(item)` returns once its own write is durable."""

    def __init__(self, write_many: Callable[[list], Awaitable[None]]):
        self._write_many = write_many
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None

    async def write(self, item) -> None:
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
                except Exception as exc:
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


class Directory:
    """The live sessions, for the engine's `.session list/kill` and `.status` (SessionDirectory).
    Called from engine threads; ending a session is handed to the event loop."""

    def __init__(self, server: "Server"):
        self._server = server
        self._lock = threading.Lock()
        self._clients: dict[str, Client] = {}

    def add(self, client: Client) -> None:
        with self._lock:
            self._clients[client.session.id] = client

    def remove(self, client: Client) -> None:
        if client.session is not None:
            with self._lock:
                if self._clients.get(client.session.id) is client:
                    del self._clients[client.session.id]

    def clients(self) -> list[Client]:
        with self._lock:
            return list(self._clients.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)

    # SessionDirectory
    def sessions(self) -> list[Session]:
        return [c.session for c in self.clients()]

    def kill(self, session_id: str, reason: str) -> bool:
        with self._lock:
            client = self._clients.get(session_id)
        if client is None:
            return False
        self._server.end_session_threadsafe(client, reason)
        return True


@dataclass
class ServerOptions:
    """Knobs that tests turn; production uses the defaults."""
    stream_threshold: int = STREAM_THRESHOLD
    chunk_rows: int = CHUNK_ROWS
    poll_interval: float = POLL_INTERVAL
    # argon2 runs here: one core stays free for the event loop, so a password storm slows
    # password logins, not the API-key traffic beside it.
    auth_workers: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) - 1))
    exec_workers: int = 8
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    open_timeout: float = 10.0


class Server:
    def __init__(self, engine: Engine, config: Config, *, ssl_context: ssl.SSLContext | None = None,
                 options: ServerOptions | None = None):
        self.store = engine.store
        self.config = config
        self.cfg: ServerConfig = config.server
        self.ssl_context = ssl_context
        self.options = options or ServerOptions()
        self.directory = Directory(self)
        self.engine = engine.serving(self.directory, lambda: f"{self.host}:{self.port}")
        self.metrics = Metrics()
        self.clients: set[Client] = set()
        self.trusted = _networks(self.cfg.trusted_proxies)
        self.allowed = _networks(self.cfg.allowed_ips)
        self.started = time.monotonic()
        self.host = self.cfg.host
        self.port = self.cfg.port
        self._auth_pool = ThreadPoolExecutor(self.options.auth_workers, thread_name_prefix="il-auth",
                                             initializer=_below_sessions)
        self._exec_pool = ThreadPoolExecutor(self.options.exec_workers, thread_name_prefix="il-exec")
        self._sweep_pool = ThreadPoolExecutor(1, thread_name_prefix="il-sweep")
        self._login_records = GroupWriter(lambda sessions: self._run(self._exec_pool, self.engine.record_api_key_logins,
                                                                     sessions))
        self._ws_server = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poke: asyncio.Event | None = None
        self._watcher: asyncio.Task | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()

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
            process_request=self._process_request, max_size=self.cfg.max_message_bytes, max_queue=8,
            ping_interval=self.options.ping_interval, ping_timeout=self.options.ping_timeout,
            open_timeout=self.options.open_timeout, close_timeout=5, logger=ws_logger,
            server_header=f"inputlayer/{__version__}",
            # No permessage-deflate: frames mix secrets (a new key) with text a client chose, the
            # mix that compression side channels (CRIME/BREACH) read; and the messages are small.
            compression=None)
        self._watcher = asyncio.create_task(self._watch_store())
        log.info("listening on %s", self.url)

    async def stop(self) -> None:
        """Stop accepting, let commands in flight finish, tell every client `Server shutting
        down` (close code 1001), then release the pools. The store is the caller's to close."""
        if self._stopping:
            return
        self._stopping = True
        log.info("shutting down: %d connections", len(self.clients))
        if self._ws_server is not None:
            self._ws_server.server.close()            # stop accepting; open connections stay
        await asyncio.gather(*(self._shutdown_client(c) for c in list(self.clients)), return_exceptions=True)
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._ws_server is not None:
            for connection in list(self._ws_server.all_connections):
                if connection.protocol.state is State.CONNECTING and connection.transport is not None:
                    connection.transport.abort()       # never finished its handshake
            self._ws_server.close(close_connections=True, code=1001, reason="Server shutting down")
            try:
                await asyncio.wait_for(self._ws_server.wait_closed(), 15)
            except asyncio.TimeoutError:
                log.warning("some connections did not close in time")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for pool in (self._auth_pool, self._exec_pool, self._sweep_pool):
            pool.shutdown(wait=True, cancel_futures=True)
        log.info("stopped")

    async def _shutdown_client(self, client: Client) -> None:
        client.ending = True
        try:
            await asyncio.wait_for(client.busy.acquire(), SHUTDOWN_GRACE)   # what is in flight ends
            acquired = True
        except asyncio.TimeoutError:
            acquired = False
        try:
            await client.close(1001, "Server shutting down")
        finally:
            if acquired:
                client.busy.release()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _run(self, pool: ThreadPoolExecutor, fn: Callable, *args, **kwargs):
        return self._loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))

    # --- HTTP ----------------------------------------------------------------------------

    def _address(self, connection: ServerConnection, headers: Headers) -> str:
        peer = connection.remote_address[0] if connection.remote_address else ""
        return client_address(peer, headers.get_all("X-Forwarded-For"), self.trusted)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        address = self._address(connection, request.headers)
        if self.allowed and not _in(_ip(address), self.allowed):
            log.info("refused %s from %s: address not allowed", path, address)
            return connection.respond(HTTPStatus.FORBIDDEN, "Forbidden\n")
        if path in WS_PATHS:
            if self._stopping:
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Server shutting down\n")
            return None
        if path == "/live":
            return _json_response(connection, HTTPStatus.OK, {"status": "alive"})
        if path == "/health":
            ok = await self._store_readable()
            body = {"status": "healthy" if ok else "degraded", "version": __version__,
                    "uptime_secs": int(time.monotonic() - self.started)}
            return _json_response(connection, HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)
        if path == "/ready":
            ok = not self._stopping and await self._store_readable(need_users=True)
            return _json_response(connection, HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                                  {"status": "ready" if ok else "not ready"})
        if path == "/metrics":
            return await self._metrics(connection, request, address)
        return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")

    async def _store_readable(self, need_users: bool = False) -> bool:
        def probe() -> bool:
            with self.store.read():
                count = self.store.user_count()
            return count > 0 or not need_users
        try:
            return await asyncio.wait_for(self._run(self._exec_pool, probe), 5)
        except Exception:        # any failure to read is "degraded"; the reason is not the client's
            return False

    async def _metrics(self, connection: ServerConnection, request: Request, address: str) -> Response:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _unauthorized(connection)
        left = self.engine.lockout.remaining(address)
        if left:
            self.metrics.logins[("bearer", "locked")] += 1
            response = connection.respond(HTTPStatus.TOO_MANY_REQUESTS,
                                          f"Too many failed attempts. Try again in {left}s\n")
            response.headers["Retry-After"] = str(left)
            return response
        session, _ = await self._authenticate(address, "bearer", self.engine.authenticate, token,
                                              source="http", address=address)
        if session is None:
            return _unauthorized(connection)
        try:
            limits = await self._run(self._exec_pool, self.engine.consume_rate, session)
        except RateLimited as exc:
            response = connection.respond(HTTPStatus.TOO_MANY_REQUESTS, exc.message + "\n")
            response.headers["Retry-After"] = str(exc.reset_in)
            _rate_headers(response, exc.limit, 0, exc.reset_in)
            return response
        locked = sum(1 for _, _, until in self.engine.lockout.entries() if until)
        text = self.metrics.render(connections=len(self.clients), sessions=len(self.directory), locked=locked,
                                   uptime=time.monotonic() - self.started)
        response = connection.respond(HTTPStatus.OK, text)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
        if limits:
            _rate_headers(response, *limits)
        return response

    # --- authentication ------------------------------------------------------------------

    async def _authenticate(self, peer: str, method: str, fn: Callable, *args,
                            **kwargs) -> tuple[Session | None, str]:
        """Run login/authenticate off the loop and count the outcome: (session, "") or
        (None, the message for the client)."""
        was_locked = bool(self.engine.lockout.remaining(peer))
        # A locked address costs no argon2 work: it must not queue behind the logins that do.
        pool = self._exec_pool if was_locked else self._auth_pool
        try:
            session = await self._run(pool, fn, *args, **kwargs)
        except AuthError as exc:
            outcome = "locked" if exc.message.startswith("Too many") else "failed"
            self.metrics.logins[(method, outcome)] += 1
            if not was_locked and self.engine.lockout.remaining(peer):
                self.metrics.lockouts += 1
                log.warning("address %s locked out after repeated failed authentications", peer)
            log.info("authentication %s: method=%s address=%s", outcome, method, peer)
            return None, exc.message
        self.metrics.logins[(method, "ok")] += 1
        return session, ""

    async def _auth_phase(self, client: Client) -> Session | None:
        """Wait for a successful login or authenticate, within the deadline. None: the connection
        was told why and closed."""
        timeout = self.cfg.auth_timeout_secs
        deadline = self._loop.time() + timeout
        while True:
            remaining = deadline - self._loop.time()
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                raw = await asyncio.wait_for(client.ws.recv(), remaining)
            except asyncio.TimeoutError:
                log.info("authentication timeout: address=%s", client.address)
                await client.send(_auth_error(f"Authentication timeout ({timeout}s)"))
                await client.close(1008, "Authentication timeout")
                return None
            msg = _parse(raw)
            kind = msg.get("type") if msg else None
            if kind == "login":
                username, password = _text(msg.get("username")), _text(msg.get("password"))
                method, call = "password", (self.engine.login, username, password)
            elif kind == "authenticate":
                api_key = _text(msg.get("api_key"))
                method, call = "api_key", (self.engine.authenticate, api_key)
            else:
                log.info("closed %s: a message before authentication", client.address)
                await client.send(_auth_error("Authentication required"))
                await client.close(1008, "Authentication required")
                return None
            async with client.busy:
                if client.ending:
                    return None
                # A valid key is checked here on the loop, sparing a thread hand-off; only its
                # audit record (an fsync) is written off it. Every refusal takes the full path.
                session = self.engine.check_api_key(api_key, source="ws", address=client.address) \
                    if method == "api_key" else None
                if session is not None:
                    await self._login_records.write(session)
                    self.metrics.logins[(method, "ok")] += 1
                else:
                    session, problem = await self._authenticate(client.address, method, *call, source="ws",
                                                                address=client.address)
                if session is None:
                    await client.send(_auth_error(problem))
                    continue
                if client.kg is not None:
                    try:
                        await self._run(self._exec_pool, self.engine.bind_kg, session, client.kg)
                    except (PermissionDenied, SessionEnded, CommandError):
                        log.info("refused ?kg= for %s from %s", session.username, client.address)
                        await client.send(_error("Access denied"))
                        await client.close(1008, "Access denied")
                        return None
                client.session = session
                self.directory.add(client)
                log.info("authenticated: user=%s auth=%s address=%s session=%s", session.username,
                         session.auth, client.address, session.id)
                await client.send(json.dumps({
                    "type": "authenticated", "session_id": session.id,
                    "knowledge_graph": session.knowledge_graph or "", "version": __version__,
                    "role": session.login_role, "username": session.username}))
                return session

    # --- the session ---------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        address = self._address(ws, ws.request.headers)
        query = parse_qs(urlsplit(ws.request.path).query)
        kg = query["kg"][0] if query.get("kg") else None
        client = Client(ws, address, kg)
        self.clients.add(client)
        self.metrics.connections_total += 1
        log.debug("connection opened: address=%s", address)
        try:
            if self._stopping:
                await client.close(1001, "Server shutting down")
                return
            session = await self._auth_phase(client)
            if session is not None:
                await self._session_phase(client)
        except ConnectionClosed:
            pass
        except Exception as exc:      # never let one connection take the server down
            log.error("internal error on a connection from %s: %s", address, _describe(exc))
            await client.close(1011, "Internal error")
        finally:
            self.clients.discard(client)
            self.directory.remove(client)
            code = ws.close_code
            log.debug("connection closed: address=%s code=%s", address, code)

    async def _session_phase(self, client: Client) -> None:
        """Answer messages one at a time, in order. Those that arrive meanwhile wait in the
        connection's buffer (max_queue), which is what pushes back on a client that floods."""
        try:
            async for raw in client.ws:
                allowed = client.allow(self._loop.time())
                async with client.busy:
                    if client.ending:
                        return
                    await self._answer(client, raw if allowed else None)
        except ConnectionClosed:
            pass

    async def _answer(self, client: Client, raw: str | bytes | None) -> None:
        if raw is None:
            await client.send(_error("Rate limit exceeded"))
            return
        if isinstance(raw, bytes):
            client.ending = True
            await client.send(_error("Binary frames are not supported: send JSON text frames"))
            await client.close(1003, "Binary frames are not supported")
            return
        msg = _parse(raw)
        if msg is None:
            await client.send(_error("Invalid message: expected a JSON object with a \"type\""))
            return
        kind = msg.get("type")
        if kind == "ping":
            await client.send('{"type": "pong"}')
        elif kind in ("login", "authenticate"):
            await client.send(_error("Already authenticated"))
        elif kind == "execute":
            program = msg.get("program")
            if not isinstance(program, str):
                await client.send(_error("Invalid message: \"program\" must be a string"))
                return
            await self._execute(client, program)
        else:
            shown = f" '{clip(kind, 40)}'" if isinstance(kind, str) and kind.isprintable() else ""
            await client.send(_error(f"Unknown message type{shown}: use execute or ping"))

    async def _execute(self, client: Client, program: str) -> None:
        planned = parse_program(program)
        shape = program_shape(planned)
        name = shape.name
        started = time.perf_counter()
        try:
            if shape.quick:
                results, ended = self._run_program(client.session, planned, shape.writes, defer_denial_audit=True)
            else:
                results, ended = await self._run(self._exec_pool, self._run_program, client.session, planned,
                                                 shape.writes)
        except SessionEnded as exc:
            self.metrics.command(name, "ended", time.perf_counter() - started)
            await self.end_session(client, exc.reason)
            return
        except PermissionDenied as exc:
            if isinstance(exc, UnrecordedDenial):
                # Refused on the event loop: its audit record (an fsync) is written off it, and
                # before the reply, so the client never sees a refusal that is not yet recorded.
                await self._run(self._exec_pool, self.engine.record_denial, exc.audit_record)
            self._finish(client, name, "denied", started)
            await client.send(_error(exc.message))
            return
        except CommandError as exc:
            self._finish(client, name, "error", started)
            await client.send(_error(exc.message))
            return
        except StoreError as exc:
            self._finish(client, name, "error", started)
            await client.send(_error(str(exc)))
            return
        except Exception as exc:
            self._finish(client, name, "internal_error", started)
            log.error("internal error running %s for %s: %s", name, client.session.username, _describe(exc))
            await client.send(_error("Internal error: the command failed; see the server log"))
            return
        elapsed = time.perf_counter() - started
        self._finish(client, name, "ok", started)
        if shape.writes:
            self._poke.set()              # other sessions may have just lost their principal
        for frame in reply_frames(combine(results), int(elapsed * 1000), threshold=self.options.stream_threshold,
                                  chunk_rows=self.options.chunk_rows):
            await client.ws.send(frame)
        if ended is not None:
            await self.end_session(client, ended)

    def _finish(self, client: Client, name: str, outcome: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.metrics.command(name, outcome, seconds)
        log.debug("command %s by %s: %s in %.1f ms", name, client.session.username, outcome, seconds * 1000)

    def _run_program(self, session: Session, planned: list, writes: bool, *,
                     defer_denial_audit: bool = False) -> tuple[list[Result], str | None]:
        """Run the program, then check that the session survived it (a user who revoked their
        own key is told after the reply)."""
        results = self.engine.execute_program(session, planned, defer_denial_audit=defer_denial_audit)
        if not writes:
            return results, None         # reading cannot end one's own session
        try:
            self.engine.check_session(session)
        except SessionEnded as exc:
            return results, exc.reason
        return results, None

    # --- ending sessions -----------------------------------------------------------------

    async def end_session(self, client: Client, reason: str) -> None:
        """Tell the client why and close (1008), at once."""
        if client.ending:
            return
        client.ending = True
        self.directory.remove(client)
        user = client.session.username if client.session else "-"
        log.info("session ended: user=%s address=%s reason=%s", user, client.address, reason)
        await client.send(_error(f"Session ended: {reason}"))
        await client.close(1008, f"Session ended: {reason}")

    def end_session_threadsafe(self, client: Client, reason: str) -> None:
        self._loop.call_soon_threadsafe(lambda: self._spawn(self.end_session(client, reason)))
        self._loop.call_soon_threadsafe(self._poke.set)

    async def _watch_store(self) -> None:
        """End the sessions whose principal is gone: right after a command that changed the
        store, when another process commits (PRAGMA data_version), and every second anyway
        (keys expire with time)."""
        last_mark = None
        last_full = 0.0
        while True:
            try:
                try:
                    await asyncio.wait_for(self._poke.wait(), self.options.poll_interval)
                except asyncio.TimeoutError:
                    pass
                poked = self._poke.is_set()
                self._poke.clear()
                mark = await self._run(self._sweep_pool, self._data_version)
                now = self._loop.time()
                if not (poked or mark != last_mark or now - last_full >= FULL_SWEEP_INTERVAL):
                    continue
                last_mark, last_full = mark, now
                if not len(self.directory):
                    continue
                for client, reason in await self._run(self._sweep_pool, self._sweep):
                    self._spawn(self.end_session(client, reason))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("session check failed: %s", _describe(exc))
                await asyncio.sleep(self.options.poll_interval)

    def _data_version(self) -> int:
        with self.store.read():
            return self.store.data_version()

    def _sweep(self) -> list[tuple[Client, str]]:
        ended = []
        for client in self.directory.clients():
            if client.ending:
                continue
            try:
                self.engine.check_session(client.session)
            except SessionEnded as exc:
                ended.append((client, exc.reason))
        return ended


def _json_response(connection: ServerConnection, status: HTTPStatus, body: dict) -> Response:
    response = connection.respond(status, json.dumps(body) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


def _unauthorized(connection: ServerConnection) -> Response:
    response = connection.respond(HTTPStatus.UNAUTHORIZED, "Invalid or missing API key\n")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _parse(raw: str | bytes) -> dict | None:
    if not isinstance(raw, str):
        return None
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return msg if isinstance(msg, dict) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _describe(exc: BaseException) -> str:
    """An exception as one log line without its arguments (which might hold a secret): its type
    and where it was raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}" if tb else ""
    return f"{type(exc).__name__}{where}"
