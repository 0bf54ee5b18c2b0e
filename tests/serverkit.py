"""Helpers for server tests: a real server in a thread of this process (for access to its engine
and fake clock), or in a subprocess (as an administrator runs it), plus a small sync client."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager

from websockets.sync.client import connect

from backend.config import Config, with_values
from backend.server import Server, ServerOptions
from backend.store import SQLiteStore
from backend.targets.remote import LEGACY

from conftest import ADMIN_PASSWORD, ROOT, cli_env as server_env   # noqa: F401  (re-exported for server tests)


class ServerThread:
    """A Server on 127.0.0.1, port 0, over a bootstrapped store, running on its own event loop
    in a thread."""

    def __init__(self, store: Store, config: Config, *, clock=None, options: ServerOptions | None = None,
                 ssl_context=None):
        kwargs = {"clock": clock} if clock else {}
        self.server = Server(store, config, options=options, ssl_context=ssl_context, **kwargs)
        self.engine = self.server.engine
        self.engine.bootstrap(ADMIN_PASSWORD)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("server did not start")
        if self._error:
            raise self._error

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:   # reported to the test thread
            self._error = exc
            self._ready.set()
            return
        self._stop = asyncio.Event()
        self._ready.set()
        self.loop.run_until_complete(self._stop.wait())
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, coro_fn, timeout: float = 10):
        """Run a coroutine function on the server's loop (to look at its state safely)."""
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)


class Servers:
    """The ServerThreads a test started; stop_all() stops them and closes their stores."""

    def __init__(self):
        self.started: list[ServerThread] = []

    def start(self, data_dir, config: Config, **kwargs) -> ServerThread:
        server = ServerThread(SQLiteStore(data_dir), config, **kwargs)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()
            server.server.store.close()


@contextmanager
def running_server(data_dir, config: Config, **values):
    """A bootstrapped store served on 127.0.0.1 (any free port) for the length of a `with`."""
    config = with_values(config, {"server.port": 0, **values})
    servers = Servers()
    try:
        yield servers.start(data_dir, config)
    finally:
        servers.stop_all()


class Client:
    """A sync protocol client: send dicts, receive dicts, with timeouts so a test never hangs."""

    def __init__(self, url: str, **kwargs):
        kwargs.setdefault("open_timeout", 10)
        self.ws = connect(url, **LEGACY, **kwargs)

    def send(self, message) -> None:
        self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    def recv(self, timeout: float = 10) -> dict:
        return json.loads(self.ws.recv(timeout))

    def request(self, message, timeout: float = 10) -> dict:
        self.send(message)
        return self.recv(timeout)

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> dict:
        return self.request({"type": "login", "username": username, "password": password})

    def authenticate(self, key: str) -> dict:
        return self.request({"type": "authenticate", "api_key": key})

    def execute(self, program: str, timeout: float = 10) -> dict:
        return self.request({"type": "execute", "program": program}, timeout)

    def closed(self, timeout: float = 5):
        """Wait for the server to close; return (code, reason)."""
        from websockets.exceptions import ConnectionClosed
        try:
            while True:
                self.ws.recv(timeout)
        except ConnectionClosed:
            pass
        frame = self.ws.protocol.close_rcvd
        return (frame.code, frame.reason) if frame else (None, None)

    def close(self) -> None:
        self.ws.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def logged_in(url: str, username: str = "admin", password: str = ADMIN_PASSWORD, **kwargs) -> Client:
    client = Client(url, **kwargs)
    reply = client.login(username, password)
    assert reply["type"] == "authenticated", reply
    return client


class ServerProcess:
    """`python -m backend --port 0 ...` as a user runs it; reads the `listening on` line."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "backend", "--port", "0", *args], env=env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self, timeout: float = 30) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
