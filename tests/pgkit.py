"""A throw-away PostgreSQL server for the tests: one per test session, on 127.0.0.1 and a free
port, in a temporary directory, stopped at the end (the Redis of the cluster tests: rediskit).

initdb and postgres refuse to run as root (CI and the development machines run as root), so
there they run as the unprivileged `postgres` user of the Debian package, in a directory it owns.
A missing binary skips the tests that need it, with how to install it; in CI it fails them.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

SUPERUSER = "pgadmin"
PORT_ATTEMPTS = 3               # a free port may be taken between finding it and binding it
INSTALL_HINT = {"postgresql": "apt-get install postgresql"}


def missing(what: str, detail: str) -> None:
    """Skip locally, fail in CI: CI installs both servers, so a missing one there is a bug."""
    message = f"{what} not found ({detail}): install it with `{INSTALL_HINT[what]}`"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name),
                        reverse=True)
    for directory in candidates:
        if Path(directory, "initdb").exists() and Path(directory, "postgres").exists():
            return Path(directory)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresServer:
    """initdb + pg_ctl in a temporary directory; a password-protected superuser over TCP."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="il-pg-"))
        self.password = secrets.token_urlsafe(16)
        self.port = free_port()
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self._as_user, *args], check=False, capture_output=True, text=True, timeout=120)
        if proc.returncode:
            raise RuntimeError(f"{args[0]} failed: {proc.stdout}{proc.stderr}"
                               f"{self._log_tail()}")

    def _log_tail(self) -> str:
        log = self.root / "log"
        return log.read_text()[-2000:] if log.exists() else ""

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        shutil.chown(pwfile, *self._owner())
        self._run(str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-U", SUPERUSER,
                  "--pwfile", str(pwfile), "--auth-host=scram-sha-256", "--auth-local=trust",
                  "-E", "UTF8", "--no-instructions")
        pwfile.unlink()
        for attempt in range(PORT_ATTEMPTS):
            try:
                self.resume()
                return
            except RuntimeError as exc:
                if attempt == PORT_ATTEMPTS - 1 or "already in use" not in str(exc):
                    raise
                self.port = free_port()      # another program took the free port meanwhile

    def resume(self) -> None:
        """Start the server on its data directory and port (again, after halt())."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=on "
                   "-c synchronous_commit=on -c max_connections=300 -c shared_buffers=32MB")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "log"),
                  "-w", "-t", "60", "-o", options, "start")

    def halt(self) -> None:
        """Stop the server as a crash would (immediate mode: no checkpoint), keeping its data."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")

    def _owner(self) -> tuple[str, str] | tuple[int, int]:
        stat = self.root.stat()
        return stat.st_uid, stat.st_gid

    def stop(self) -> None:
        try:
            self.halt()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres", *, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/{dbname}"

    def admin_sql(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """A new empty database, named for this server's life: cheaper than a server per test."""
        name = f"t{next(self._names)}_{secrets.token_hex(3)}"
        self.admin_sql(f"CREATE DATABASE {name} TEMPLATE template0")
        return name

    def drop_database(self, name: str) -> None:
        self.admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def pg_dump(self, dbname: str) -> bytes:
        dump = self.bindir / "pg_dump"
        proc = subprocess.run([str(dump if dump.exists() else "pg_dump"), "--no-owner", self.url(dbname)],
                              check=False, capture_output=True, timeout=60)
        if proc.returncode:
            raise RuntimeError(proc.stderr.decode())
        # pg_dump marks its output with a random \restrict key: not part of what is stored.
        marks = (b"\\restrict", b"\\unrestrict")
        return b"\n".join(line for line in proc.stdout.split(b"\n") if not line.startswith(marks))


def start_postgres() -> PostgresServer:
    bindir = postgres_bindir()
    if bindir is None:
        missing("postgresql", "no initdb in /usr/lib/postgresql/*/bin or on PATH")
    assert bindir is not None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing("postgresql", "no `postgres` user to run it as, which the package creates")
    server = PostgresServer(bindir)
    try:
        server.start()
    except BaseException:
        shutil.rmtree(server.root, ignore_errors=True)
        raise
    return server

