"""Long programs, run on the event loop a slice at a time (security.md, Transport: no client's
work holds the loop for more than a few milliseconds).

Why not a worker thread: a program of thousands of cheap lines is Python work that drops the
GIL at every SQLite call, and so does the event loop at every socket call; the two then hand the
GIL back and forth at the interpreter's switch interval (5 ms), and every other client waits on
that (measured: a 10,000-line program in the pool took other clients from 16 ms to over a second
at p99). So the cheap lines are parsed and run here, about a millisecond at a time with a yield
in between, and only a line that may cost more (a write, a listing) goes to the pool, alone.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..engine import Session
from ..errors import CommandError
from ..language.parser import Invocation, parse
from ..result import Result
from .programs import Planned

if TYPE_CHECKING:
    from .app import Server

SLICE_SECONDS = 0.0005          # parse this long, then run what was parsed, then yield


def _plan_line(n: int, text: str) -> tuple[int, str, Invocation | CommandError]:
    try:
        return n, text, parse(text.strip())
    except CommandError as exc:
        return n, text, exc


async def run_in_slices(app: Server, session: Session, texts: list[str],
                        numbered: bool) -> tuple[list[Result], bool]:
    """Run the program's lines (`texts`, as split on newlines) in order, stopping at the first
    failure like Engine.execute_program. Returns the results and whether a line writes."""
    engine = app.engine
    results: list[Result] = []
    writes = False
    batch: Planned = []

    def run_batch() -> None:
        if batch:
            results.extend(engine.execute_program(session, batch, defer_denial_audit=True, numbered=numbered))
            batch.clear()

    slice_end = time.perf_counter() + SLICE_SECONDS
    for n, text in enumerate(texts, 1):
        if not text.strip():
            continue
        line = _plan_line(n, text)
        command = line[2].command if isinstance(line[2], Invocation) else None
        if command is not None and not command.quick:
            run_batch()
            writes = writes or command.writes
            results.extend(await app.run(engine.execute_program, session, [line], numbered=numbered))
            slice_end = time.perf_counter() + SLICE_SECONDS
            continue
        batch.append(line)
        if time.perf_counter() >= slice_end:
            run_batch()
            await asyncio.sleep(0)              # let every other connection have its turn
            slice_end = time.perf_counter() + SLICE_SECONDS
    run_batch()
    return results, writes
