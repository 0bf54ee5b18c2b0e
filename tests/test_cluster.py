"""Several server nodes sharing one Redis (scaleout.md, Shared state in Redis; Faults): a real
redis-server on 127.0.0.1, two server nodes on one data directory, as a load balancer would
spread a cluster's clients."""

from __future__ import annotations

import json
import secrets
import time

import pytest
import redis
from conftest import ADMIN_PASSWORD, CHEAP_TOML, cli_env, run_cli
from serverkit import Client, ServerProcess, Servers, logged_in
from test_server import http_get

from backend.config import with_values
from fakes import FakeClock

WRONG = {"type": "login", "username": "admin", "password": "wrong-password"}


def wrong_logins(url: str, count: int, **kwargs) -> list[str]:
    """`count` wrong passwords, on as many connections as the pre-login rate (10 a second) needs."""
    answers: list[str] = []
    while len(answers) < count:
        with Client(url, **kwargs) as c:
            answers += [c.request(WRONG)["message"] for _ in range(min(10, count - len(answers)))]
    return answers
LOCKED = "Too many failed attempts"


def eventually(check, within: float = 10.0, what: str = "condition"):
    """Poll a cross-process effect until it holds (never a fixed sleep)."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within}s")
        time.sleep(0.05)


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}:"       # tests share one Redis, never a key


@pytest.fixture
def cluster(tmp_path, cheap_config, redis_service, prefix):
    """start(n, **config values) -> n nodes on one data directory and the shared Redis."""
    servers = Servers()

    def start(count: int = 2, redis_url: str | None = None, clock=None, **values):
        config = with_values(cheap_config, {"server.port": 0, "cluster.redis_url": redis_url or redis_service.url,
                                            "cluster.key_prefix": prefix, "cluster.session_ttl_secs": 3, **values})
        return [servers.start(tmp_path / "data", config, clock=clock) for _ in range(count)]

    yield start
    servers.stop_all()


# --- lockout -----------------------------------------------------------------------------------

def test_the_21st_failure_is_refused_whichever_node_the_first_20_reached(cluster):
    a, b = cluster(2)
    with Client(a.url) as on_a, Client(b.url) as on_b:
        answers = [(on_a if i % 2 else on_b).request(WRONG)["message"] for i in range(20)]
        assert answers == ["Invalid credentials"] * 20          # ten on each node
    with Client(a.url) as on_a, Client(b.url) as on_b:         # (10 messages a connection before login)
        assert on_a.login()["message"].startswith(LOCKED)      # the right password, refused at once
        assert on_b.login()["message"].startswith(LOCKED)
    with logged_in(b.url, source_address=("127.0.0.2", 0)) as admin:
        rows = admin.execute(".lockout list")["rows"]
        assert rows[0][:2] == ["127.0.0.1", "20"] and rows[0][2]
        assert admin.execute(".lockout clear 127.0.0.1")["rows"] == [["Lockout cleared for 127.0.0.1."]]
    with Client(a.url) as again:
        assert again.login()["type"] == "authenticated"


def test_a_local_shell_given_redis_sees_and_clears_the_cluster_s_lockouts(cluster, redis_service, tmp_path,
                                                                          prefix):
    a, _ = cluster(2)
    wrong_logins(a.url, 20)
    config = tmp_path / "cluster.toml"
    config.write_text(CHEAP_TOML + f'\n[cluster]\nkey_prefix = "{prefix}"\n')
    env = cli_env(config, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    shell = ["--data-dir", str(tmp_path / "data"), "--redis", redis_service.url, "--format", "csv"]
    listed = run_cli([*shell, "-c", ".lockout list"], env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.decode().splitlines()[1].startswith("127.0.0.1,20,")
    cleared = run_cli([*shell, "-c", ".lockout clear 127.0.0.1"], env=env)
    assert cleared.stdout.decode().splitlines()[-1] == "Lockout cleared for 127.0.0.1."
    with Client(a.url) as c:
        assert c.login()["type"] == "authenticated"


def test_a_user_names_failures_are_counted_across_nodes_apart_from_addresses(cluster):
    a, b = cluster(2, **{"security.account_lockout_failures": 4})
    for i, node in enumerate((a, b, a, b)):               # four addresses, two nodes, one name
        with Client(node.url, source_address=(f"127.0.0.{10 + i}", 0)) as c:
            assert c.request(WRONG)["message"] == "Invalid credentials"
    for node, source in ((a, "127.0.0.20"), (b, "127.0.0.21")):     # slowed on every node, the right password too
        with Client(node.url, source_address=(source, 0)) as c:
            assert c.login()["message"].startswith(LOCKED)
            assert c.login("nobody", "wrong-password")["message"] == "Invalid credentials"   # only that name


def test_a_locked_user_name_is_listed_once_and_lifted_from_any_node_or_a_local_shell(cluster, redis_service,
                                                                                    tmp_path, prefix):
    a, b = cluster(2, **{"security.account_lockout_failures": 4})
    ghost = {"type": "login", "username": "ghost", "password": "wrong-password"}
    for i, node in enumerate((a, b, a, b)):
        with Client(node.url, source_address=(f"127.0.0.{10 + i}", 0)) as c:
            assert c.request(ghost)["message"] == "Invalid credentials"
    with logged_in(b.url, source_address=("127.0.0.2", 0)) as admin:
        rows = admin.execute(".lockout list")["rows"]
        assert [r[:2] for r in rows] == [[f"127.0.0.{10 + i}", "1"] for i in range(4)] + [["user:ghost", "4"]]
        assert rows[-1][2]
    config = tmp_path / "cluster.toml"
    config.write_text(CHEAP_TOML + f'\n[cluster]\nkey_prefix = "{prefix}"\n')
    shell = ["--data-dir", str(tmp_path / "data"), "--redis", redis_service.url, "--format", "csv"]
    env = cli_env(config, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    cleared = run_cli([*shell, "-c", ".lockout clear user:ghost"], env=env)
    assert cleared.stdout.decode().splitlines()[-1] == "Lockout cleared for user:ghost.", cleared.stderr
    with Client(a.url, source_address=("127.0.0.20", 0)) as c:
        assert c.request(ghost)["message"] == "Invalid credentials"         # counted afresh, not refused


def test_a_lockout_counted_in_redis_ends_when_its_time_is_up(cluster):
    clock = FakeClock()
    a, b = cluster(2, clock=clock)
    wrong_logins(a.url, 20)
    clock.advance(59)
    with Client(b.url) as c:
        assert c.login()["message"] == f"{LOCKED}. Try again in 1s"
    clock.advance(1)
    with Client(b.url) as c:
        assert c.login()["type"] == "authenticated"


# --- rate limits -------------------------------------------------------------------------------

def test_a_key_s_rate_is_one_budget_across_nodes(cluster):
    a, b = cluster(2)
    with logged_in(a.url) as admin:
        key = admin.execute(".apikey create scraper rate=4/h")["rows"][0][0]
    with Client(a.url) as on_a, Client(b.url) as on_b:
        assert on_a.authenticate(key)["type"] == "authenticated"
        assert on_b.authenticate(key)["type"] == "authenticated"
        answers = [(on_a if i % 2 else on_b).execute(".whoami")["type"] for i in range(4)]
        assert answers == ["result"] * 4
        for node in (on_a, on_b):
            refused = node.execute(".whoami")
            assert refused["type"] == "error" and refused["message"].startswith("Rate limit exceeded")


# --- sessions ----------------------------------------------------------------------------------

def test_session_list_on_one_node_shows_every_node_s_sessions_with_their_node(cluster):
    a, b = cluster(2)
    with logged_in(a.url) as admin, logged_in(b.url, source_address=("127.0.0.5", 0)):
        sid_b = on_b_session(b)

        def listed():
            rows = admin.execute(".session list")["rows"]
            return {r[0]: r for r in rows} if sid_b in {r[0] for r in rows} else None
        rows = eventually(listed, what="B's session in A's list")
        assert rows[sid_b][3] == "127.0.0.5" and rows[sid_b][6] == f"127.0.0.1:{b.port}"
        assert {r[6] for r in rows.values()} == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}


def on_b_session(node) -> str:
    """The id of the one session a node (a thread of this process) holds."""
    [session] = node.server.sessions.sessions()
    return session.id


def test_session_kill_on_one_node_ends_the_session_on_another(cluster):
    a, b = cluster(2)
    with logged_in(a.url) as admin, logged_in(b.url, source_address=("127.0.0.6", 0)) as victim:
        sid = on_b_session(b)
        eventually(lambda: sid in {r[0] for r in admin.execute(".session list")["rows"]}, what="B's session listed")
        assert admin.execute(f".session kill {sid}")["rows"] == [[f"Session '{sid}' closed."]]
        assert victim.recv(timeout=5) == {"type": "error", "message": "Session ended: killed by an administrator"}
        assert victim.closed()[0] == 1008
        eventually(lambda: sid not in {r[0] for r in admin.execute(".session list")["rows"]},
                   what="the killed session leaving the list")
        assert admin.execute(f".session kill {sid}")["message"] == f"Session '{sid}' not found"


def test_a_killed_node_s_sessions_leave_the_directory_within_its_expiry(cluster, redis_service, prefix, tmp_path,
                                                                       config_file):
    [a] = cluster(1)
    config = tmp_path / "node.toml"
    config.write_text(CHEAP_TOML + f'\n[cluster]\nkey_prefix = "{prefix}"\nsession_ttl_secs = 3\n')
    node = ServerProcess(["--data-dir", str(tmp_path / "data"), "--redis", redis_service.url],
                         cli_env(config))
    try:
        other = logged_in(node.url, source_address=("127.0.0.7", 0))
        with logged_in(a.url) as admin:
            def nodes():
                return {r[6] for r in admin.execute(".session list")["rows"]}
            eventually(lambda: f"127.0.0.1:{node.port}" in nodes(), what="the other node's session listed")
            node.kill()                 # SIGKILL: no goodbye; only the 3 s expiry takes them out
            eventually(lambda: f"127.0.0.1:{node.port}" not in nodes(), within=20, what="the dead node's sessions gone")
        other.ws.close_socket()
    finally:
        node.kill()


# --- faults ------------------------------------------------------------------------------------

def health(node) -> dict:
    status, _, body = http_get(node.port, "/health")
    assert status == 200
    return json.loads(body)


def degraded_metric(node, key: str) -> float:
    # From an address of its own: the tests lock 127.0.0.1 out.
    text = http_get(node.port, "/metrics", {"Authorization": f"Bearer {key}"}, source="127.0.0.9")[2]
    return float(next(line.split()[1] for line in text.splitlines()
                      if line.startswith("inputlayer_cluster_degraded ")))


def test_without_redis_health_says_local_counters(tmp_path, cheap_config):
    servers = Servers()
    try:
        node = servers.start(tmp_path / "data", with_values(cheap_config, {"server.port": 0}))
        assert health(node)["cluster"] == "local-counters" and health(node)["status"] == "healthy"
    finally:
        servers.stop_all()


def test_redis_stopped_the_node_counts_in_memory_and_says_so_then_returns(cluster, own_redis, caplog):
    [a] = cluster(1, redis_url=own_redis.url)
    with logged_in(a.url) as admin:
        key = admin.execute(".apikey create watcher")["rows"][0][0]
    assert (health(a)["status"], health(a)["cluster"]) == ("healthy", "redis")
    assert degraded_metric(a, key) == 0
    own_redis.stop()
    # Failures go on being counted, in the node's memory.
    assert wrong_logins(a.url, 20) == ["Invalid credentials"] * 20
    with Client(a.url) as c:
        assert c.login()["message"].startswith(LOCKED)
    state = health(a)
    assert state["status"] == "degraded" and state["cluster"].startswith("Redis unreachable")
    assert degraded_metric(a, key) == 1
    warned = [r for r in caplog.records if r.name == "inputlayer.cluster" and r.levelname == "WARNING"]
    assert len(warned) == 1 and f"127.0.0.1:{own_redis.port}" in warned[0].getMessage()
    own_redis.start()
    eventually(lambda: health(a)["cluster"] == "redis", what="the node back on Redis")
    assert health(a)["status"] == "healthy" and degraded_metric(a, key) == 0
    with Client(a.url) as c:                   # what it counted meanwhile still holds
        assert c.login()["message"].startswith(LOCKED)
    wrong_logins(a.url, 20, source_address=("127.0.0.3", 0))        # and counting is shared again
    with redis.Redis.from_url(own_redis.url) as r:
        assert any(b"127.0.0.3" in k for k in r.keys("*lockout*"))


# --- the counters themselves -------------------------------------------------------------------

def test_counts_are_atomic_under_concurrent_nodes(redis_service, prefix, cheap_config):
    """Two nodes' counters hammering one address and one key at once lose no count and give
    out no extra request: each count is one script run by Redis."""
    from concurrent.futures import ThreadPoolExecutor

    from backend.cluster import RedisLink, SharedLockout, SharedRateLimiter

    clock = FakeClock()
    links = [RedisLink(redis_service.url, prefix) for _ in range(2)]
    lockouts = [SharedLockout(cheap_config.security, clock, link) for link in links]
    limiters = [SharedRateLimiter(clock, link) for link in links]
    try:
        with ThreadPoolExecutor(16) as pool:
            locked = list(pool.map(lambda i: lockouts[i % 2].record_failure("198.51.100.4"), range(100)))
            allowed = list(pool.map(lambda i: limiters[i % 2].hit(7, 30, 3600)[0], range(100)))
        assert locked.count(True) == 100 - 19                 # from the 20th failure on
        assert lockouts[1].entries() == [("198.51.100.4", 100, clock() + 60)]
        assert allowed.count(True) == 30
        assert limiters[0].hit(7, 30, 3600) == (False, 0, 3600)
    finally:
        for link in links:
            link.close()


def test_redis_unreachable_counts_go_to_memory_with_one_warning(cheap_config, caplog):
    from rediskit import free_port

    from backend.cluster import RedisLink, SharedLockout, SharedRateLimiter

    clock = FakeClock()
    link = RedisLink(f"redis://127.0.0.1:{free_port()}/0", "x:", retry_secs=0)
    lockout, limiter = SharedLockout(cheap_config.security, clock, link), SharedRateLimiter(clock, link)
    try:
        assert [lockout.record_failure("203.0.113.9") for _ in range(20)][-2:] == [False, True]
        assert lockout.remaining("203.0.113.9") == 60 and lockout.entries()[0][:2] == ("203.0.113.9", 20)
        assert [limiter.hit(1, 2, 60)[0] for _ in range(3)] == [True, True, False]
        assert link.degraded.startswith("Redis unreachable")
        assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    finally:
        link.close()


# --- configuration -----------------------------------------------------------------------------

def test_redis_url_from_flag_environment_or_file_and_a_bad_one_refused_without_echoing_it(config_file):
    from backend.config import ConfigError, parse_config, resolve_redis_url

    config = parse_config('[cluster]\nredis_url = "redis://file:6379/0"\nsession_ttl_secs = 5\n', "c.toml")
    assert config.cluster.session_ttl_secs == 5
    env = {"INPUTLAYER_REDIS_URL": "redis://env:6379/0"}
    assert resolve_redis_url("redis://flag:6379/0", env, config) == "redis://flag:6379/0"
    assert resolve_redis_url(None, env, config) == "redis://env:6379/0"
    assert resolve_redis_url(None, {}, config) == "redis://file:6379/0"
    with pytest.raises(ConfigError, match="cluster.redis_url"):
        parse_config('[cluster]\nredis_url = "http://file/"\n', "c.toml")
    refused = run_cli(["--redis", "http://u:hunter2-secret@cache/0", "--port", "0"], env=cli_env(config_file),
                      program="backend")
    assert refused.returncode == 2 and b"hunter2-secret" not in refused.stderr + refused.stdout
    assert refused.stderr.decode().startswith("error: Redis URL: expected a redis://")
