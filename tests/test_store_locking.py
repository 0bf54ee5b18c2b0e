"""The store under crashes and other processes: a wrong key touches nothing even beside a WAL
left by a crash, rekey holds the store alone, and a waiting script holds no lock."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backend.errors import StoreError
from backend.store import SQLiteStore
from backend.store.rekey import rekey
from conftest import ADMIN_PASSWORD, CHEAP_TOML, ROOT

KEY_HEX = secrets.token_hex(32)


def files_digest(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


CRASHING_WRITER = textwrap.dedent("""
    import os, signal, sys
    from backend.config import Config
    from backend.engine import Engine
    from backend.store import SQLiteStore
    store = SQLiteStore(sys.argv[1], encryption_key=bytes.fromhex(sys.argv[2]))
    engine = Engine(store, Config())
    admin = engine.trusted_session("admin")
    engine.execute(admin, ".kg create left-in-the-wal")
    os.kill(os.getpid(), signal.SIGKILL)     # committed, never checkpointed: the WAL stays
""")


def test_wrong_key_changes_no_byte_beside_a_wal_left_by_a_crash(shell):
    assert shell(".whoami\n", INPUTLAYER_ENCRYPTION_KEY=KEY_HEX).returncode == 0
    crashed = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(shell.data_dir), KEY_HEX],
                             cwd=ROOT, capture_output=True)
    assert crashed.returncode == -9, crashed.stderr
    assert (shell.data_dir / "inputlayer.db-wal").stat().st_size > 0
    before = files_digest(shell.data_dir)
    wrong = shell(".kg list\n", INPUTLAYER_ENCRYPTION_KEY=secrets.token_hex(32))
    assert wrong.returncode == 2 and "wrong encryption key" in wrong.stderr
    missing = shell(".kg list\n")
    assert missing.returncode == 2 and "the store is encrypted" in missing.stderr
    assert files_digest(shell.data_dir) == before
    right = shell(".kg list\n", INPUTLAYER_ENCRYPTION_KEY=KEY_HEX)
    assert right.returncode == 0 and "left-in-the-wal" in right.stdout


def test_rekey_refuses_while_another_process_has_the_store_open(shell):
    assert shell(".whoami\n").returncode == 0
    other = SQLiteStore(shell.data_dir)
    try:
        before = files_digest(shell.data_dir)
        with pytest.raises(StoreError, match="in use by another process"):
            rekey(shell.data_dir, None, secrets.token_bytes(32))
        assert files_digest(shell.data_dir) == before
    finally:
        other.close()


def test_a_write_during_rekey_is_refused_never_lost(shell, monkeypatch):
    assert shell(".kg create before-rekey\n").returncode == 0
    new_key = secrets.token_bytes(32)
    during: list[subprocess.CompletedProcess] = []
    import_rows = SQLiteStore.import_rows

    def import_while_a_shell_writes(self, rows):
        during.append(shell(".kg create during-rekey\n"))
        return import_rows(self, rows)
    monkeypatch.setattr(SQLiteStore, "import_rows", import_while_a_shell_writes)
    rekey(shell.data_dir, None, new_key)
    monkeypatch.undo()
    [writer] = during
    after = shell(".kg list\n", INPUTLAYER_ENCRYPTION_KEY=new_key.hex())
    assert after.returncode == 0 and "before-rekey" in after.stdout
    # Either the writer was refused (exit 2, a clear line), or its change survived: never
    # acknowledged and then lost.
    if writer.returncode == 0:
        assert "during-rekey" in after.stdout
    assert writer.returncode == 2, writer.stderr
    assert writer.stderr.strip() == ("error: cannot open the store: the store is being rekeyed "
                                     "(inputlayer-server rekey): try again when it has finished")


def _shell_process(data_dir: Path, config: Path, *args: str) -> subprocess.Popen:
    from conftest import cli_env
    env = cli_env(config, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    return subprocess.Popen([sys.executable, "-m", "repl", "--data-dir", str(data_dir), *args], cwd=ROOT,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _until_read(pipe, proc: subprocess.Popen) -> None:
    """Wait until the process has read everything written to `pipe` (and so is waiting for more)."""
    import fcntl
    import termios
    import time
    deadline = time.monotonic() + 60
    while True:
        waiting = bytearray(4)
        fcntl.ioctl(pipe.fileno(), termios.FIONREAD, waiting)
        if int.from_bytes(waiting, sys.byteorder) == 0 or proc.poll() is not None:
            return
        assert time.monotonic() < deadline, "the shell never read its stdin"
        time.sleep(0.01)


@pytest.fixture
def short_lock_wait(tmp_path: Path) -> Path:
    path = tmp_path / "short-wait.toml"
    path.write_text(CHEAP_TOML + "\n[shell]\nlock_wait_ms = 200\n")
    return path


def test_a_single_transaction_waiting_for_stdin_does_not_hold_the_store(shell, short_lock_wait, cheap_config):
    from serverkit import logged_in, running_server

    assert shell(".whoami\n").returncode == 0
    script = _shell_process(shell.data_dir, short_lock_wait, "-1")
    try:
        script.stdin.write(b".kg create from-the-script\n")
        script.stdin.flush()
        _until_read(script.stdin, script)           # logged in, line read, stdin still open
        other = shell(".kg create from-another-shell\n", "--config", str(short_lock_wait))
        assert other.returncode == 0, other.stderr
        with running_server(shell.data_dir, cheap_config) as server:
            logged_in(server.url).close()            # a password login writes its audit record
        out, err = script.communicate(timeout=60)     # closes stdin: the script ends
    finally:
        script.kill()
    assert script.returncode == 0, err
    listed = shell(".kg list\n").stdout
    assert "from-the-script" in listed and "from-another-shell" in listed


def test_a_lock_met_mid_run_is_one_error_line_and_exit_2(shell, short_lock_wait):
    import sqlite3
    assert shell(".whoami\n").returncode == 0
    script = _shell_process(shell.data_dir, short_lock_wait)
    holder = sqlite3.connect(shell.data_dir / "inputlayer.db", isolation_level=None)
    try:
        script.stdin.write(b".kg create first\n")
        script.stdin.flush()
        assert script.stdout.readline().startswith(b"Knowledge graph 'first' created")
        holder.execute("BEGIN IMMEDIATE")           # another process holds the write lock
        out, err = script.communicate(b".kg create second\n", timeout=60)
    finally:
        holder.close()
        script.kill()
    lines = err.decode().splitlines()
    assert script.returncode == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "database is locked" in lines[0], err
    assert "second" not in shell(".kg list\n").stdout


def test_a_store_failure_inside_a_command_is_one_line_and_exit_2(tmp_path, config_file, monkeypatch):
    import sqlite3

    from repl.__main__ import main
    from repl.environment import fake_environment

    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")
    variables = {"INPUTLAYER_CONFIG": str(config_file), "INPUTLAYER_ADMIN_PASSWORD": ADMIN_PASSWORD}
    data_dir = str(tmp_path / "d")
    assert main(["--data-dir", data_dir], fake_environment(b"", variables)) == 0
    monkeypatch.setattr(SQLiteStore, "add_kg", locked)
    for extra in ([], ["-1"]):
        env = fake_environment(b".kg create broken\n.kg create never\n", variables)
        assert main(["--data-dir", data_dir, *extra], env) == 2
        errors = env.stderr.getvalue()
        assert errors.startswith("<stdin>:1: error: The store could not complete the command: database is locked")
        assert "never" not in errors


def test_a_single_transaction_holding_the_lock_too_long_is_rolled_back(tmp_path, cheap_config):
    from backend.targets.local import LocalBackend
    from repl.environment import ExitStatus, fake_environment
    from repl.script import Line, LineQueue, run_script

    backend = LocalBackend(str(tmp_path / "d"), cheap_config)
    backend.bootstrap(ADMIN_PASSWORD)
    backend.use_bootstrap_admin()
    ticks = iter(range(0, 1000, 3))                 # every look at the clock: 3 s later
    env = fake_environment()
    lines = LineQueue([Line("<stdin>", n, f".kg create slow-{n}") for n in range(1, 5)])
    try:
        status = run_script(backend, lines, env, fmt="plain", on_error="stop", single_transaction=True,
                            max_transaction_secs=5, clock=lambda: next(ticks))
        assert status == ExitStatus.STOPPED
        assert "longer than 5 s (shell.max_transaction_secs)" in env.stderr.getvalue()
        assert "slow-" not in render_kgs(backend)
    finally:
        backend.close()


def render_kgs(backend) -> str:
    return "\n".join(str(row) for row in backend.execute(".kg list").rows)
