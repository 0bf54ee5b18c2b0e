"""Several nodes on one PostgreSQL (scaleout.md, Changes reach every node; Faults): changes heard
through LISTEN/NOTIFY end sessions on every node, a node whose listener dropped reads afresh,
PostgreSQL stopped and started under load, a node killed with SIGKILL.

Cross-process effects are awaited with deadlines, never with fixed sleeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

import psycopg
import pytest
from conftest import ADMIN_PASSWORD, CHEAP_ARGON2, StoreTarget, cli_env
from serverkit import Client, ServerProcess, ServerThread, logged_in
from test_protocol import assert_ended
from test_server import http_get
from websockets.exceptions import ConnectionClosed

from backend.config import Config, with_values
from backend.engine import Engine
from backend.errors import CommandError
from backend.server import ServerOptions
from backend.store.postgres.listen import APPLICATION_NAME
from backend.store.postgres.view import TRUST_SECS

NEVER = 3600.0          # a watcher interval so long that only a notification can wake it


@pytest.fixture
def target(pg_server, tmp_path):
    t = StoreTarget("postgresql", tmp_path, pg_server)
    yield t
    t.close()


def wait_for(condition: Callable[[], object], within: float, what: str):
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        time.sleep(0.02)


def node_thread(target: StoreTarget, **options) -> ServerThread:
    config = with_values(Config(), {**CHEAP_ARGON2, "server.host": "127.0.0.1", "server.port": 0})
    return ServerThread(target.open(), config, options=ServerOptions(**options))


def listeners(url: str, port: int | None = None) -> list[int]:
    """The pids of the nodes' LISTEN connections (of the node on `port`, if given)."""
    name = f"{APPLICATION_NAME} 127.0.0.1:{port}" if port else f"{APPLICATION_NAME}%"
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s "
                            "AND datname = current_database()", (name,)).fetchall()
    return [row[0] for row in rows]


def test_a_change_through_another_process_is_heard_and_ends_the_session_at_once(target):
    # The watcher never polls and never sweeps on its own here: only what it hears can end a session.
    node = node_thread(target, poll_interval=NEVER, full_sweep_interval=NEVER)
    other = node_thread(target)
    try:
        wait_for(lambda: node.server.changes.listening and listeners(target.url, node.port), 10, "listening")
        with logged_in(other.url) as admin:
            for name in ("bob", "carol"):
                assert admin.execute(f".user create {name} pw-123456 viewer")["type"] == "result"
            key = admin.execute(".apikey create etl role=viewer user=bob")["rows"][0][0]
            bob = logged_in(node.url, "bob", "pw-123456")
            carol = logged_in(node.url, "carol", "pw-123456")
            with Client(node.url) as by_key:
                assert by_key.authenticate(key)["type"] == "authenticated"
                assert admin.execute(".apikey revoke etl")["type"] == "result"
                assert_ended(by_key, "API key revoked", within=1.0)
            assert admin.execute(".user password carol pw-changed-1")["type"] == "result"
            assert_ended(carol, "password changed", within=1.0)
            assert admin.execute(".user drop bob")["type"] == "result"
            assert_ended(bob, "user dropped", within=1.0)
        assert node.server.changes.heard >= 3
    finally:
        node.stop()
        other.stop()


def test_a_node_that_stops_hearing_reads_afresh_until_it_listens_again(target):
    # Deaf, it polls the change counter; it connects again only after listen_retry.
    node = node_thread(target, poll_interval=0.1, full_sweep_interval=NEVER, listen_retry=5.0)
    try:
        wait_for(lambda: node.server.changes.listening, 10, "listening")
        with logged_in(node.url) as admin:
            for line in (".user create bob pw-123456 viewer", ".user create carol pw-123456 viewer",
                         ".kg create graph", ".kg acl grant graph bob viewer"):
                assert admin.execute(line)["type"] == "result", line
            monitor = admin.execute(".apikey create monitor")["rows"][0][0]
        bob = logged_in(node.url, "bob", "pw-123456")
        carol = logged_in(node.url, "carol", "pw-123456")
        assert bob.execute(".kg acl list graph")["type"] == "result"     # the right, now cached

        # Another process's changes, which the node cannot hear while deaf.
        engine = Engine(target.open(), with_values(Config(), CHEAP_ARGON2))
        admin_session = engine.login("admin", ADMIN_PASSWORD, source="local")

        assert _health(node.port)["changes"] == "listening" and _listening_metric(node.port, monitor) == 1
        pids = listeners(target.url, node.port)
        assert len(pids) == 1
        with psycopg.connect(target.url, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
        wait_for(lambda: not node.server.changes.listening, 10, "the node notices it is deaf")
        deaf = _health(node.port)               # an operator sees it: serving, but degraded
        assert deaf["status"] == "degraded" and deaf["changes"].startswith("not listening: "), deaf
        password = urllib.parse.urlsplit(target.url).password
        assert password and password not in json.dumps(deaf)      # /health answers anyone
        assert _listening_metric(node.port, monitor) == 0
        engine.execute(admin_session, ".kg acl revoke graph bob")
        assert bob.execute(".kg acl list graph")["type"] == "error"      # never the cached right
        engine.execute(admin_session, ".user drop carol")
        assert_ended(carol, "user dropped", within=1.0)
        assert not node.server.changes.listening, "the test must run while the node is deaf"

        wait_for(lambda: node.server.changes.listening and listeners(target.url, node.port), 15, "listening again")
        assert _health(node.port)["changes"] == "listening"
        engine.execute(admin_session, ".user drop bob")
        assert_ended(bob, "user dropped", within=1.0)
    finally:
        node.stop()


def test_a_node_whose_listener_stalls_stops_answering_from_its_cache_within_a_second(target):
    # A stalled connection (not a dropped one) says nothing: the node still thinks it listens
    # until its proof times out. Its cache must not outlive the last proof by more than a second.
    node = node_thread(target, full_sweep_interval=NEVER)
    try:
        wait_for(lambda: node.server.changes.listening and listeners(target.url, node.port), 10, "listening")
        with logged_in(node.url) as admin:
            for line in (".user create bob pw-123456 viewer", ".kg create graph", ".kg acl grant graph bob viewer"):
                assert admin.execute(line)["type"] == "result", line
        bob = logged_in(node.url, "bob", "pw-123456")
        engine = Engine(target.open(), with_values(Config(), CHEAP_ARGON2))
        admin_session = engine.login("admin", ADMIN_PASSWORD, source="local")
        with engine.store.read():
            now = engine.store.data_version()
        view = node.server.store.view
        wait_for(lambda: view.trusted() is not None and view.cache.generation == now, 5,
                 "the node heard every change so far, and trusts what it heard")
        assert bob.execute(".kg acl check graph bob")["rows"] == [["bob", "graph", "viewer", "ACL entry"]]
        assert len(view.cache.rows) >= 3            # the user, the graph and the grant, now cached

        [pid] = listeners(target.url, node.port)
        os.kill(pid, signal.SIGSTOP)
        try:
            engine.execute(admin_session, ".kg acl revoke graph bob")
            revoked = time.monotonic()
            wait_for(lambda: bob.execute(".kg acl check graph bob")["type"] == "error", 2.0,
                     "the revoked right refused although the node heard nothing")
            assert time.monotonic() - revoked <= TRUST_SECS + 0.5
            assert node.server.changes.listening, "the test must run while the node believes it listens"
        finally:
            os.kill(pid, signal.SIGCONT)
        bob.close()
    finally:
        node.stop()


def _health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        return json.loads(response.read())


def _listening_metric(port: int, key: str) -> float:
    text = http_get(port, "/metrics", {"Authorization": f"Bearer {key}"})[2]
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("inputlayer_store_listening ")))


def _http(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Load:
    """A client creating knowledge graphs through one node as fast as it answers: what each
    reply acknowledged, what failed and how long the slowest failure took."""

    def __init__(self, url: str, tag: str):
        self.url, self.tag = url, tag
        self.acknowledged: list[str] = []
        self.errors: list[str] = []
        self.slowest_error = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._send()
        except ConnectionClosed:
            pass                           # the node was killed: what it acknowledged is counted

    def _send(self) -> None:
        with logged_in(self.url) as client:
            n = 0
            while not self.stopping.is_set():
                name = f"{self.tag}-{n}"
                n += 1
                started = time.monotonic()
                reply = client.execute(f".kg create {name}", timeout=30)
                if reply["type"] == "result":
                    self.acknowledged.append(name)
                    continue
                if reply["message"] != "Rate limit exceeded":    # failing fast, it outruns the limit
                    self.errors.append(reply["message"])
                    self.slowest_error = max(self.slowest_error, time.monotonic() - started)
                self.stopping.wait(0.02)       # a load, not a flood: a little room after a failure

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


def stop_or_show_stacks(node: ServerProcess) -> None:
    """Stop the node; one that does not stop in time shows where its threads wait (faulthandler)."""
    try:
        node.stop(timeout=60)
    except subprocess.TimeoutExpired:
        node.proc.send_signal(signal.SIGABRT)
        _, err = node.proc.communicate(timeout=30)
        raise AssertionError(f"the node did not stop:\n{err[-6000:]}") from None


def nothing_lost(url: str, load: Load) -> None:
    """Every change the load was told of is stored; one whose reply was lost is there wholly,
    with its audit record, or not at all; the audit chain verifies."""
    with logged_in(url) as admin:
        stored = {row[0] for row in admin.execute(".kg list")["rows"] if row[0].startswith(f"{load.tag}-")}
        verify = admin.execute(".audit verify")
        audited = admin.execute(".audit limit=100000 action=kg.create")["rows"]
    assert set(load.acknowledged) <= stored
    assert verify["rows"][0][0].startswith("Audit log intact"), json.dumps(verify)
    assert {row[5] for row in audited if row[5].startswith(f"{load.tag}-") and row[6] == "ok"} == stored


def test_postgresql_stopped_and_started_under_load(tmp_path, config_file):
    import pgkit

    pg = pgkit.start_postgres()               # its own server: this test stops it
    try:
        target = StoreTarget("postgresql", tmp_path, pg)
        env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, PYTHONFAULTHANDLER="1",
                      **target.cli_env())
        node = ServerProcess(target.cli_args(), env)
        base = node.url.replace("ws://", "http://").rsplit("/", 1)[0]
        try:
            with logged_in(node.url) as admin:
                key = admin.execute(".apikey create etl role=viewer")["rows"][0][0]
            shell = Engine(target.open(), with_values(Config(), CHEAP_ARGON2))     # a shell on the store
            shell_admin = shell.login("admin", ADMIN_PASSWORD, source="local")
            load = Load(node.url, "before")
            wait_for(lambda: len(load.acknowledged) >= 20, 30, "acknowledged changes")
            pg.halt()
            wait_for(lambda: load.errors, 15, "a command failing while the database is down")
            before = list(load.acknowledged)
            wait_for(lambda: _http(base + "/ready") == 503, 15, "/ready 503")
            unavailable = {"type": "auth_error", "message": "Authentication service unavailable"}
            with Client(node.url) as client:
                assert client.login() == unavailable
                assert client.authenticate(key) == unavailable
            for line in (".kg create shell-down", ".user list"):
                with pytest.raises(CommandError, match="^store unavailable: "):
                    shell.execute(shell_admin, line)
            pg.resume()
            wait_for(lambda: _http(base + "/ready") == 200, 30, "/ready 200 again")
            count = len(load.acknowledged)
            wait_for(lambda: len(load.acknowledged) > count, 30, "commands working again")
            load.stop()
            wrong = [e for e in load.errors if not e.startswith("store unavailable: ")]
            assert not wrong, wrong
            assert load.slowest_error <= 10.5, load.slowest_error
            assert set(before) <= set(load.acknowledged)
            nothing_lost(node.url, load)
            assert shell.execute(shell_admin, ".kg create shell-back").rows   # the shell reconnected too
        finally:
            stop_or_show_stacks(node)
            target.close()
    finally:
        pg.stop()


def test_a_node_killed_loses_nothing_it_acknowledged(target, config_file):
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, **target.cli_env())
    victim, survivor = ServerProcess(target.cli_args(), env), ServerProcess(target.cli_args(), env)
    try:
        load = Load(victim.url, "victim")
        wait_for(lambda: len(load.acknowledged) >= 30, 30, "acknowledged changes")
        victim.kill()
        load.thread.join(30)
        nothing_lost(survivor.url, load)
    finally:
        victim.kill()
        survivor.stop()
