"""The server as a whole: HTTP endpoints, lockout, addresses, TLS, start-up, shutdown, logs."""

from __future__ import annotations

import datetime
import http.client
import os
import re
import ssl
import sys
import threading
import time
import warnings

import pytest
from websockets.exceptions import InvalidStatus

from backend.bootstrap import bootstrap_banner
from backend.targets.remote import RemoteBackend
from backend.config import with_values
from backend.errors import TargetUnreachable
from backend.netaddr import client_address, networks as _networks
from backend.server.logins import GroupWriter
from backend.server.metrics import Metrics
from fakes import FakeClock
from serverkit import ADMIN_PASSWORD, Client, ServerProcess, Servers, logged_in, server_env


@pytest.fixture
def serve(tmp_path, cheap_config):
    servers = Servers()

    def start(clock=None, **values):
        values.setdefault("server.port", 0)
        config = with_values(cheap_config, values)
        return servers.start(tmp_path / "data", config, clock=clock)

    yield start
    servers.stop_all()


def http_get(port: int, path: str, headers: dict | None = None, source: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


# --- HTTP endpoints ----------------------------------------------------------------------------

def test_health_live_ready_and_404(serve):
    import json
    server = serve()
    status, headers, body = http_get(server.port, "/health")
    assert status == 200 and headers["Content-Type"] == "application/json"
    health = json.loads(body)
    assert health["status"] == "healthy" and health["version"] and isinstance(health["uptime_secs"], int)
    assert http_get(server.port, "/live")[0] == 200
    assert http_get(server.port, "/ready")[0] == 200
    assert http_get(server.port, "/nope")[0] == 404
    assert http_get(server.port, "/ws")[0] == 426          # a plain GET on the socket path


def test_metrics_needs_a_bearer_key(serve):
    server = serve()
    for headers in ({}, {"Authorization": "Bearer il_wrong"}, {"Authorization": "Basic YWRtaW46eA=="}):
        status, got, body = http_get(server.port, "/metrics", headers)
        assert (status, got.get("WWW-Authenticate"), body) == (401, "Bearer", "Invalid or missing API key\n")
    with logged_in(server.url) as admin:
        key = admin.execute(".apikey create scraper role=viewer")["rows"][0][0]
        admin.execute(".user list")
        admin.execute(".user drop nobody")
        status, headers, body = http_get(server.port, "/metrics", {"Authorization": f"Bearer {key}"})
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "inputlayer_connections 1" in body and "inputlayer_sessions 1" in body
    assert 'inputlayer_logins_total{method="password",outcome="ok"} 1' in body
    assert 'inputlayer_logins_total{method="bearer",outcome="failed"} 1' in body
    assert 'inputlayer_commands_total{command=".user list",outcome="ok"} 1' in body
    assert 'inputlayer_commands_total{command=".user drop",outcome="error"} 1' in body
    assert "# TYPE inputlayer_command_duration_seconds histogram" in body
    assert 'inputlayer_command_duration_seconds_bucket{le="+Inf"} 3' in body
    assert key not in body


def test_allowed_ips_refuse_before_the_upgrade(serve):
    server = serve(**{"server.allowed_ips": ("127.0.0.2/32",)})
    with pytest.raises(InvalidStatus) as refused:
        Client(server.url)
    assert refused.value.response.status_code == 403
    with logged_in(server.url, source_address=("127.0.0.2", 0)) as c:
        assert c.execute(".whoami")["type"] == "result"


def test_allowed_ips_over_ipv6_and_ipv4_mapped(serve):
    allowed = serve(**{"server.host": "::1", "server.allowed_ips": ("::1/128",)})
    with logged_in(f"ws://[::1]:{allowed.port}/ws") as v6:
        assert v6.execute(".whoami")["type"] == "result"
    elsewhere = serve(**{"server.host": "::1", "server.allowed_ips": ("2001:db8::/32", "127.0.0.1/32")})
    with pytest.raises(InvalidStatus) as refused:
        Client(f"ws://[::1]:{elsewhere.port}/ws")
    assert refused.value.response.status_code == 403
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; they match IPv4 ranges.
    from backend.netaddr import ip_in as _in, parse_ip as _ip
    assert _in(_ip("::ffff:127.0.0.3"), _networks(["127.0.0.3/32"]))
    assert not _in(_ip("::ffff:127.0.0.3"), _networks(["::1/128"]))


# --- addresses and lockout ---------------------------------------------------------------------

def test_client_address_believes_only_trusted_proxies():
    trusted = _networks(["10.0.0.0/8", "::1/128"])
    assert client_address("203.0.113.9", ["1.2.3.4"], trusted) == "203.0.113.9"
    assert client_address("10.0.0.2", ["1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("10.0.0.2", ["6.6.6.6, 1.2.3.4, 10.0.0.7"], trusted) == "1.2.3.4"
    assert client_address("10.0.0.2", ["6.6.6.6", "1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("10.0.0.2", [], trusted) == "10.0.0.2"
    assert client_address("10.0.0.2", ["not-an-ip"], trusted) == "10.0.0.2"
    assert client_address("::ffff:10.0.0.2", ["1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("::1", ["2001:db8::1"], trusted) == "2001:db8::1"


def fail_logins(url: str, count: int, source: str = "127.0.0.1", headers=None) -> list[str]:
    """`count` wrong passwords, on as many connections as the pre-login rate (10 a second) needs."""
    messages = []
    while len(messages) < count:
        with Client(url, source_address=(source, 0), additional_headers=headers) as c:
            messages += [c.request({"type": "login", "username": "admin", "password": "wrong-password"})["message"]
                         for _ in range(min(10, count - len(messages)))]
    return messages


def test_lockout_after_20_failures_from_one_address(serve):
    clock = FakeClock()
    server = serve(clock=clock)
    hasher = server.engine.hasher
    assert fail_logins(server.url, 20) == ["Invalid credentials"] * 20
    before = hasher.verifications
    with Client(server.url) as c:
        assert c.login() == {"type": "auth_error", "message": "Too many failed attempts. Try again in 60s"}
        assert c.authenticate("il_x")["message"].startswith("Too many failed attempts")
    assert hasher.verifications == before                     # no argon2 work for a locked address
    with logged_in(server.url, source_address=("127.0.0.2", 0)) as other:   # other addresses unaffected
        rows = other.execute(".lockout list")["rows"]
        assert rows[0][0] == "127.0.0.1" and rows[0][1] == "20" and rows[0][2]
    clock.advance(30)
    with Client(server.url) as c:
        assert c.login()["message"] == "Too many failed attempts. Try again in 30s"
    clock.advance(30)
    with Client(server.url) as c:
        assert c.login()["type"] == "authenticated"


def test_forwarded_for_is_ignored_from_an_untrusted_peer(serve):
    server = serve()
    fail_logins(server.url, 20, headers={"X-Forwarded-For": "198.51.100.7"})
    with Client(server.url, additional_headers={"X-Forwarded-For": "198.51.100.8"}) as c:
        assert c.login()["message"].startswith("Too many failed attempts")


def test_forwarded_for_from_a_trusted_proxy_names_the_client(serve):
    server = serve(**{"server.trusted_proxies": ("127.0.0.1/32",)})
    fail_logins(server.url, 20, headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.7"})
    with Client(server.url, additional_headers={"X-Forwarded-For": "198.51.100.7"}) as c:
        assert c.login()["message"].startswith("Too many failed attempts")
    with Client(server.url, additional_headers={"X-Forwarded-For": "198.51.100.7, 198.51.100.9"}) as c:
        assert c.login()["type"] == "authenticated"
        assert c.execute(".session list")["rows"][0][3] == "198.51.100.9"


def test_failed_bearer_tokens_count_toward_the_lockout(serve):
    server = serve()
    for _ in range(20):
        assert http_get(server.port, "/metrics", {"Authorization": "Bearer il_wrong"}, source="127.0.0.3")[0] == 401
    status, headers, body = http_get(server.port, "/metrics", {"Authorization": "Bearer il_x"}, source="127.0.0.3")
    assert status == 429 and headers["Retry-After"] == "60"
    with Client(server.url, source_address=("127.0.0.3", 0)) as c:
        assert c.login()["message"] == "Too many failed attempts. Try again in 60s"


# --- the program -------------------------------------------------------------------------------

def test_port_0_bootstrap_banner_and_graceful_sigterm(tmp_path, config_file):
    config_file.write_text(config_file.read_text() + '\n[server]\nhost = "127.0.0.2"\n')
    data = tmp_path / "srv"
    server = ServerProcess(["--data-dir", str(data)], server_env(config_file))
    try:
        assert server.url.startswith("ws://127.0.0.2:")             # config file host
        client = Client(server.url)
        # The banner is on stderr, before anything else: find the password, log in with it.
        first = [server.proc.stderr.readline() for _ in range(5)]
        banner = "".join(first)
        generated = banner.split("Generated admin password: ")[1].split("\n")[0]
        assert banner == bootstrap_banner(generated)
        assert client.login("admin", generated)["type"] == "authenticated"
        code, out, err = server.stop()
        assert client.closed() == (1001, "Server shutting down")
        assert code == 0 and "Traceback" not in err
    finally:
        server.kill()
    # Later runs never print or change it; a flag beats the config file.
    again = ServerProcess(["--data-dir", str(data), "--host", "127.0.0.3"], server_env(config_file))
    try:
        assert again.url.startswith("ws://127.0.0.3:")
        assert logged_in(again.url, "admin", generated).execute(".whoami")["type"] == "result"
    finally:
        code, out, err = again.stop()
    assert code == 0 and "Generated admin password" not in err


def test_non_loopback_bind_without_tls_warns(tmp_path, config_file):
    server = ServerProcess(["--data-dir", str(tmp_path / "d"), "--host", "0.0.0.0"],
                           server_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    code, out, err = server.stop()
    assert code == 0 and "without TLS" in err


def test_bad_flags_and_unusable_port_exit_2(tmp_path, config_file):
    from conftest import run_cli
    env = server_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    proc = run_cli(["--data-dir", str(tmp_path / "d"), "--tls-cert", "/nonexistent.pem"], env=env, program="backend")
    assert proc.returncode == 2 and b"--tls-key" in proc.stderr
    server = ServerProcess(["--data-dir", str(tmp_path / "d")], env)
    try:
        proc = run_cli(["--data-dir", str(tmp_path / "d2"), "--port", str(server.port)], env=env, program="backend")
        assert proc.returncode == 2 and b"cannot listen" in proc.stderr and b"Traceback" not in proc.stderr
    finally:
        server.stop()


def test_debug_logs_hold_no_secret(tmp_path, config_file):
    server = ServerProcess(["--data-dir", str(tmp_path / "d"), "--log-level", "debug"],
                           server_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    secrets = [ADMIN_PASSWORD, "bobs-secret-pw", "bobs-next-pw", "wrong-guess-pw"]
    try:
        with logged_in(server.url) as admin:
            admin.execute(".user create bob bobs-secret-pw editor")
            admin.execute(".user password bob bobs-next-pw")
            key = admin.execute(".apikey create ops")["rows"][0][0]
            rotated = admin.execute(".apikey rotate ops")["rows"][0][0]
            admin.execute(".user create bad wrong-guess-pw nonsense-role")
            token = admin.execute(".token issue ttl=5m")["rows"][0][0]
            secrets += [key, rotated, token]
        with Client(server.url) as c:
            c.request({"type": "login", "username": "bob", "password": "wrong-guess-pw"})
            assert c.authenticate(rotated)["type"] == "authenticated"
            c.execute(".whoami")
        with Client(server.url) as t:
            assert t.authenticate(token)["type"] == "authenticated"
        http_get(server.port, "/metrics", {"Authorization": f"Bearer {key}"})
        http_get(server.port, "/metrics", {"Authorization": "Bearer wrong-guess-pw"})
    finally:
        code, out, err = server.stop()
    assert code == 0
    assert " DEBUG " in err and "authenticated: user=admin" in err
    for secret in secrets:
        assert secret not in err and secret not in out
    assert all(line.count(" inputlayer") <= 1 for line in err.splitlines())   # one line an event


# --- TLS ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1 / localhost, as PEM files and a PKCS#12."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID
    import ipaddress

    root = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": root / "ca.pem", "cert": root / "cert.pem", "key": root / "key.pem", "p12": root / "server.p12"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    files["p12"].write_bytes(pkcs12.serialize_key_and_certificates(
        b"server", key, cert, [ca], serialization.BestAvailableEncryption(b"keystore-pw")))
    return files


def check_tls_server(server: ServerProcess, ca_file) -> None:
    assert server.url.startswith("wss://127.0.0.1:")
    backend = RemoteBackend(server.url, ca_file=str(ca_file))
    backend.login("admin", ADMIN_PASSWORD)
    assert backend.execute(".whoami").rows[0][0] == "admin"
    backend.close()
    with pytest.raises(TargetUnreachable, match="certificate"):
        RemoteBackend(server.url)                             # system trust store: not trusted
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(ca_file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        Client(server.url, ssl=old)


def test_tls_from_pem_files(tmp_path, config_file, pki):
    server = ServerProcess(["--data-dir", str(tmp_path / "d"), "--tls-cert", str(pki["cert"]),
                            "--tls-key", str(pki["key"])],
                           server_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    try:
        check_tls_server(server, pki["ca"])
    finally:
        assert server.stop()[0] == 0


def test_tls_from_a_pkcs12_keystore(tmp_path, config_file, pki):
    env = server_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD,
                     INPUTLAYER_TLS_KEYSTORE_PASSWORD="keystore-pw")
    server = ServerProcess(["--data-dir", str(tmp_path / "d"), "--tls-keystore", str(pki["p12"])], env)
    try:
        check_tls_server(server, pki["ca"])
    finally:
        assert server.stop()[0] == 0
    from conftest import run_cli
    env["INPUTLAYER_TLS_KEYSTORE_PASSWORD"] = "wrong"
    proc = run_cli(["--data-dir", str(tmp_path / "d"), "--tls-keystore", str(pki["p12"])], env=env, program="backend")
    assert proc.returncode == 2 and b"wrong password" in proc.stderr


def test_no_compression_is_negotiated(serve):
    """Compressed frames that mix secrets with client-chosen text leak through their length."""
    server = serve()
    with Client(server.url) as client:          # the websockets client offers permessage-deflate
        assert client.ws.protocol.extensions == []


def test_latency_histogram_counts_each_command_in_every_bucket_it_fits():
    metrics = Metrics()
    for seconds in (0.0005, 0.001, 0.003, 0.003, 20.0):
        metrics.command(".whoami", "ok", seconds)
    text = metrics.render(connections=0, sessions=0, locked=0, uptime=1)
    buckets = dict(re.findall(r'_bucket\{le="([^"]+)"\} (\d+)', text))
    assert (buckets["0.001"], buckets["0.0025"], buckets["0.005"], buckets["10.0"], buckets["+Inf"]) == \
        ("2", "2", "4", "4", "5")


def test_group_writer_writes_what_arrives_meanwhile_in_one_go_and_tells_each_waiter():
    import asyncio

    async def scenario():
        batches, gate = [], asyncio.Event()

        async def write_many(items):
            batches.append(items)
            if len(batches) == 1:
                await gate.wait()            # the first write is in flight while more arrive
            if "bad" in items:
                raise OSError("disk full")

        writer = GroupWriter(write_many)
        first = asyncio.ensure_future(writer.write("a"))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(writer.write(item)) for item in ("b", "bad", "c")]
        await asyncio.sleep(0)
        gate.set()
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        assert batches == [["a"], ["b", "bad", "c"]]
        assert outcomes[0] is None and all(isinstance(o, OSError) for o in outcomes[1:])
        await writer.write("d")                # a later write starts a new group
        assert batches[-1] == ["d"]

        started = asyncio.Event()

        async def never_done(items):
            started.set()
            await asyncio.Event().wait()

        stuck = GroupWriter(never_done)
        waiter = asyncio.ensure_future(stuck.write("e"))
        await started.wait()
        stuck._drainer.cancel()                # as the loop's teardown does
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter, 5)  # told, not left waiting forever

    asyncio.run(scenario())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_password_hashing_runs_below_the_sessions(serve):
    # A storm of password logins must slow the logins, not the event loop serving sessions.
    server = serve().server

    def niceness():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    assert server._auth_pool.submit(niceness).result() == min(19, niceness() + 10)
    assert server._exec_pool.submit(niceness).result() == niceness()
