"""The client's state machine: the frames to send, and what each received frame means
(a login's outcome, a reply, possibly streamed, or a refusal by kind)."""

from __future__ import annotations

from dataclasses import dataclass

from ..result import Result
from .frames import ErrorKind, Phase, authenticate, execute, login, read


class ProtocolViolation(Exception):
    """The peer sent something that is not this protocol."""


@dataclass(frozen=True)
class Authenticated:
    session_id: str | None
    username: str | None
    role: str | None
    knowledge_graph: str | None          # None: bound to no KG
    features: frozenset[str] = frozenset()   # protocol additions the server announced
    max_message_bytes: int | None = None     # the largest message the server accepts, when it says


@dataclass(frozen=True)
class Refused:
    """A login refused (`auth_error`: the connection stays open for another try) or an error
    reply. `closing`: the server is about to close the connection."""
    kind: ErrorKind
    message: str
    closing: bool = False


@dataclass(frozen=True)
class Reply:
    result: Result
    elapsed_ms: int | None = None     # the server's execution_time_ms, when it says
    results: tuple[Result, ...] = ()     # each line's own, in the reply to an atomic program


ClientEvent = Authenticated | Refused | Reply


class ClientProtocol:
    """One connection as the client sees it: frames to send, and what the received frames mean.
    `receive` returns None for a frame that finishes nothing (a pong, a stream chunk, a
    notification)."""

    def __init__(self) -> None:
        self.phase = Phase.AUTH
        self._stream: dict | None = None
        self._rows: list[list[str]] = []

    def login(self, username: str, password: str) -> str:
        self.phase = Phase.AUTH             # the next reply answers the login
        return login(username, password)

    def authenticate(self, api_key: str) -> str:
        self.phase = Phase.AUTH
        return authenticate(api_key)

    def execute(self, program: str, *, atomic: bool = False, note: str = "") -> str:
        return execute(program, atomic=atomic, note=note)

    def receive(self, raw: str | bytes) -> ClientEvent | None:
        msg = read(raw)
        if msg is None:
            raise ProtocolViolation("bad reply")
        if self.phase is Phase.AUTH:
            return self._receive_auth(msg)
        if self._stream is not None:
            return self._receive_stream(msg)
        kind = msg.get("type")
        if kind == "result":
            results = msg.get("results")
            each = tuple(_result(r.get("columns") or [], r.get("rows") or [], None)
                         for r in results if isinstance(r, dict)) if isinstance(results, list) else ()
            return Reply(_result(msg.get("columns") or [], msg.get("rows") or [], msg.get("switched_kg")), _elapsed(msg), each)
        if kind == "result_start":
            self._stream, self._rows = msg, []
            return None
        if kind == "error":
            return self._error(str(msg.get("message", "error")))
        return None                         # a pong, or a message that is not a reply

    def _receive_auth(self, msg: dict) -> ClientEvent:
        kind = msg.get("type")
        if kind == "authenticated":
            self.phase = Phase.SESSION
            features = msg.get("features")
            limit = msg.get("max_message_bytes")
            return Authenticated(msg.get("session_id"), msg.get("username"), msg.get("role"),
                                 msg.get("knowledge_graph") or None,
                                 frozenset(f for f in features if isinstance(f, str)) if isinstance(features, list)
                                 else frozenset(),
                                 limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None)
        text = str(msg.get("message") or "unexpected reply")
        if kind == "auth_error":
            locked = text.startswith(ErrorKind.LOCKED_OUT.value)
            return Refused(ErrorKind.LOCKED_OUT if locked else ErrorKind.INVALID_CREDENTIALS, text)
        return Refused(ErrorKind.of(text), text, closing=True)

    def _receive_stream(self, msg: dict) -> ClientEvent | None:
        kind = msg.get("type")
        if kind == "result_chunk":
            self._rows.extend(msg.get("rows") or [])
            return None
        if kind == "result_end":
            start, rows = self._stream or {}, self._rows
            self._stream, self._rows = None, []
            return Reply(_result(start.get("columns") or [], rows, start.get("switched_kg")), _elapsed(start))
        if kind == "error":
            self._stream, self._rows = None, []
            return Refused(ErrorKind.COMMAND, str(msg.get("message", "error")))
        return None

    def _error(self, message: str) -> Refused:
        kind = ErrorKind.of(message)
        if kind is ErrorKind.SESSION_ENDED:
            self.phase = Phase.CLOSED
            return Refused(kind, message[len(kind.value):], closing=True)
        return Refused(kind, message)


def _elapsed(msg: dict) -> int | None:
    value = msg.get("execution_time_ms")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _result(columns: list, rows: list, switched_kg: str | None) -> Result:
    return Result([str(c) for c in columns], [["" if v is None else str(v) for v in row] for row in rows],
                  switched_kg)
