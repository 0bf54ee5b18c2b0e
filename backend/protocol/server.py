"""The server's state machine: one connection's frames in, requests for the application or
the protocol's own answers out, and the actions (send, close) each reported outcome calls for."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from ..language.kinds import clip
from .frames import (
    AUTH_RATE_LIMIT,
    COST_CHARS,
    MAX_LINE_CHARS,
    MAX_NOTE_CHARS,
    MAX_PROGRAM_LINES,
    POLICY_VIOLATION,
    PONG,
    RATE_LIMIT,
    UNSUPPORTED_DATA,
    ErrorKind,
    Phase,
    auth_error,
    authenticated,
    credential_text,
    error,
    program_lines,
    read,
    session_ended_text,
)


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
            return Login(credential_text(msg.get("username")), credential_text(msg.get("password")))
        if msg is not None and kind == "authenticate":
            return Authenticate(credential_text(msg.get("api_key")))
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
