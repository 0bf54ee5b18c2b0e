"""Shared fixtures: cheap argon2 through the config, an engine on a temp store (SQLite and
PostgreSQL alike), a throw-away PostgreSQL server, a CLI runner."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from backend.config import Config, SecurityConfig, with_values
from backend.engine import Engine
from backend.store import SQLiteStore
from fakes import FakeClock

import pgkit

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


STORE_KINDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the whole session; each test gets a database of its own."""
    server = pgkit.start_postgres()
    yield server
    server.stop()


class StoreTarget:
    """Where a test's store lives: a data directory, or a fresh PostgreSQL database (with its
    server secrets file). open() may be called again, as another process would open it."""

    def __init__(self, kind: str, tmp_path: Path, pg=None):
        self.kind = kind
        self.data_dir = tmp_path / "data"
        self.secret_file = tmp_path / "server-secrets"
        self.pg = pg
        self._opened: list = []
        if pg is not None:
            tmp_path.mkdir(parents=True, exist_ok=True)
            self.dbname = pg.create_database()
            self.url = pg.url(self.dbname)
            self.secret_file.write_bytes(secrets.token_bytes(64))
            self.secret_file.chmod(0o600)

    def open(self, *, encryption_key: bytes | None = None):
        if self.kind == "sqlite":
            store = SQLiteStore(self.data_dir, encryption_key=encryption_key)
        else:
            from backend.store.postgres.store import PostgresStore

            store = PostgresStore(self.url, encryption_key=encryption_key, secret_file=str(self.secret_file))
        self._opened.append(store)
        return store

    def cli_args(self) -> list[str]:
        """How the shell and the server are pointed at this store."""
        return ["--data-dir", str(self.data_dir)] if self.kind == "sqlite" else ["--store", self.url]

    def cli_env(self) -> dict[str, str]:
        return {} if self.kind == "sqlite" else {"INPUTLAYER_SERVER_SECRET_FILE": str(self.secret_file)}

    def state(self) -> str:
        """A digest of everything stored: the files of a data directory, a PostgreSQL dump."""
        import hashlib

        if self.kind == "sqlite":
            files = sorted(p for p in self.data_dir.iterdir() if p.is_file())
            return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()
        return hashlib.sha256(self.pg.pg_dump(self.dbname)).hexdigest()

    def sibling(self, name: str) -> "StoreTarget":
        """Another, empty store of the same kind."""
        return StoreTarget(self.kind, self.data_dir.parent / name, self.pg)

    def close(self) -> None:
        for store in self._opened:
            store.close()
        if self.pg is not None:
            self.pg.drop_database(self.dbname)


@pytest.fixture(params=STORE_KINDS)
def store_target(request, tmp_path: Path):
    pg = request.getfixturevalue("pg_server") if request.param == "postgresql" else None
    target = StoreTarget(request.param, tmp_path, pg)
    yield target
    target.close()


@pytest.fixture
def pg_target(pg_server, tmp_path: Path):
    """A fresh PostgreSQL store's place, for what only PostgreSQL has."""
    target = StoreTarget("postgresql", tmp_path, pg_server)
    yield target
    target.close()


@pytest.fixture
def engine(store_target: StoreTarget, cheap_config: Config, clock: FakeClock):
    eng = Engine(store_target.open(), cheap_config, clock=clock)
    eng.bootstrap(ADMIN_PASSWORD)
    return eng


@pytest.fixture
def sqlite_engine(tmp_path: Path, cheap_config: Config, clock: FakeClock):
    """For tests of what only a data directory has (files, modes, PRAGMAs)."""
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
def store_shell(store_target: StoreTarget, config_file: Path):
    """run(stdin, *args, **env) -> CompletedProcess, as `shell`, on `store_target` (either store)."""

    def run(stdin: str = "", *args: str, target: StoreTarget = store_target, **extra_env: str):
        extra_env = {"INPUTLAYER_ADMIN_PASSWORD": ADMIN_PASSWORD, **target.cli_env(), **extra_env}
        proc = run_cli([*target.cli_args(), *args], stdin=stdin, env=cli_env(config_file, **extra_env))
        proc.stdout, proc.stderr = proc.stdout.decode(), proc.stderr.decode()
        return proc

    run.target = store_target
    return run


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
