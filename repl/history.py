"""The shell's history file: private (0600 in a 0700 directory) and free of secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from prompt_toolkit.history import FileHistory

from backend.config import Config
from backend.errors import CommandError
from backend.language.kinds import is_secret_reference
from backend.language.parser import MASK, Analysis, Role, analyze, parse, redact


def history_path(config: Config, env: Mapping[str, str]) -> Path:
    """`[shell] history_file`, else $XDG_STATE_HOME/inputlayer/history (cli.md)."""
    if config.shell.history_file:
        return Path(os.path.expanduser(config.shell.history_file))
    state = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"),
                                                      ".local", "state")
    return Path(state) / "inputlayer" / "history"


def file_entry(line: str) -> str | None:
    """What the history file may keep of `line`: the line with its secrets masked, or nothing
    when the line's grammar is not known for sure. A secret is found only through the grammar
    of a recognised command, so a line that names no command (`.usr create bob S3cret`, `user
    create ...`, a blank other than space or tab), that fails to parse, or that holds a line
    break (a pasted block: its later lines were never analysed as commands) is kept in memory
    for this session only."""
    if "\n" in line or "\r" in line:
        return None
    analysis = analyze(line, partial=True)
    if analysis.command is None:
        return None
    try:
        parse(_without_references(line, analysis).strip())
    except CommandError:
        return None
    return redact(line, MASK, analysis=analysis)


def _without_references(line: str, analysis: Analysis) -> str:
    """`line` with a `password=@FILE` or `password=-` (which the shell resolves, and the file
    may keep) standing for a password, so that the rest of the line is what gets checked."""
    for part in reversed(analysis.parts):
        if part.role is Role.OPTION_VALUE and part.kind is not None and part.kind.secret \
                and is_secret_reference(part.text):
            line = line[:part.start] + MASK + line[part.end:]
    return line


class PrivateHistory(FileHistory):
    """A FileHistory whose file is created 0600 and only ever receives redacted lines of known
    commands; the in-memory list (Up-arrow in this session) keeps what was typed."""

    def __init__(self, path: Path):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        try:
            os.fchmod(fd, 0o600)   # an older file may have been created with looser bits
        finally:
            os.close(fd)
        super().__init__(str(path))

    def store_string(self, string: str) -> None:
        # A pasted block is several commands: each line is redacted by its own grammar (read as
        # one line, a secret on the second would bind to no parameter and be kept).
        entries = [e for e in map(file_entry, string.split("\n")) if e is not None]
        if entries:
            super().store_string("\n".join(entries))
