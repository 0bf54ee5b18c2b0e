"""One WebSocket connection: the protocol object (backend/protocol/) decides, this module does
the I/O and calls the engine. Messages are answered one at a time, in order."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .. import __version__
from ..engine import Session, UnrecordedDenial
from ..errors import CommandError, PermissionDenied, SessionEnded, StoreError, StoreUnavailable
from ..language.parser import parse_program
from ..protocol import (
    MAX_PROGRAM_LINES,
    Action,
    Close,
    Execute,
    Phase,
    Respond,
    Send,
    ServerProtocol,
    atomic_reply,
    error,
    reply_frames,
)
from ..result import Result
from .programs import Planned, combine, program_shape
from .slices import run_in_slices

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger("inputlayer.server")

QUICK_PROGRAM_LINES = 16            # ~30 us a cheap line: at most about half a millisecond inline
QUICK_PROGRAM_CHARS = 4096          # and no long line, which the lexer takes a character at a time


class Connection:
    """One WebSocket connection, before and after it authenticates."""

    def __init__(self, ws: ServerConnection, address: str, kg: str | None, *,
                 max_program_lines: int = MAX_PROGRAM_LINES):
        self.ws = ws
        self.address = address
        self.kg = kg                         # the `?kg=` asked for, if any
        self.protocol = ServerProtocol(max_program_lines=max_program_lines)
        self.session: Session | None = None
        self.busy = asyncio.Lock()           # held while a message is being answered
        self.ending = False                  # told to go (session ended, shutdown)

    async def perform(self, actions: Iterable[Action]) -> None:
        actions = tuple(actions)
        if any(isinstance(a, Close) for a in actions):
            self.ending = True
        for action in actions:
            if isinstance(action, Send):
                await self.send(action.frame)
            else:
                await self.close(action.code, action.reason)

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


async def serve(app: Server, conn: Connection) -> None:
    """The whole life of a connection after the handshake."""
    if await authenticate(app, conn):
        await serve_session(app, conn)


async def authenticate(app: Server, conn: Connection) -> bool:
    """Wait for a successful login or authenticate, within the deadline. False: the connection
    was told why and closed."""
    timeout = app.cfg.auth_timeout_secs
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            raw = await asyncio.wait_for(conn.ws.recv(), remaining)
        except TimeoutError:
            log.info("authentication timeout: address=%s", conn.address)
            await conn.perform(conn.protocol.timed_out(timeout))
            return False
        if not conn.protocol.allow(app.clock()):
            log.info("closed %s: too many messages before authentication", conn.address)
            await conn.perform(conn.protocol.auth_rate_limited())
            return False
        request = conn.protocol.receive(raw)
        if isinstance(request, (Respond, Execute)):
            log.info("closed %s: a message before authentication", conn.address)
            await conn.perform(request.actions if isinstance(request, Respond) else ())
            return False
        async with conn.busy:
            if conn.ending:
                return False
            session, problem = await app.logins.websocket(request, conn.address)
            if session is None:
                await conn.perform(conn.protocol.refused(problem))
                continue
            return await _open_session(app, conn, session)


async def _open_session(app: Server, conn: Connection, session: Session) -> bool:
    if conn.kg is not None:
        try:
            await app.run(app.engine.bind_kg, session, conn.kg)
        except (PermissionDenied, SessionEnded, CommandError):
            log.info("refused ?kg= for %s from %s", session.username, conn.address)
            await conn.perform(conn.protocol.access_denied())
            return False
    conn.session = session
    app.sessions.add(conn)
    log.info("authenticated: user=%s auth=%s address=%s session=%s", session.username,
             session.auth, conn.address, session.id)
    await conn.perform(conn.protocol.authenticated(session.id, session.knowledge_graph or "", __version__,
                                                   session.login_role, session.username,
                                                   app.cfg.max_message_bytes))
    return True


async def serve_session(app: Server, conn: Connection) -> None:
    """Those that arrive meanwhile wait in the connection's buffer (max_queue), which is what
    pushes back on a client that floods."""
    try:
        async for raw in conn.ws:
            request = _admitted(conn, raw, app.clock())
            async with conn.busy:
                if conn.ending:
                    return
                if request is None:
                    await conn.perform(conn.protocol.rate_limited())
                elif isinstance(request, Execute) and request.atomic:
                    await execute_atomic(app, conn, request.program, request.note)
                elif isinstance(request, Execute):
                    await execute(app, conn, request.program, request.lines)
                else:
                    await conn.perform(request.actions)
    except ConnectionClosed:
        pass


def _admitted(conn: Connection, raw: str | bytes, now: float) -> Execute | Respond | None:
    """The request in `raw` when the connection's rate allows it (a program costs one per
    line, or per 4 KiB), else None. A spent budget refuses the message before it is parsed."""
    if conn.protocol.exhausted(now):
        return None
    request = conn.protocol.receive(raw)
    if isinstance(request, Respond) and conn.protocol.phase is Phase.CLOSED:
        return request                       # a protocol violation closes, whatever the rate
    assert isinstance(request, (Execute, Respond))
    return request if conn.protocol.allow(now, request.cost if isinstance(request, Execute) else 1) else None


async def execute(app: Server, conn: Connection, program: str, lines: int = 1) -> None:
    session = conn.session
    assert session is not None
    started = time.perf_counter()
    # A short program runs as it always did: on the event loop when every line is cheap (a
    # thread hand-off would cost more than it), else in the pool. A longer one runs a slice at
    # a time (slices.py), so that no client holds the loop for more than about a millisecond.
    small = lines <= QUICK_PROGRAM_LINES and len(program) <= QUICK_PROGRAM_CHARS
    try:
        if small:
            planned = parse_program(program)
            shape = program_shape(planned)
            name, writes = shape.name, shape.writes
            if shape.quick:
                results, ended = run_program(app, session, planned, writes, defer_denial_audit=True)
            else:
                results, ended = await app.run(run_program, app, session, planned, writes)
        else:
            texts = program.split("\n")
            name = _long_program_name(texts)
            results, writes = await run_in_slices(app, session, texts, numbered=name == "program")
            ended = await app.run(_ended_by_writes, app, session) if writes else None
    except SessionEnded as exc:
        app.metrics.command(name, "ended", time.perf_counter() - started)
        await app.end_session(conn, exc.reason)
        return
    except Exception as exc:  # noqa: BLE001 -- every failure gets a reply; _refused sorts them
        await _refused(app, conn, session, name, started, exc)
        return
    elapsed = time.perf_counter() - started
    _finish(app, session, name, "ok", started)
    if writes:
        app.poke()              # other sessions may have just lost their principal
    for frame in reply_frames(combine(results), int(elapsed * 1000), threshold=app.options.stream_threshold,
                              chunk_rows=app.options.chunk_rows):
        await conn.ws.send(frame)
    if ended is not None:
        await app.end_session(conn, ended)


async def execute_atomic(app: Server, conn: Connection, program: str, note: str) -> None:
    """`"atomic": true`: every line of the program, or none (protocol.md). Always off the loop:
    the whole program holds the store's write lock."""
    session = conn.session
    assert session is not None
    started = time.perf_counter()
    try:
        results, ended = await app.run(run_atomic, app, session, program, note)
    except SessionEnded as exc:
        app.metrics.command("atomic", "ended", time.perf_counter() - started)
        await app.end_session(conn, exc.reason)
        return
    except Exception as exc:  # noqa: BLE001 -- every failure gets a reply; _refused sorts them
        await _refused(app, conn, session, "atomic", started, exc)
        return
    elapsed = time.perf_counter() - started
    _finish(app, session, "atomic", "ok", started)
    app.poke()
    await conn.send(atomic_reply(results, combine(results), int(elapsed * 1000)))
    if ended is not None:
        await app.end_session(conn, ended)


def run_atomic(app: Server, session: Session, program: str, note: str) -> tuple[list[Result], str | None]:
    results = app.engine.execute_atomic(session, program, note=note)
    try:
        app.engine.check_session(session)
    except SessionEnded as exc:
        return results, exc.reason
    return results, None


async def _refused(app: Server, conn: Connection, session: Session, name: str, started: float,
                   exc: Exception) -> None:
    if isinstance(exc, PermissionDenied):
        if isinstance(exc, UnrecordedDenial):
            # Refused on the event loop: its audit record (an fsync) is written off it, and
            # before the reply, so the client never sees a refusal that is not yet recorded.
            await app.run(app.engine.record_denial, exc.audit_record)
        _finish(app, session, name, "denied", started)
        await conn.send(error(exc.message))
    elif isinstance(exc, CommandError):
        _finish(app, session, name, "error", started)
        await conn.send(error(exc.message))
    elif isinstance(exc, StoreError):
        _finish(app, session, name, "error", started)
        await conn.send(error(f"store unavailable: {exc}" if isinstance(exc, StoreUnavailable) else str(exc)))
    else:
        _finish(app, session, name, "internal_error", started)
        log.error("internal error running %s for %s: %s", name, session.username, describe(exc))
        await conn.send(error("Internal error: the command failed; see the server log"))


def _finish(app: Server, session: Session, name: str, outcome: str, started: float) -> None:
    seconds = time.perf_counter() - started
    app.metrics.command(name, outcome, seconds)
    log.debug("command %s by %s: %s in %.1f ms", name, session.username, outcome, seconds * 1000)


def run_program(app: Server, session: Session, planned: Planned, writes: bool, *,
                defer_denial_audit: bool = False) -> tuple[list[Result], str | None]:
    """Run the program, then check that the session survived it (a user who revoked their own
    key is told after the reply)."""
    results = app.engine.execute_program(session, planned, defer_denial_audit=defer_denial_audit)
    if not writes:
        return results, None         # reading cannot end one's own session
    return results, _ended_by_writes(app, session)


def _ended_by_writes(app: Server, session: Session) -> str | None:
    try:
        app.engine.check_session(session)
    except SessionEnded as exc:
        return exc.reason
    return None


def _long_program_name(texts: list[str]) -> str:
    """The metric label of a program too long to run at once: `program` for several lines,
    else the command of its one line."""
    lines = [t for t in texts if t.strip()]
    if len(lines) != 1:
        return "program" if lines else "empty"
    return program_shape([(1, lines[0], CommandError(""))]).name


def describe(exc: BaseException) -> str:
    """An exception as one log line without its arguments (which might hold a secret): its type
    and where it was raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}" if tb else ""
    return f"{type(exc).__name__}{where}"
