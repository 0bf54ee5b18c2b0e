"""Durability: kill -9 at random moments loses no acknowledged change; a full disk fails a
command cleanly with nothing partial left behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest

from backend.engine import Engine
from backend.errors import CommandError
from backend.store import SQLiteStore
from conftest import ADMIN_PASSWORD, ROOT, cli_env

KILLS = 20


def acknowledged(output: bytes) -> list[str]:
    return [line.split("'")[1] for line in output.decode(errors="replace").splitlines()
            if line.startswith("Knowledge graph '") and line.endswith("' created.")]


def test_kill_9_loses_no_acknowledged_change(tmp_path, config_file, cheap_config):
    data = tmp_path / "data"
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    rng = random.Random(20261122)
    acked: list[str] = []
    for run in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-m", "repl", "--data-dir", str(data), "--on-error", "continue"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=env, cwd=ROOT)
        script = "".join(f".kg create r{run}-{i}\n.kg acl grant r{run}-{i} admin editor\n" for i in range(400))
        proc.stdin.write(script.encode())
        proc.stdin.flush()
        # Read until a random number of acknowledgements has arrived, then kill without warning.
        target = rng.randint(1, 60)
        seen = b""
        while len(acknowledged(seen)) < target:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        acked += acknowledged(seen + rest)
    assert len(acked) >= KILLS
    store = SQLiteStore(data)
    try:
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with store.read():
            present = {kg["name"] for kg in store.kgs()}
            assert store.verify_audit()[1] is None
        missing = [name for name in acked if name not in present]
        assert missing == [], f"{len(missing)} acknowledged changes lost"
    finally:
        store.close()


def test_full_disk_fails_the_command_and_leaves_nothing_partial(tmp_path, cheap_config):
    store = SQLiteStore(tmp_path / "d")
    engine = Engine(store, cheap_config)
    engine.bootstrap(ADMIN_PASSWORD)
    admin = engine.login("admin", ADMIN_PASSWORD, source="local")
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    # SQLite reports SQLITE_FULL once the file may not grow: the same path as a full disk.
    store.conn.execute(f"PRAGMA max_page_count = {pages}")
    created = []
    with pytest.raises(CommandError) as exc:
        for i in range(10_000):
            engine.execute(admin, f".user create filler{i:05d} filler-passphrase-{i:05d} viewer")
            created.append(f"filler{i:05d}")
    assert exc.value.message.startswith("The store could not complete the command:")
    assert "full" in exc.value.message and exc.value.message.endswith("Nothing was changed.")
    failed = f"filler{len(created):05d}"
    store.conn.execute("PRAGMA max_page_count = 1073741823")
    with store.read():
        assert store.user(failed) is None
        assert [u["name"] for u in store.users() if u["name"].startswith("filler")] == created
        assert store.verify_audit()[1] is None
    assert engine.execute(admin, f".user create {failed} filler-passphrase-again viewer").rows
    store.close()
