"""What the server needs to know of a program before running it, and the one reply it gets."""

from __future__ import annotations

from typing import NamedTuple

from ..errors import CommandError
from ..language.parser import Invocation
from ..language.registry import Command, match_command
from ..result import Result

Planned = list[tuple[int, str, Invocation | CommandError]]


class ProgramShape(NamedTuple):      # a tuple, not a frozen dataclass: made for every message
    """From the parse the engine then runs."""
    name: str        # the metric label: its command (`.user create`), or `program` for several lines
    quick: bool      # every line of bounded cost (registry `quick`): run it on the event loop,
                     # saving a hand-off to a thread that would cost more than the command
    writes: bool     # some line changes the store


def program_shape(planned: Planned) -> ProgramShape:
    # A line that did not parse still names its command when it starts like one (metrics).
    commands = [p.command if isinstance(p, Invocation) else _command_of(text) for _, text, p in planned]
    if len(commands) == 1:
        first = commands[0]
        name = first.name if first else "unknown"
    else:
        name = "program" if commands else "empty"
    return ProgramShape(name, bool(commands) and all(c is not None and c.quick for c in commands),
                        any(c is not None and c.writes for c in commands))


def _command_of(line: str) -> Command | None:
    words = line.split()
    if not words or not words[0].startswith("."):
        return None
    return match_command([words[0][1:], *words[1:]])[0]


def combine(results: list[Result]) -> Result:
    """One reply for a program: the message lines of all its commands when every line only
    reported an action, else the table of its last command (with the KG it switched to)."""
    if not results:
        return Result([], [])
    if len(results) == 1:
        return results[0]
    switched = next((r.switched_kg for r in reversed(results) if r.switched_kg is not None), None)
    if all(r.is_message for r in results):
        return Result(["message"], [row for r in results for row in r.rows], switched)
    last = results[-1]
    return Result(last.columns, last.rows, switched)
