"""The shell against a server (`--url`): the same commands, output and exit statuses as locally."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from backend.targets.remote import RemoteBackend
from backend.errors import AuthError, CommandError, SessionEnded, TargetUnreachable
from conftest import ADMIN_PASSWORD, cli_env, run_cli
from backend.config import with_values
from serverkit import ServerProcess, Servers, logged_in, running_server, server_env
from test_examples import SCRIPTS, directives, run_session

REMOTE_SCRIPTS = [s for s in SCRIPTS if "-1" not in directives(s)["args"]]   # -1 is local only


@pytest.fixture
def server_process(tmp_path, config_file):
    started = []

    def start() -> ServerProcess:
        server = ServerProcess(["--data-dir", str(tmp_path / f"srv{len(started)}")],
                               server_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
        started.append(server)
        return server

    yield start
    for server in started:
        code, _, err = server.stop()
        assert code == 0, err


@pytest.mark.parametrize("script", REMOTE_SCRIPTS, ids=lambda p: p.stem)
def test_example_sessions_give_the_same_output_remotely(script: Path, tmp_path, config_file, server_process):
    server = server_process()
    actual = run_session(script, tmp_path / "unused", config_file, target=["--url", server.url])
    expected = script.with_suffix(".out").read_text()
    if actual != expected:
        # The one true difference: the audit log's source is the client's address, not `local`;
        # a wider column realigns the table around it.
        assert "ws:127.0.0.1" in actual
        assert unaligned(actual.replace("ws:127.0.0.1", "local")) == unaligned(expected)


def unaligned(text: str) -> list[str]:
    return ["---" if re.fullmatch(r"[-+]+", line) else re.sub(r" +", " ", line) for line in text.splitlines()]


def test_exit_statuses_match_local(tmp_path, config_file, server_process):
    server = server_process()
    program = ".user create alice alice-pass-1 editor\n.user drop nobody\n.user list\n"
    for args, status in ((["--on-error", "continue"], 1), ([], 3)):
        results = []
        for target in (["--data-dir", str(tmp_path / f"local{status}")], ["--url", server.url]):
            proc = run_cli([*target, "--format", "json", *args], stdin=program,
                           env=cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
            results.append((proc.returncode, proc.stderr.decode().replace(server.url, "URL")))
            program = program.replace("alice", "alice2")
        assert results[0][0] == results[1][0] == status
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD="wrong-password", INPUTLAYER_URL=server.url)
    proc = run_cli(["-c", ".whoami"], env=env)             # INPUTLAYER_URL picks the server
    assert proc.returncode == 2 and b"authentication failed: Invalid credentials" in proc.stderr
    proc = run_cli(["--url", "ws://127.0.0.1:9/ws", "-c", ".whoami"], env=cli_env(config_file))
    assert proc.returncode == 2 and proc.stderr.startswith(b"error: cannot reach ws://127.0.0.1:9/ws")
    assert b"Traceback" not in proc.stderr
    proc = run_cli(["-c", ".session list"], env=cli_env(config_file, INPUTLAYER_URL=server.url,
                                                        INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    assert proc.returncode == 0 and proc.stdout.decode().count("\tadmin\tpassword\t127.0.0.1\tdefault\t") == 1


@pytest.fixture
def live(tmp_path, cheap_config):
    with running_server(tmp_path / "data", cheap_config) as server:
        yield server


def test_remote_backend_surface(live):
    backend = RemoteBackend(live.url)
    assert backend.target == f"127.0.0.1:{live.port}"
    with pytest.raises(AuthError, match="Invalid credentials"):
        backend.login("admin", "wrong-password")
    backend.login("admin", ADMIN_PASSWORD)                  # again on the same connection
    assert backend.execute(".whoami").rows == [["admin", "admin", "password", "default"]]
    result = backend.execute(".kg create sales")
    assert result.switched_kg == "sales" and backend.knowledge_graph == "sales"
    with pytest.raises(CommandError, match="User 'bob' not found"):
        backend.execute(".user drop bob")
    backend.close()


class Told:
    """A watch() listener that a test can wait on."""

    def __init__(self):
        self.event = threading.Event()
        self.said: tuple[str, bool] | None = None

    def __call__(self, message: str, ended: bool) -> None:
        self.said = (message, ended)
        self.event.set()

    def wait(self) -> tuple[str, bool]:
        assert self.event.wait(10), "the listener was not told"
        assert self.said is not None
        return self.said


def test_a_killed_session_is_noticed_while_idle_and_stays_ended(live):
    """Issue 13 item 12: after `.session kill` the stored credentials never log in again."""
    backend = RemoteBackend(live.url)
    told = Told()
    backend.watch(told)
    backend.login("admin", ADMIN_PASSWORD)
    with logged_in(live.url) as admin:
        admin.execute(f".session kill {backend.session_id}")
    assert told.wait() == ("Session ended: killed by an administrator", True)   # while idle
    for attempt in (lambda: backend.execute(".whoami"), backend.reconnect):
        with pytest.raises(SessionEnded, match="killed by an administrator"):
            attempt()
    with logged_in(live.url) as admin:
        sessions = admin.execute(".session list")["rows"]
    assert len(sessions) == 1          # only the admin who looked: nobody logged in again
    backend.close()


def test_a_restarted_server_is_noticed_while_idle_then_reconnected(tmp_path, cheap_config):
    servers = Servers()
    server = servers.start(tmp_path / "data", with_values(cheap_config, {"server.port": 0}))
    backend = RemoteBackend(server.url)
    told = Told()
    backend.watch(told)
    backend.login("admin", ADMIN_PASSWORD)
    backend.execute(".kg create sales")
    sid = backend.session_id
    servers.stop_all()
    message, ended = told.wait()
    assert not ended and "connection to" in message and "lost" in message
    with pytest.raises(TargetUnreachable, match="cannot reach"):
        backend.reconnect()
    again = Servers()
    try:
        again.start(tmp_path / "data", with_values(cheap_config, {"server.port": server.port}))
        backend.reconnect()
        assert backend.session_id != sid
        assert backend.execute(".whoami").rows == [["admin", "admin", "password", "sales"]]   # same KG again
    finally:
        backend.close()
        again.stop_all()


def test_api_key_login_remotely(live):
    with logged_in(live.url) as admin:
        key = admin.execute(".apikey create ops role=viewer")["rows"][0][0]
    backend = RemoteBackend(live.url)
    backend.authenticate(key)
    assert backend.execute(".whoami").rows[0][2] == "api_key:ops"
    with pytest.raises(CommandError, match="Permission denied"):
        backend.execute(".user list")
    backend.close()


def test_a_request_that_finds_the_connection_lost_says_it_was_the_first_to_know(tmp_path, cheap_config):
    """The reader tells watch() of an end only when no request holds the connection; a request
    (the completion refresher's) that meets the end first must say so, or nobody is told."""
    from websockets.protocol import State

    from backend.errors import NotSent

    servers = Servers()
    server = servers.start(tmp_path / "data", with_values(cheap_config, {"server.port": 0}))
    backend = RemoteBackend(server.url)
    told = Told()
    backend.watch(told)
    backend.login("admin", ADMIN_PASSWORD)
    link = backend._link
    assert link is not None
    with backend._lock:                           # a request in progress while the server stops
        servers.stop_all()
        deadline = time.monotonic() + 10          # the reader sees the end, then waits for the lock
        while link.ws.protocol.state is not State.CLOSED and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.ws.protocol.state is State.CLOSED
        with pytest.raises(NotSent) as found:
            backend.execute(".kg list")
    assert found.value.discovered
    with pytest.raises(NotSent) as again:         # known now: not discovered a second time
        backend.execute(".kg list")
    assert not again.value.discovered
    backend.close()
