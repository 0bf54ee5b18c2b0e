"""The wire protocol (protocol.md), sans I/O: both edges build and read frames here, and the
auth-phase -> session-phase rules live in two state machines, `ServerProtocol` and
`ClientProtocol`, that take received text and return what to do. Neither touches a socket, so
the rules are tested by feeding them messages.

Error kinds travel as message text on the wire (the official SDK reads that text); `ErrorKind`
names each outcome, and only this module turns a kind into text and text back into a kind.
"""

from __future__ import annotations

import collections
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from .language.registry import clip
from .result import Result
from .store.codec import json_encoder

STREAM_THRESHOLD = 1 << 20          # a reply whose JSON is larger than this is streamed
CHUNK_ROWS = 500                    # at most this many rows in one result_chunk
CHUNK_BYTES = 512 * 1024            # ...and about this many bytes, so each chunk fits a client's limit
RATE_LIMIT = 100                    # messages a second per connection (each line of a program counts)
AUTH_RATE_LIMIT = 10                # messages a second per connection before it has logged in
MAX_PROGRAM_LINES = 10_000          # lines in one execute (`max_program_lines`)
MAX_LINE_CHARS = 65_536             # one line: the parser takes ~3 ms for the worst of this size
COST_CHARS = 4096                   # a program costs at least one message per this many characters
FEATURES = ("atomic",)              # what this server adds to the protocol, told at login
MAX_NOTE_CHARS = 200                # an atomic program's note, added to its audit source

POLICY_VIOLATION = 1008
UNSUPPORTED_DATA = 1003
GOING_AWAY = 1001
INTERNAL_ERROR = 1011

# Built once: json.dumps would build an encoder for every frame (measured on the result path).
_to_json = json_encoder(", ", ": ")


class ErrorKind(enum.Enum):
    """Why a request was refused. The value is how the text on the wire starts (or is)."""
    INVALID_CREDENTIALS = "Invalid credentials"
    LOCKED_OUT = "Too many failed attempts"
    AUTH_TIMEOUT = "Authentication timeout"
    AUTH_REQUIRED = "Authentication required"
    ACCESS_DENIED = "Access denied"
    ALREADY_AUTHENTICATED = "Already authenticated"
    SESSION_ENDED = "Session ended: "
    RATE_LIMITED = "Rate limit exceeded"
    PROGRAM_TOO_LONG = "Program too long"
    LINE_TOO_LONG = "Line too long"
    INVALID_MESSAGE = "Invalid message"
    UNKNOWN_TYPE = "Unknown message type"
    BINARY_FRAME = "Binary frames are not supported"
    INTERNAL = "Internal error"
    COMMAND = ""                       # any other refusal of a command: its own message

    @classmethod
    def of(cls, message: str) -> ErrorKind:
        """The kind of an error text received from a server."""
        if message.startswith(cls.SESSION_ENDED.value):
            return cls.SESSION_ENDED
        for kind in (cls.ACCESS_DENIED, cls.ALREADY_AUTHENTICATED, cls.RATE_LIMITED):
            if message == kind.value:
                return kind
        return cls.COMMAND


# --- frames ------------------------------------------------------------------------------------

def login(username: str, password: str) -> str:
    return json.dumps({"type": "login", "username": username, "password": password})


def authenticate(api_key: str) -> str:
    return json.dumps({"type": "authenticate", "api_key": api_key})


def execute(program: str, *, atomic: bool = False, note: str = "") -> str:
    """An execute frame; `atomic` asks for all of the program's lines or none (a feature: only
    to a server that announced it)."""
    if not atomic:
        return json.dumps({"type": "execute", "program": program})
    return json.dumps({"type": "execute", "program": program, "atomic": True, "note": note})


def error(message: str) -> str:
    return _to_json({"type": "error", "message": message})


def auth_error(message: str) -> str:
    return _to_json({"type": "auth_error", "message": message})


PONG = '{"type": "pong"}'


def authenticated(session_id: str, knowledge_graph: str, version: str, role: str, username: str,
                  max_message_bytes: int | None = None) -> str:
    message: dict[str, Any] = {"type": "authenticated", "session_id": session_id, "knowledge_graph": knowledge_graph,
               "version": version, "role": role, "username": username, "features": list(FEATURES)}
    if max_message_bytes is not None:     # so a client refuses a longer line instead of losing the session
        message["max_message_bytes"] = max_message_bytes
    return json.dumps(message)


def session_ended_text(reason: str) -> str:
    return ErrorKind.SESSION_ENDED.value + reason


def reply_frames(result: Result, elapsed_ms: int, *, threshold: int = STREAM_THRESHOLD,
                 chunk_rows: int = CHUNK_ROWS, chunk_bytes: int = CHUNK_BYTES) -> list[str]:
    """The JSON text frames that answer one execute: one `result`, or a stream when that would
    be larger than `threshold` bytes."""
    rows = result.rows
    text = _to_json(_result_message(result, elapsed_ms))
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


def atomic_reply(results: list[Result], combined: Result, elapsed_ms: int) -> str:
    """The one `result` frame that answers an atomic program: the program's combined result, as
    for any program (so a reader that knows nothing of `results` still reads it), and each
    line's own result in `results`."""
    message = _result_message(combined, elapsed_ms)
    message["results"] = [{"columns": r.columns, "rows": r.rows} for r in results]
    return _to_json(message)


def _result_message(result: Result, elapsed_ms: int) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "result", "columns": result.columns, "rows": result.rows,
                               "row_count": len(result.rows), "total_count": len(result.rows),
                               "truncated": False, "execution_time_ms": elapsed_ms}
    if result.switched_kg is not None:
        message["switched_kg"] = result.switched_kg
    return message


def read(raw: str | bytes) -> dict | None:
    """A received frame as a JSON object; None for anything else."""
    if not isinstance(raw, str):
        return None
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return msg if isinstance(msg, dict) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _credential_text(value: Any) -> str:
    """A login field as text that can be encoded: JSON may carry a lone surrogate (`\\ud800`),
    which no UTF-8 encoder (argon2, SQLite, a log) takes. It is spelled out as its escape, so the
    attempt fails like any wrong name or password, and is audited and counted like one."""
    text = _text(value)
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def program_lines(program: str) -> int:
    """How many lines a program holds as the parser splits it (a final newline ends the last
    line, it does not start another): what the rate limit and `max_program_lines` count."""
    return program.count("\n") + (0 if not program or program.endswith("\n") else 1)


# --- what happens --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    frame: str


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


Action = Send | Close


@dataclass(frozen=True)
class Login:
    username: str
    password: str


@dataclass(frozen=True)
class Authenticate:
    api_key: str


@dataclass(frozen=True)
class Execute:
    program: str
    lines: int = 1          # program_lines(program)
    cost: int = 1           # messages it counts as toward the rate limit: its lines, or its size
    atomic: bool = False        # all lines or none
    note: str = ""              # where an atomic program comes from (a policy file), for the audit


@dataclass(frozen=True)
class Respond:
    """The protocol answers this message itself; nothing reaches the engine."""
    actions: tuple[Action, ...]


ServerEvent = Login | Authenticate | Execute | Respond


class Phase(enum.Enum):
    AUTH = "auth"
    SESSION = "session"
    CLOSED = "closed"


@dataclass
class ServerProtocol:
    """One connection as the server sees it. `receive` turns a frame into a request for the
    application (Login, Authenticate, Execute) or into the answer the protocol gives itself; the
    application reports outcomes back (`authenticated`, `refused`, `session_ended`, ...) and gets
    the actions to perform."""
    phase: Phase = Phase.AUTH
    rate_limit: int = RATE_LIMIT
    auth_rate_limit: int = AUTH_RATE_LIMIT
    max_program_lines: int = MAX_PROGRAM_LINES
    # (arrival, cost, leaves the window at): a program of n lines spends n of the budget
    _arrivals: collections.deque[tuple[float, int, float]] = field(default_factory=collections.deque)
    _spent: int = 0

    def receive(self, raw: str | bytes) -> ServerEvent:
        if self.phase is Phase.CLOSED:
            return Respond(())
        if self.phase is Phase.AUTH:
            return self._receive_auth(raw)
        return self._receive_session(raw)

    def _receive_auth(self, raw: str | bytes) -> ServerEvent:
        msg = read(raw)
        kind = msg.get("type") if msg else None
        if msg is not None and kind == "login":
            return Login(_credential_text(msg.get("username")), _credential_text(msg.get("password")))
        if msg is not None and kind == "authenticate":
            return Authenticate(_credential_text(msg.get("api_key")))
        return Respond(self._close(auth_error(ErrorKind.AUTH_REQUIRED.value), POLICY_VIOLATION,
                                   ErrorKind.AUTH_REQUIRED.value))

    def _receive_session(self, raw: str | bytes) -> ServerEvent:
        if isinstance(raw, bytes):
            return Respond(self._close(error(ErrorKind.BINARY_FRAME.value + ": send JSON text frames"),
                                       UNSUPPORTED_DATA, ErrorKind.BINARY_FRAME.value))
        msg = read(raw)
        if msg is None:
            return _reply(error(ErrorKind.INVALID_MESSAGE.value + ': expected a JSON object with a "type"'))
        kind = msg.get("type")
        if kind == "ping":
            return _reply(PONG)
        if kind in ("login", "authenticate"):
            return _reply(error(ErrorKind.ALREADY_AUTHENTICATED.value))
        if kind == "execute":
            program = msg.get("program")
            if not isinstance(program, str):
                return _reply(error(ErrorKind.INVALID_MESSAGE.value + ': "program" must be a string'))
            lines = program_lines(program)
            if lines > self.max_program_lines:
                return _reply(error(f"{ErrorKind.PROGRAM_TOO_LONG.value}: {lines} lines; at most "
                                    f"{self.max_program_lines} in one execute. Nothing was run."))
            if len(program) > MAX_LINE_CHARS and max(map(len, program.split("\n"))) > MAX_LINE_CHARS:
                return _reply(error(f"{ErrorKind.LINE_TOO_LONG.value}: at most {MAX_LINE_CHARS} characters "
                                    "in one line. Nothing was run."))
            cost = max(lines, -(-len(program) // COST_CHARS))
            if msg.get("atomic") is not True:
                return Execute(program, lines, cost)
            note = msg.get("note", "")
            if not isinstance(note, str) or not note.isprintable() or len(note) > MAX_NOTE_CHARS:
                return _reply(error(ErrorKind.INVALID_MESSAGE.value + f': "note" must be printable text of '
                                                                      f"at most {MAX_NOTE_CHARS} characters"))
            return Execute(program, lines, cost, atomic=True, note=note)
        shown = f" '{clip(kind, 40)}'" if isinstance(kind, str) and kind.isprintable() else ""
        return _reply(error(f"{ErrorKind.UNKNOWN_TYPE.value}{shown}: use execute or ping"))

    def allow(self, now: float, cost: int = 1) -> bool:
        """Count a message of `cost` (a program: its lines) arriving at `now` (seconds); False
        when the per-connection budget of the last second is spent (the message is then
        answered by `rate_limited` or `auth_rate_limited` and dropped). A program may overdraw
        the budget; one longer than the budget keeps it spent for as long as its lines take at
        the limit's pace, so no client runs more lines a second than the limit, on average."""
        limit = self.auth_rate_limit if self.phase is Phase.AUTH else self.rate_limit
        if self.exhausted(now):
            return False
        # Kept in leaving order: a program that leaves later than one second spends the whole
        # budget until it leaves, so nothing joins behind it before then.
        self._arrivals.append((now, cost, now + max(1.0, cost / limit)))
        self._spent += cost
        return True

    def exhausted(self, now: float) -> bool:
        """Whether the budget is spent at `now`, so a message can be refused before it is even
        parsed (parsing a 1 MiB message costs the event loop about a millisecond)."""
        limit = self.auth_rate_limit if self.phase is Phase.AUTH else self.rate_limit
        arrivals = self._arrivals
        while arrivals and now >= arrivals[0][2]:
            self._spent -= arrivals.popleft()[1]
        return self._spent >= limit

    def rate_limited(self) -> tuple[Action, ...]:
        return (Send(error(ErrorKind.RATE_LIMITED.value)),)

    def auth_rate_limited(self) -> tuple[Action, ...]:
        """Too many messages before logging in: an attacker's, most likely; no more are read."""
        text = ErrorKind.RATE_LIMITED.value
        return self._close(auth_error(text), POLICY_VIOLATION, text)

    # --- outcomes the application reports ------------------------------------------------

    def authenticated(self, session_id: str, knowledge_graph: str, version: str, role: str,
                      username: str, max_message_bytes: int | None = None) -> tuple[Action, ...]:
        self.phase = Phase.SESSION
        return (Send(authenticated(session_id, knowledge_graph, version, role, username, max_message_bytes)),)

    def refused(self, message: str) -> tuple[Action, ...]:
        """A failed login: the client may try again on this connection."""
        return (Send(auth_error(message)),)

    def timed_out(self, seconds: int) -> tuple[Action, ...]:
        return self._close(auth_error(f"{ErrorKind.AUTH_TIMEOUT.value} ({seconds}s)"), POLICY_VIOLATION,
                           ErrorKind.AUTH_TIMEOUT.value)

    def access_denied(self) -> tuple[Action, ...]:
        """The `?kg=` asked for cannot be read by the principal that just logged in."""
        text = ErrorKind.ACCESS_DENIED.value
        return self._close(error(text), POLICY_VIOLATION, text)

    def session_ended(self, reason: str) -> tuple[Action, ...]:
        text = session_ended_text(reason)
        return self._close(error(text), POLICY_VIOLATION, text)

    def _close(self, frame: str, code: int, reason: str) -> tuple[Action, ...]:
        self.phase = Phase.CLOSED
        return (Send(frame), Close(code, reason[:120]))


def _reply(frame: str) -> Respond:
    return Respond((Send(frame),))


# --- the client side -----------------------------------------------------------------------------

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
