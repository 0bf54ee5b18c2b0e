"""Shared pieces of the benchmark: child environments, timing, statistics, temp dirs, figures."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ADMIN_PASSWORD = "bench-admin-pass"

CHEAP_TOML = """\
[security]
argon2_memory_kib = 8
argon2_time_cost = 1
argon2_parallelism = 1
"""
CHEAP_VALUES = {"security.argon2_memory_kib": 8, "security.argon2_time_cost": 1,
                "security.argon2_parallelism": 1}


def argon2_text(cheap: bool) -> str:
    from backend.config import SecurityConfig
    if cheap:
        return "argon2id m=8 KiB, t=1, p=1 (cheap, via config file)"
    d = SecurityConfig()
    return f"argon2id m={d.argon2_memory_kib} KiB, t={d.argon2_time_cost}, p={d.argon2_parallelism} (real defaults)"


def cheap_config():
    from backend.config import Config, with_values
    return with_values(Config(), CHEAP_VALUES)


def default_config():
    from backend.config import Config
    return Config()


# --- child processes ----------------------------------------------------------------------------

def child_env(**extra: str) -> dict[str, str]:
    """The environment of a program under test: what a user has. This sandbox sets
    PYTHONDONTWRITEBYTECODE=1, which would make every start re-compile every source (~30 ms);
    users do not have it, so it is removed. No inherited INPUTLAYER_* variable. The installed
    console scripts import the packages from wherever they were installed from: PYTHONPATH
    makes them run this checkout's code, the code being measured."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("INPUTLAYER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def program(name: str, module: str) -> list[str]:
    """The installed console script next to this interpreter, else `python -m module`."""
    script = Path(PY).parent / name
    return [str(script)] if script.exists() else [PY, "-m", module]


def inputlayer() -> list[str]:
    return program("inputlayer", "repl")


def inputlayer_server() -> list[str]:
    return program("inputlayer-server", "backend")


WARM_IMPORTS = ("import repl.__main__, repl.script, repl.output, repl.interactive, repl.completer, "
                "repl.highlight, repl.history, repl.display, backend.targets.local, backend.engine, backend.store, "
                "backend.server, backend.targets.remote, backend.bootstrap, backend.store.codec, prompt_toolkit, "
                "prompt_toolkit.shortcuts, pygments, websockets.asyncio.server, websockets.asyncio.client, "
                "argon2, tomllib, sqlite3, jwt, cryptography")


def warm_bytecode() -> str:
    """Write the bytecode caches once, as a user's first run would."""
    env = child_env()
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "backend"), str(ROOT / "repl"), str(ROOT / "bench")],
                   env=env, cwd=ROOT, capture_output=True)
    subprocess.run([PY, "-c", WARM_IMPORTS], env=env, cwd=ROOT, capture_output=True)
    subprocess.run([*inputlayer(), "--version"], env=env, cwd=ROOT, capture_output=True)
    return ("child processes run without PYTHONDONTWRITEBYTECODE (set in this sandbox, not by users); "
            "bytecode caches warmed once before measuring")


def run(cmd: list[str], *, env: dict | None = None, stdin: bytes | None = None, cwd: Path | None = None,
        timeout: float = 600, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of one run, and its result."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, env=env if env is not None else child_env(), cwd=cwd or ROOT,
                          capture_output=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace')[-800:]}")
    return elapsed, proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- statistics ---------------------------------------------------------------------------------

def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def percentile(values, p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    values = sorted(values)
    if not values:
        return float("nan")
    rank = max(1, min(len(values), int(-(-p * len(values) // 100))))
    return values[rank - 1]


# --- temp dirs ----------------------------------------------------------------------------------

class Scratch:
    """Fresh temporary directories under one base, removed at the end."""

    def __init__(self, base: str | None = None):
        self.base = base or tempfile.gettempdir()
        self.root = Path(tempfile.mkdtemp(prefix="ilbench-", dir=self.base))
        self._n = 0
        self.extra: list[Path] = []

    def new(self, name: str) -> Path:
        self._n += 1
        path = self.root / f"{self._n:03d}-{name}"
        path.mkdir()
        return path

    def config(self, cheap: bool) -> Path:
        path = self.root / ("cheap.toml" if cheap else "default.toml")
        if not path.exists():
            path.write_text(CHEAP_TOML if cheap else "# real defaults\n")
        return path

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        for path in self.extra:
            shutil.rmtree(path, ignore_errors=True)


# --- results ------------------------------------------------------------------------------------

@dataclass
class Figure:
    key: str
    label: str
    value: Any                       # a number, or None when skipped
    unit: str = ""
    note: str = ""                   # "skipped (not installed)", a ratio, ...
    runs: list | None = None


@dataclass
class Target:
    key: str
    text: str                        # the target
    measured: str                    # what was measured, as text
    ok: bool | None                  # None: could not be judged (a peer missing)


@dataclass
class Outcome:
    workload: str
    title: str
    params: str
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)     # extra structured data (e.g. W6 series)

    def add(self, key, label, value, unit="", note="", runs=None) -> Figure:
        fig = Figure(key, label, value, unit, note, runs)
        self.figures.append(fig)
        return fig

    def get(self, key):
        for fig in self.figures:
            if fig.key == key:
                return fig.value
        return None

    def target(self, key, text, measured, ok) -> None:
        self.targets.append(Target(key, text, measured, ok))


def prepare_store(location: Path | str, config, *, keys: int = 1, setup=None,
                  env: dict[str, str] | None = None) -> list[str]:
    """Bootstrap a store (a data directory, or a postgresql:// URL with the server secrets file
    in `env`) in this process and create `keys` admin API keys; `setup(engine, session)` may
    add more. Returns the keys' secrets."""
    from backend.engine import Engine
    from backend.store.locate import open_store

    store = open_store(str(location), env or {})
    try:
        engine = Engine(store, config)
        engine.bootstrap(ADMIN_PASSWORD)
        admin = engine.trusted_session("admin")
        if setup is not None:
            setup(engine, admin)
        engine.begin_batch()
        secrets = [engine.execute(admin, f".apikey create bench-{i}").rows[0][0] for i in range(keys)]
        engine.end_batch(True)
        return secrets
    finally:
        store.close()
