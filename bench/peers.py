"""Throw-away PostgreSQL and Redis instances on 127.0.0.1, when their binaries are installed.
Nothing is installed here: a missing peer is reported as `skipped (not installed)`."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .common import free_port

SKIPPED = "skipped (not installed)"


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return found[0] if found else shutil.which(name)


class _ThrowAway:
    """A server process with a temporary directory, both gone after stop()."""
    stop_grace = 10.0       # seconds between SIGTERM and SIGKILL

    def __init__(self, base: str | None):
        self.base = base
        self.proc: subprocess.Popen | None = None
        self.dir: Path | None = None
        self.port = 0
        self.error = ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class Postgres(_ThrowAway):
    """initdb in a temp dir, a free port, the unix socket in the temp dir, trust auth on
    127.0.0.1; default durability (fsync=on, synchronous_commit=on); room for W7's two nodes'
    pools (max_connections=100). Run as the `postgres`
    user when this process is root (postgres refuses to run as root)."""

    stop_grace = 20.0       # a smart shutdown waits for clients

    def __init__(self, base: str | None = None):
        super().__init__(base)
        self.initdb = _pg_bin("initdb")
        self.postgres = _pg_bin("postgres")
        self.psql_bin = shutil.which("psql") or _pg_bin("psql")

    @property
    def installed(self) -> bool:
        return bool(self.initdb and self.postgres and self.psql_bin)

    def version(self) -> str:
        out = subprocess.run([self.postgres, "--version"], capture_output=True, text=True).stdout.strip()
        return out

    def _user(self) -> dict:
        if os.geteuid() != 0:
            return {}
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root and there is no 'postgres' user to run the server as")
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def start(self) -> bool:
        if not self.installed:
            return False
        try:
            as_user = self._user()
            self.dir = Path(tempfile.mkdtemp(prefix="ilbench-pg-", dir=self.base))
            if as_user:
                os.chown(self.dir, as_user["user"], as_user["group"])
            data, sock = self.dir / "data", self.dir / "sock"
            subprocess.run([self.initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                            "--locale=C", "--no-instructions"], check=True, capture_output=True, cwd=self.dir,
                           **as_user)
            subprocess.run(["mkdir", "-p", str(sock)], check=True, **as_user)
            self.port = free_port()
            self.log = open(self.dir / "server.log", "wb")
            self.proc = subprocess.Popen(
                [self.postgres, "-D", str(data), "-p", str(self.port), "-k", str(sock),
                 "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100"],
                stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir, **as_user)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("postgres exited: " + (self.dir / "server.log").read_text()[-500:])
                if subprocess.run(self.psql("-c", "select 1"), capture_output=True).returncode == 0:
                    return True
                time.sleep(0.1)
            raise RuntimeError("postgres did not become ready in 30 s")
        except Exception as exc:           # reported, never faked
            self.error = str(exc)
            self.stop()
            return False

    def psql(self, *args: str, db: str = "postgres") -> list[str]:
        return [self.psql_bin, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                "-X", "-q", "-v", "ON_ERROR_STOP=1", *args]


class Redis(_ThrowAway):
    """redis-server on a free 127.0.0.1 port with no persistence (--save '' --appendonly no)."""

    def __init__(self, base: str | None = None):
        super().__init__(base)
        self.server = shutil.which("redis-server")
        self.cli = shutil.which("redis-cli")

    @property
    def installed(self) -> bool:
        return bool(self.server and self.cli)

    def version(self) -> str:
        return subprocess.run([self.server, "--version"], capture_output=True, text=True).stdout.strip()

    def start(self) -> bool:
        if not self.installed:
            return False
        try:
            self.dir = Path(tempfile.mkdtemp(prefix="ilbench-redis-", dir=self.base))
            self.port = free_port()
            self.proc = subprocess.Popen(
                [self.server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.dir), "--daemonize", "no", "--logfile", str(self.dir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("redis-server exited")
                out = subprocess.run(self.redis_cli("ping"), capture_output=True, text=True)
                if out.stdout.strip() == "PONG":
                    return True
                time.sleep(0.05)
            raise RuntimeError("redis-server did not answer in 15 s")
        except Exception as exc:
            self.error = str(exc)
            self.stop()
            return False

    def redis_cli(self, *args: str) -> list[str]:
        return [self.cli, "-h", "127.0.0.1", "-p", str(self.port), *args]


class Peers:
    """Started lazily, once per bench run, and stopped at the end."""

    def __init__(self, base: str | None, enabled: bool = True):
        self.base = base
        self.enabled = enabled
        self._started: dict[str, Postgres | Redis] = {}      # by name, once asked for

    def postgres(self) -> Postgres | None:
        return self._peer("postgres", Postgres)

    def redis(self) -> Redis | None:
        return self._peer("redis", Redis)

    def _peer(self, name: str, kind):
        if not self.enabled:
            return None
        if name not in self._started:
            self._started[name] = kind(self.base)
            self._started[name].start()
        peer = self._started[name]
        return peer if peer.proc is not None else None

    def why_missing(self, which: str) -> str:
        if not self.enabled:
            return "skipped (--no-peers)"
        peer = self._started.get(which)
        if peer is None or not peer.installed:
            return SKIPPED
        return f"skipped (failed to start: {peer.error[:120]})"

    def versions(self) -> dict:
        return {name: peer.version() for name, peer in self._started.items() if peer.installed}

    def stop(self) -> None:
        for peer in self._started.values():
            peer.stop()
