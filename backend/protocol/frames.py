"""The frames of the wire protocol (protocol.md): limits, error kinds, builders and readers,
shared by both edges. Error kinds travel as message text on the wire (the official SDK reads
that text); `ErrorKind` names each outcome, and only this package turns a kind into text and
text back into a kind.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from ..result import Result
from ..store.codec import json_encoder

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


class Phase(enum.Enum):
    """Where a connection is, on either edge: logging in, in a session, or closed."""
    AUTH = "auth"
    SESSION = "session"
    CLOSED = "closed"


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



def credential_text(value: Any) -> str:
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

