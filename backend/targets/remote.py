"""The remote target: the shell's Backend over the WebSocket protocol (protocol.md).

Synchronous (the shell is), on the `websockets` sync client, whose background thread answers the
server's keep-alive pings while the shell waits for the user. One request at a time: a lock makes
each execute and its reply one exchange, so a completer thread may share the backend. A reader
thread per connection receives every frame, so a connection that closes while the shell is idle
(a server restart, `.session kill`) is noticed at once and told to the `watch()` listener. What
the frames mean is backend/protocol/'s ClientProtocol; this module only moves them.
"""

from __future__ import annotations

import queue
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from ..errors import AuthError, CommandError, NotSent, SessionEnded, TargetUnreachable
from ..protocol import (
    Authenticated,
    ClientProtocol,
    ErrorKind,
    ProtocolViolation,
    Refused,
    Reply,
)
from ..result import Result


def _legacy_flag() -> dict:
    """websockets 17 asks callers of the sync connect() to say they want one plain connection."""
    import inspect

    from websockets.sync.client import connect
    return {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


LEGACY = _legacy_flag()
OPEN_TIMEOUT = 10.0
MAX_REPLY_BYTES = 64 * 1024 * 1024     # the server streams large results; this bounds one frame
MAX_MESSAGE_BYTES = 1024 * 1024        # max_message_bytes of a server that does not announce it


CLOSE_TIMEOUT = 2.0                    # leaving a server that does not answer must not hang the shell


class _KgRefused(AuthError):
    """The `?kg=` asked for at reconnection can no longer be read."""


class _Closed:
    """Queued by the reader after the last frame of a connection."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class _Link:
    """One WebSocket connection and the thread that receives its frames into a queue."""

    def __init__(self, ws: Any, on_closed: Callable[["_Link"], None]):
        self.ws = ws
        self.frames: queue.SimpleQueue[str | bytes | _Closed] = queue.SimpleQueue()
        threading.Thread(target=self._read, args=(on_closed,), name="remote-reader", daemon=True).start()

    def _read(self, on_closed: Callable[["_Link"], None]) -> None:
        while True:
            try:
                raw = self.ws.recv()
            except Exception as exc:  # noqa: BLE001 - any end of the connection ends this reader
                self.frames.put(_Closed(exc))
                on_closed(self)
                return
            self.frames.put(raw)


# What a listener is told when the connection ends while nobody waits on it: the message, and
# whether the server ended the session (True) or the connection was lost (False).
Listener = Callable[[str, bool], None]


class RemoteBackend:
    def __init__(self, url: str, *, ca_file: str | None = None, connect: bool = True, **socket_options: Any):
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise TargetUnreachable(_url_advice(url))
        self.url = url
        self.secure = parts.scheme == "wss"
        try:
            port = parts.port or (443 if self.secure else 80)
        except ValueError:
            raise TargetUnreachable(f"cannot reach {url}: invalid port") from None
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.target = f"{host}:{port}"
        self.ca_file = ca_file
        self._socket_options = socket_options
        self._link: _Link | None = None
        self._listener: Listener | None = None
        self._ended: str | None = None            # the server ended the session: never log in again
        self._protocol = ClientProtocol()
        self.server_time_ms: int | None = None    # the last reply's execution_time_ms
        self._lock = threading.RLock()
        self._credentials: tuple[str, ...] | None = None
        self.session_id: str | None = None
        self.username: str | None = None
        self.role: str | None = None
        self.knowledge_graph: str | None = None
        self.features: frozenset[str] = frozenset()     # protocol additions the server announced
        self.max_message_bytes = MAX_MESSAGE_BYTES
        if connect:
            self._connect()

    # --- connection ----------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.secure:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()
        except (OSError, ssl.SSLError) as exc:
            raise TargetUnreachable(f"cannot reach {self.url}: cannot load CA file {self.ca_file}: "
                                    f"{getattr(exc, 'strerror', None) or exc}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def _connect(self, kg: str | None = None) -> None:
        from websockets.exceptions import InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        url = self.url
        if kg:
            url += ("&" if "?" in url else "?") + "kg=" + quote(kg, safe="")
        ctx = self._ssl_context()
        try:
            ws = connect(url, ssl=ctx, open_timeout=OPEN_TIMEOUT, close_timeout=CLOSE_TIMEOUT,
                         max_size=MAX_REPLY_BYTES, user_agent_header="inputlayer-shell", **LEGACY,
                         **self._socket_options)
        except ssl.SSLCertVerificationError as exc:
            raise TargetUnreachable(f"cannot reach {self.url}: certificate not trusted "
                                    f"({exc.verify_message}); pass --ca-file") from None
        except ssl.SSLError:
            plain = "ws://" + self.url[len("wss://"):]
            raise TargetUnreachable(f"cannot reach {self.url}: TLS handshake failed: is the server using TLS? "
                                    f"try {plain}") from None
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise TargetUnreachable(f"cannot reach {self.url}: {_reason(exc)}") from None
        self._protocol = ClientProtocol()
        self._link = _Link(ws, self._closed_while_idle)

    def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            try:
                link.ws.close()
            except Exception:  # noqa: BLE001, S110 -- already giving the connection up
                pass

    def _lost(self, exc: BaseException) -> TargetUnreachable | SessionEnded:
        from websockets.exceptions import ConnectionClosed

        self._drop()
        said = exc.rcvd.reason if isinstance(exc, ConnectionClosed) and exc.rcvd is not None else ""
        if ErrorKind.of(said) is ErrorKind.SESSION_ENDED:      # the close frame says it too
            self._ended = said[len(ErrorKind.SESSION_ENDED.value):]
            return SessionEnded(self._ended)
        return TargetUnreachable(f"connection to {self.url} lost: {_reason(exc)}")

    def _send(self, frame: str) -> None:
        from websockets.exceptions import ConnectionClosed

        if self._link is None:
            raise NotSent(f"not connected to {self.url}")
        try:
            self._link.ws.send(frame)
        except (ConnectionClosed, OSError) as exc:
            lost = self._lost(exc)
            raise (NotSent(str(lost), discovered=True) if isinstance(lost, TargetUnreachable) else lost) from None

    def _next_event(self) -> Authenticated | Refused | Reply:
        """Receive until a frame finishes something (pongs and stream chunks do not)."""
        assert self._link is not None
        while True:
            raw = self._link.frames.get()
            if isinstance(raw, _Closed):
                raise self._lost(raw.exc)
            try:
                event = self._protocol.receive(raw)
            except ProtocolViolation:
                self._drop()
                raise TargetUnreachable(f"{self.url} does not speak the InputLayer protocol (bad reply)") from None
            if event is not None:
                return event

    # --- a connection that ends while idle -------------------------------------------------

    def watch(self, listener: Listener) -> None:
        """Call `listener` (from another thread) when the connection ends while no request waits."""
        self._listener = listener

    def _closed_while_idle(self, link: _Link) -> None:
        """The reader's last act. When a request is waiting, it reads the end itself and raises;
        otherwise (the lock is free, or freed with the end still queued) the end is read here."""
        with self._lock:
            if link is not self._link:
                return                                # dropped by us, or already reported
            try:
                told = self._read_to_the_end()
            finally:
                self._drop()
        if self._listener is not None:
            self._listener(*told)

    def _read_to_the_end(self) -> tuple[str, bool]:
        """What a connection's queued frames say about its end: (message, whether ended)."""
        try:
            while True:
                event = self._next_event()
                if isinstance(event, Refused) and event.kind is ErrorKind.SESSION_ENDED:
                    self._ended = event.message
                    return SessionEnded(event.message).message, True
        except SessionEnded as exc:
            return exc.message, True
        except TargetUnreachable as exc:
            return str(exc), False

    # --- authentication ------------------------------------------------------------------

    def login(self, username: str, password: str) -> None:
        with self._lock:
            self._auth(lambda: self._protocol.login(username, password))
            self._credentials = ("password", username, password)

    def authenticate(self, api_key: str) -> None:
        with self._lock:
            self._auth(lambda: self._protocol.authenticate(api_key))
            self._credentials = ("api_key", api_key)

    def _auth(self, make_frame: Callable[[], str]) -> None:
        if self._link is None:
            self._connect()
        self._send(make_frame())
        event = self._next_event()
        if isinstance(event, Authenticated):
            self.session_id, self.username = event.session_id, event.username
            self.role, self.knowledge_graph = event.role, event.knowledge_graph
            self.features = event.features
            self.max_message_bytes = event.max_message_bytes or MAX_MESSAGE_BYTES
            return
        text = event.message if isinstance(event, Refused) else "unexpected reply"
        if isinstance(event, Refused) and not event.closing:
            raise AuthError(text)             # the server keeps the connection for another try
        self._drop()
        if isinstance(event, Refused) and event.kind is ErrorKind.ACCESS_DENIED:
            raise _KgRefused(text)
        raise AuthError(text)

    def reconnect(self) -> None:
        """After a lost connection: connect again and log in with the same credentials, back on
        the knowledge graph the session was using when it can still be read."""
        with self._lock:
            if self._ended is not None:
                raise SessionEnded(self._ended)    # the server ended it: logging in again would undo that
            if self._credentials is None:
                raise TargetUnreachable(f"not connected to {self.url}")
            self._drop()
            kg = self.knowledge_graph
            self._connect(kg)
            try:
                self._auth(self._auth_frame)
            except _KgRefused:
                if kg is None:
                    raise
                self._connect()                       # the KG went away: the default one, then
                self._auth(self._auth_frame)

    def _auth_frame(self) -> str:
        assert self._credentials is not None
        if self._credentials[0] == "password":
            return self._protocol.login(self._credentials[1], self._credentials[2])
        return self._protocol.authenticate(self._credentials[1])

    # --- commands ------------------------------------------------------------------------

    def execute(self, line: str) -> Result:
        frame = self._protocol.execute(line)
        # The server closes the connection on a message over its limit: refuse the line here,
        # so it fails alone, as it would locally.
        limit = self.max_message_bytes
        if len(frame) > limit // 4 and len(frame.encode()) > limit:
            raise CommandError(f"Line too long: {len(line.encode())} bytes; a message to this server "
                               f"holds at most {limit} bytes")
        with self._lock:
            if self._ended is not None:
                raise SessionEnded(self._ended)
            if self._link is None:
                raise NotSent(f"connection to {self.url} lost")
            self._send(frame)
            try:
                event = self._next_event()
            except KeyboardInterrupt:
                self._drop()        # its reply would answer the next request: start afresh
                raise
            if isinstance(event, Reply):
                if event.result.switched_kg is not None:
                    self.knowledge_graph = event.result.switched_kg
                self.server_time_ms = event.elapsed_ms
                return event.result
            if isinstance(event, Refused) and event.kind is ErrorKind.SESSION_ENDED:
                self._drop()
                self._ended = event.message
                raise SessionEnded(event.message)
            raise CommandError(event.message if isinstance(event, Refused) else "unexpected reply")

    def run_atomic(self, lines: list[str], *, note: str = "") -> list[Result]:
        """Run `lines` on the server in one transaction (`"atomic": true`), or refuse, before
        sending anything, on a server that would run them one by one."""
        with self._lock:
            if self._ended is not None:
                raise SessionEnded(self._ended)
            if self._link is None:
                raise NotSent(f"connection to {self.url} lost")
            if "atomic" not in self.features:
                raise CommandError("The server cannot run several commands as one transaction (it is older "
                                   "than this shell); nothing was sent")
            self._send(self._protocol.execute("\n".join(lines), atomic=True, note=note))
            event = self._next_event()
            if isinstance(event, Reply):
                return list(event.results)
            if isinstance(event, Refused) and event.kind is ErrorKind.SESSION_ENDED:
                self._drop()
                self._ended = event.message
                raise SessionEnded(event.message)
            raise CommandError(event.message if isinstance(event, Refused) else "unexpected reply")

    def close(self) -> None:
        with self._lock:
            self._drop()


def _url_advice(url: str) -> str:
    """What to type instead of a URL that is no ws:// or wss:// URL (`http://h:p/`, `h:p`)."""
    parts = urlsplit(url if "://" in url else "//" + url)
    try:
        where = parts.netloc if parts.hostname and parts.port else "HOST:PORT"
    except ValueError:
        where = "HOST:PORT"
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"cannot reach {url}: use {scheme}://{where}/ws"


def _reason(exc: BaseException) -> str:
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd
        if frame is not None and frame.reason:
            return f"{frame.reason} (close code {frame.code})"
        if frame is not None:
            return f"closed by the server (close code {frame.code})"
        return "the connection was closed"
    if isinstance(exc, InvalidStatus):
        return f"the server answered HTTP {exc.response.status_code}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
