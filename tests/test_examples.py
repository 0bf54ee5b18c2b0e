"""Every examples/sessions/*.il runs through the real shell; its output must match the .out beside it.

Directives in a script's comments say how it is run:
  #! args ...      extra shell arguments
  #! env K=V ...   extra environment (to log in as someone else)
  #! setup FILE    a script run first, as admin, on the same data directory
Times and API-key secrets differ on every run: they are compared as same-width placeholders, so
the tables in the .out files stay aligned.
Set UPDATE_EXAMPLES=1 to rewrite the .out files after a deliberate change.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ADMIN_PASSWORD, ROOT, cli_env, without_new_store_line

SESSIONS = ROOT / "examples" / "sessions"
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
KEY_RE = re.compile(r"il_[0-9A-Za-z]{43}_[0-9A-Za-z]{6}")


TIME_PLACEHOLDER = "YYYY-MM-DDThh:mm:ssZ"
KEY_PLACEHOLDER = "il_" + "*" * 43 + "_" + "*" * 6


def normalise(text: str) -> str:
    return KEY_RE.sub(KEY_PLACEHOLDER, TIME_RE.sub(TIME_PLACEHOLDER, text))


def directives(script: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"args": [], "env": [], "setup": []}
    for line in script.read_text().splitlines():
        if line.startswith("#! "):
            name, _, rest = line[3:].partition(" ")
            found[name] += shlex.split(rest)
    return found


def run_session(script: Path, data_dir: Path, config_file: Path, target: list[str] | None = None,
                target_env: dict[str, str] | None = None) -> str:
    """Run one example as a user would; return its stdout and stderr as one text, with the status."""
    how = directives(script)
    target = target or ["--data-dir", str(data_dir)]
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, **(target_env or {}))
    for setup in how["setup"]:
        subprocess.run([sys.executable, "-m", "repl", *target, "-f", str(script.parent / setup)],
                       env=env, cwd=ROOT, check=True, capture_output=True, timeout=60)
    extra = dict(item.split("=", 1) for item in how["env"])
    if "INPUTLAYER_USER" in extra:
        del env["INPUTLAYER_ADMIN_PASSWORD"]
    env.update(extra)
    proc = subprocess.run([sys.executable, "-m", "repl", *target, *how["args"]], stdin=script.open("rb"),
                          env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return normalise(without_new_store_line(proc.stdout.decode())) + f"[exit status {proc.returncode}]\n"


SCRIPTS = sorted(SESSIONS.glob("*.il"))


def test_there_are_real_sessions():
    assert len(SCRIPTS) >= 6


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_session_output_matches(script: Path, tmp_path: Path, config_file: Path, store_target):
    actual = run_session(script, tmp_path / "data", config_file, store_target.cli_args(), store_target.cli_env())
    expected_file = script.with_suffix(".out")
    if os.environ.get("UPDATE_EXAMPLES"):
        expected_file.write_text(actual)
    assert actual == expected_file.read_text()
