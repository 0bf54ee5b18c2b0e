"""Misbehaving clients never crash the server nor delay others; a password storm never stalls
API-key clients (argon2 runs in a bounded pool of its own)."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed

from serverkit import ADMIN_PASSWORD, Client, ServerProcess, logged_in, running_server, server_env


@pytest.fixture
def live(tmp_path, cheap_config):
    with running_server(tmp_path / "data", cheap_config, **{"server.max_message_bytes": 65536}) as server:
        yield server


def timed_whoami(client: Client) -> float:
    started = time.perf_counter()
    reply = client.execute(".whoami")
    assert reply["type"] == "result", reply
    return time.perf_counter() - started


def test_garbage_gets_the_right_close_codes_and_others_keep_working(live):
    good = logged_in(live.url)
    host, port = "127.0.0.1", live.port
    half_open = socket.create_connection((host, port))
    half_open.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")          # never finishes its request
    silent = Client(live.url)                                       # upgraded, never says a word

    cases = [("{bad json", 1008), (b"\x00\x01binary", 1008), (json.dumps({"type": "launch"}), 1008),
             ("x" * 70000, 1009)]
    for payload, code in cases:
        with Client(live.url) as c:
            c.send(payload)
            assert c.closed()[0] == code
        assert timed_whoami(good) < 1.0
    with logged_in(live.url) as c:                                  # after login: too big is still 1009
        c.send(json.dumps({"type": "execute", "program": "." + "y" * 70000}))
        assert c.closed()[0] == 1009
    # A peer that vanishes mid-command, and one that sends half a frame, harm nobody.
    with logged_in(live.url) as c:
        c.send({"type": "execute", "program": ".user list"})
        c.ws.socket.close()
    raw = socket.create_connection((host, port))
    raw.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert raw.recv(4096).startswith(b"HTTP/1.1 101")
    raw.sendall(b"\x81\xfe\x00\xff\x00\x00\x00\x00partial")          # a masked text frame, cut short
    assert timed_whoami(good) < 1.0
    assert good.execute(".session list")["row_count"] == 1
    for s in (half_open, raw):
        s.close()
    silent.close()
    good.close()


def test_500_idle_unauthenticated_connections_do_not_delay_others(live):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("not enough file descriptors for 500 connections")
    good = logged_in(live.url)
    baseline = sorted(timed_whoami(good) for _ in range(20))[-1]

    async def scenario() -> float:
        idle = await asyncio.gather(*(aconnect(live.url, open_timeout=30) for _ in range(500)))
        try:
            loop = asyncio.get_running_loop()
            worst = max([await loop.run_in_executor(None, timed_whoami, good) for _ in range(20)])
            assert all(ws.protocol.state.name == "OPEN" for ws in idle)
            return worst
        finally:
            await asyncio.gather(*(ws.close() for ws in idle))

    worst = asyncio.run(scenario())
    assert worst < max(20 * baseline, 0.5)
    good.close()


STORM = """
import asyncio, json, sys
from websockets.asyncio.client import connect

async def client(url, started):
    async with connect(url) as ws:
        msg = json.dumps({"type": "login", "username": "admin", "password": "wrong-password"})
        while True:
            await ws.send(msg)
            await ws.recv()
            started.set()

async def main(url):
    started = asyncio.Event()
    tasks = [asyncio.create_task(client(url, started)) for _ in range(20)]
    await started.wait()
    print("storming", flush=True)
    await asyncio.gather(*tasks)

asyncio.run(main(sys.argv[1]))
"""


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(len(ordered) * 0.99) - 1]


def test_a_wrong_password_storm_does_not_stall_api_key_clients(tmp_path, config_file):
    # Lockout off for this test (a huge threshold), so every storm attempt costs a verification.
    config_file.write_text(config_file.read_text() + "lockout_failures = 1000000\n")
    server = ServerProcess(["--data-dir", str(tmp_path / "d"), "--log-level", "warning"],
                           server_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    storm = None
    try:
        with logged_in(server.url) as admin:
            keys = [admin.execute(f".apikey create k{i}")["rows"][0][0] for i in range(5)]
        clients = []
        for key in keys:
            c = Client(server.url)
            assert c.authenticate(key)["type"] == "authenticated"
            clients.append(c)

        def measure() -> list[float]:      # 40 a client: under the 100 messages/s rate limit
            return [timed_whoami(c) for _ in range(40) for c in clients]

        quiet = measure()
        storm = subprocess.Popen([sys.executable, "-c", STORM, server.url], stdout=subprocess.PIPE, text=True)
        assert storm.stdout.readline().strip() == "storming"
        stormy = measure()
        assert storm.poll() is None                          # still storming while we measured
        ratio = p99(stormy) / max(p99(quiet), 0.005)   # floor: sub-ms timings are noise
        print(f"p99 ratio {ratio:.2f}: {p99(quiet) * 1000:.1f} ms quiet, {p99(stormy) * 1000:.1f} ms storm")
        assert ratio < 25, f"p99 {p99(quiet) * 1000:.1f} ms quiet vs {p99(stormy) * 1000:.1f} ms in the storm"
        for c in clients:
            c.close()
    finally:
        if storm is not None:
            storm.kill()
            storm.wait()
        code, _, err = server.stop()
    assert code == 0, err
