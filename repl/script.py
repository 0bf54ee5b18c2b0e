"""Script mode: run lines from -c, -f and stdin in order, report errors as source:line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from backend.errors import CommandError, SessionEnded, StoreError
from backend.registry import match_command

from .environment import Environment, ExitStatus
from .output import render, render_json_error

COMMENT_PREFIXES = ("#", "//")


@dataclass(frozen=True)
class Line:
    source: str     # file name, `<stdin>` or `-c`
    number: int
    text: str


def is_skipped(text: str) -> bool:
    stripped = text.strip()
    return not stripped or stripped.startswith(COMMENT_PREFIXES)


def is_quit(text: str) -> bool:
    tokens = text.split()
    if not tokens or not tokens[0].startswith("."):
        return False
    cmd, used = match_command([tokens[0][1:]])
    return cmd is not None and cmd.shell_only and len(tokens) == 1


def decode_lines(data: bytes, source: str) -> Iterator[Line]:
    # Bytes that are not UTF-8 become U+FFFD: the line then fails cleanly instead of the run.
    text = data.decode("utf-8", errors="replace")
    for number, raw in enumerate(text.splitlines(), 1):
        yield Line(source, number, raw)


def stream_lines(stream, source: str) -> Iterator[Line]:
    for number, raw in enumerate(stream, 1):
        yield Line(source, number, raw.decode("utf-8", errors="replace").rstrip("\r\n"))


def run_script(backend, lines: Iterable[Line], env: Environment, *, fmt: str, on_error: str,
               single_transaction: bool) -> ExitStatus:
    failed = False
    if single_transaction:
        backend.begin_batch()
    try:
        for line in lines:
            if is_skipped(line.text):
                continue
            if is_quit(line.text):
                break
            try:
                result = backend.execute(line.text)
            except CommandError as exc:
                report_error(env, line, exc.message, fmt)
                if single_transaction or on_error == "stop" or isinstance(exc, SessionEnded):
                    if single_transaction:
                        backend.end_batch(False)
                        single_transaction = False
                        env.err("error: the whole transaction was rolled back; nothing was changed\n")
                    return ExitStatus.STOPPED
                failed = True
                continue
            env.out(render(result, fmt))
        if single_transaction:
            single_transaction = False
            backend.end_batch(True)
    except StoreError as exc:
        env.err(f"error: {exc}\n")
        return ExitStatus.STOPPED
    finally:
        if single_transaction:
            backend.end_batch(False)
    return ExitStatus.SOME_FAILED if failed else ExitStatus.OK


def report_error(env: Environment, line: Line, message: str, fmt: str) -> None:
    if fmt == "json":
        env.out(render_json_error(message, line.number))
    env.err(f"{line.source}:{line.number}: error: {message}\n")
