"""A throw-away Redis for the cluster tests (scaleout.md, Tests): `redis-server` on 127.0.0.1 and a
free port, no persistence, stopped at the end. A missing binary skips the tests with the command
that installs it, except in CI (CI=true), where it fails: CI must run them for real."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

INSTALL = "apt-get install redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisProcess:
    """One redis-server; stop() and start() again keep its port, as a restarted Redis would."""

    def __init__(self, binary: str):
        self.binary = binary
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:        # a child process: poll until it answers
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.proc.stdout.read().decode()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not answer within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = f"redis-server is not installed ({INSTALL})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": CI must run the Redis tests")
        pytest.skip(message)
    return binary


def started_redis() -> RedisProcess:
    redis = RedisProcess(redis_binary())
    redis.start()
    return redis


@pytest.fixture(scope="session")
def redis_service():
    """One Redis for the whole test session; tests keep apart through their own key prefix."""
    redis = started_redis()
    yield redis
    redis.stop()


@pytest.fixture
def own_redis():
    """A Redis of this test's own, which it may stop and start."""
    redis = started_redis()
    yield redis
    redis.stop()
