"""The remote target: the shell's Backend over the WebSocket protocol (protocol.md).

Synchronous (the shell is), on the `websockets` sync client, whose background thread answers the
server's keep-alive pings while the shell waits for the user. One request at a time: a lock makes
each execute and its reply one exchange, so a completer thread may share the backend.
"""

from __future__ import annotations

import json
import ssl
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from .config import Config
from .errors import AuthError, CommandError, SessionEnded, TargetUnreachable
from .result import Result

SESSION_ENDED = "Session ended: "


def _legacy_flag() -> dict:
    """websockets 17 asks callers of the sync connect() to say they want one plain connection."""
    import inspect

    from websockets.sync.client import connect
    return {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


LEGACY = _legacy_flag()
OPEN_TIMEOUT = 10.0
MAX_REPLY_BYTES = 64 * 1024 * 1024     # the server streams large results; this bounds one frame


class RemoteBackend:
    def __init__(self, url: str, *, ca_file: str | None = None, config: Config | None = None,
                 connect: bool = True, **socket_options: Any):
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise TargetUnreachable(f"cannot reach {url}: the URL must be ws://HOST:PORT/ws or wss://HOST:PORT/ws")
        self.url = url
        self.secure = parts.scheme == "wss"
        try:
            port = parts.port or (443 if self.secure else 80)
        except ValueError:
            raise TargetUnreachable(f"cannot reach {url}: invalid port") from None
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.target = f"{host}:{port}"
        self.ca_file = ca_file
        self.config = config
        self._socket_options = socket_options
        self._ws = None
        self._lock = threading.RLock()
        self._credentials: tuple[str, ...] | None = None
        self.session_id: str | None = None
        self.username: str | None = None
        self.role: str | None = None
        self.knowledge_graph: str | None = None
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
            self._ws = connect(url, ssl=ctx, open_timeout=OPEN_TIMEOUT, max_size=MAX_REPLY_BYTES,
                               user_agent_header="inputlayer-shell", **LEGACY, **self._socket_options)
        except ssl.SSLCertVerificationError as exc:
            raise TargetUnreachable(f"cannot reach {self.url}: certificate not trusted "
                                    f"({exc.verify_message}); pass --ca-file") from None
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise TargetUnreachable(f"cannot reach {self.url}: {_reason(exc)}") from None

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass

    def _lost(self, exc: BaseException) -> TargetUnreachable:
        self._drop()
        return TargetUnreachable(f"connection to {self.url} lost: {_reason(exc)}")

    def _send(self, message: dict) -> None:
        from websockets.exceptions import ConnectionClosed

        if self._ws is None:
            raise TargetUnreachable(f"not connected to {self.url}")
        try:
            self._ws.send(json.dumps(message))
        except (ConnectionClosed, OSError) as exc:
            raise self._lost(exc) from None

    def _recv(self) -> dict:
        from websockets.exceptions import ConnectionClosed

        try:
            raw = self._ws.recv()
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            raise self._lost(exc) from None
        try:
            message = json.loads(raw)
        except (TypeError, ValueError):
            message = None
        if not isinstance(message, dict):
            self._drop()
            raise TargetUnreachable(f"{self.url} does not speak the InputLayer protocol (bad reply)")
        return message

    # --- authentication ------------------------------------------------------------------

    def login(self, username: str, password: str) -> None:
        with self._lock:
            self._auth({"type": "login", "username": username, "password": password})
            self._credentials = ("password", username, password)

    def authenticate(self, api_key: str) -> None:
        with self._lock:
            self._auth({"type": "authenticate", "api_key": api_key})
            self._credentials = ("api_key", api_key)

    def _auth(self, message: dict) -> None:
        if self._ws is None:
            self._connect()
        self._send(message)
        reply = self._recv()
        kind = reply.get("type")
        if kind == "authenticated":
            self.session_id = reply.get("session_id")
            self.username = reply.get("username")
            self.role = reply.get("role")
            self.knowledge_graph = reply.get("knowledge_graph") or None
            return
        text = str(reply.get("message") or "unexpected reply")
        if kind == "auth_error":
            raise AuthError(text)
        self._drop()
        raise AuthError(text)

    def reconnect(self) -> None:
        """After a lost connection: connect again and log in with the same credentials, back on
        the knowledge graph the session was using when it can still be read."""
        with self._lock:
            if self._credentials is None:
                raise TargetUnreachable(f"not connected to {self.url}")
            self._drop()
            kg = self.knowledge_graph
            self._connect(kg)
            try:
                self._auth(self._auth_message())
            except AuthError as exc:
                if kg is None or exc.args[0] != "Access denied":
                    raise
                self._connect()                       # the KG went away: the default one, then
                self._auth(self._auth_message())

    def _auth_message(self) -> dict:
        if self._credentials[0] == "password":
            return {"type": "login", "username": self._credentials[1], "password": self._credentials[2]}
        return {"type": "authenticate", "api_key": self._credentials[1]}

    # --- commands ------------------------------------------------------------------------

    def execute(self, line: str) -> Result:
        with self._lock:
            if self._ws is None:
                raise TargetUnreachable(f"connection to {self.url} lost")
            self._send({"type": "execute", "program": line})
            while True:
                reply = self._recv()
                kind = reply.get("type")
                if kind == "result":
                    return self._result(reply["columns"], reply["rows"], reply.get("switched_kg"))
                if kind == "result_start":
                    return self._stream(reply)
                if kind == "error":
                    message = str(reply.get("message", "error"))
                    if message.startswith(SESSION_ENDED):
                        self._drop()
                        raise SessionEnded(message[len(SESSION_ENDED):])
                    raise CommandError(message)
                if kind == "pong":
                    continue
                # Notifications and other unsolicited messages are not replies.

    def _stream(self, start: dict) -> Result:
        rows: list[list[str]] = []
        while True:
            reply = self._recv()
            kind = reply.get("type")
            if kind == "result_chunk":
                rows.extend(reply.get("rows") or [])
            elif kind == "result_end":
                return self._result(start["columns"], rows, start.get("switched_kg"))
            elif kind == "error":
                raise CommandError(str(reply.get("message", "error")))

    def _result(self, columns: list, rows: list, switched_kg: str | None) -> Result:
        if switched_kg is not None:
            self.knowledge_graph = switched_kg
        return Result([str(c) for c in columns], [["" if v is None else str(v) for v in row] for row in rows],
                      switched_kg)

    def close(self) -> None:
        with self._lock:
            self._drop()


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
