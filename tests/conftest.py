"""Shared fixtures: cheap argon2 through the config, an engine on a temp store, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.config import Config, SecurityConfig, with_values
from backend.engine import Engine
from backend.store import SQLiteStore
from fakes import FakeClock

pytest_plugins = ["rediskit"]      # the throw-away Redis of the cluster tests

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "s3cret-pass"
CHEAP_ARGON2 = {"security.argon2_memory_kib": 8, "security.argon2_time_cost": 1,
                "security.argon2_parallelism": 1}
CHEAP_TOML = """\
[security]
argon2_memory_kib = 8
argon2_time_cost = 1
argon2_parallelism = 1
"""


@pytest.fixture
def cheap_config() -> Config:
    return with_values(Config(), CHEAP_ARGON2)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CHEAP_TOML)
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(tmp_path: Path, cheap_config: Config, clock: FakeClock):
    store = SQLiteStore(tmp_path / "data")
    eng = Engine(store, cheap_config, clock=clock)
    eng.bootstrap(ADMIN_PASSWORD)
    yield eng
    store.close()


@pytest.fixture
def admin(engine):
    return engine.login("admin", ADMIN_PASSWORD, source="local")


def cli_env(config_file: Path, **extra: str) -> dict[str, str]:
    """The environment of a shell run: no inherited credentials or targets, cheap argon2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INPUTLAYER_")}
    env["INPUTLAYER_CONFIG"] = str(config_file)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_cli(args: list[str], *, stdin: str = "", env: dict[str, str], timeout: float = 60,
            program: str = "repl") -> subprocess.CompletedProcess:
    """Run `python -m repl` (or `backend`) as a user would, with stdin piped."""
    return subprocess.run([sys.executable, "-m", program, *args], input=stdin.encode(), env=env,
                          capture_output=True, timeout=timeout, cwd=ROOT)


def without_new_store_line(text: str) -> str:
    """stderr without the first run's `Created a new store in DIR; admin bootstrapped.` (a test
    of its own checks it), so expected texts do not depend on the temporary directory."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("Created a new store in "))


@pytest.fixture
def shell(tmp_path: Path, config_file: Path):
    """run(stdin, *args, **env) -> CompletedProcess with text stdout/stderr, on one data dir."""
    data_dir = tmp_path / "shell-data"

    def run(stdin: str = "", *args: str, **extra_env: str) -> subprocess.CompletedProcess:
        extra_env.setdefault("INPUTLAYER_ADMIN_PASSWORD", ADMIN_PASSWORD)
        extra_env = {k: v for k, v in extra_env.items() if v is not None}
        proc = run_cli(["--data-dir", str(data_dir), *args], stdin=stdin, env=cli_env(config_file, **extra_env))
        proc.stdout, proc.stderr = proc.stdout.decode(), without_new_store_line(proc.stderr.decode())
        return proc

    run.data_dir = data_dir
    return run
