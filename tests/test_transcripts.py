"""Replay the interactive transcripts of examples/sessions/*.transcript on a pseudo-terminal.

"$ inputlayer ARGS" starts the shell ({data} is a fresh data directory), "> KEYS" types keys,
"#" lines are comments, and every other line must appear on the screen next, in order.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from conftest import ROOT
from ptyshell import Terminal, pty_env

TRANSCRIPTS = sorted((ROOT / "examples" / "sessions").glob("*.transcript"))


def test_there_are_transcripts():
    assert len(TRANSCRIPTS) >= 2


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript(path: Path, tmp_path, config_file):
    terminal = None
    try:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith("$ "):
                program, *args = shlex.split(line[2:].replace("{data}", str(tmp_path / "data")))
                assert program == "inputlayer" and terminal is None, f"line {number}"
                terminal = Terminal(args, pty_env(tmp_path, config_file))
            elif line.startswith("> "):
                terminal.type(line[2:])
            else:
                terminal.expect(line)
        assert terminal.finish() == 0
    finally:
        if terminal is not None:
            terminal.child.close(force=True)
