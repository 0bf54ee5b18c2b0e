"""The HTTP side of the port (protocol.md, HTTP endpoints): /health, /live, /ready, /metrics,
and the address check before a WebSocket opens."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from .. import __version__
from ..engine import RateLimited
from ..engine.limits import address_entries
from ..netaddr import ip_in, lockout_key, networks, parse_ip
from ..protocol import ErrorKind

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger("inputlayer.server")

WS_PATHS = frozenset({"/ws", "/v1/ws"})


class HttpEndpoints:
    def __init__(self, app: Server):
        self._app = app
        self._allowed = networks(app.cfg.allowed_ips)

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """websockets' hook before the handshake: None lets a WebSocket upgrade go on."""
        app = self._app
        path = urlsplit(request.path).path
        address = app.address(connection, request.headers.get_all("X-Forwarded-For"))
        if self._allowed and not ip_in(parse_ip(address), self._allowed):
            log.info("refused %s from %s: address not allowed", path, address)
            return connection.respond(HTTPStatus.FORBIDDEN, "Forbidden\n")
        if path in WS_PATHS:
            if app.stopping:
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Server shutting down\n")
            return None
        if path == "/live":
            return _json_response(connection, HTTPStatus.OK, {"status": "alive"})
        if path == "/health":
            ok = await self._store_readable()
            cluster, changes = app.cluster_state(), app.changes.state
            healthy = ok and cluster in ("redis", "local-counters") and changes in (None, "listening")
            body = {"status": "healthy" if healthy else "degraded", "version": __version__,
                    "uptime_secs": int(time.monotonic() - app.started), "cluster": cluster}
            if changes is not None:
                body["changes"] = changes
            # Redis unreachable (the node counts in its memory) or a deaf node (it reads the store
            # for every command): degraded, yet serving (200).
            return _json_response(connection, HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)
        if path == "/ready":
            ok = not app.stopping and await self._store_readable(need_users=True)
            return _json_response(connection, HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                                  {"status": "ready" if ok else "not ready"})
        if path == "/metrics":
            return await self._metrics(connection, request, address)
        return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")

    async def _store_readable(self, need_users: bool = False) -> bool:
        store = self._app.store

        def probe() -> bool:
            with store.read():
                count = store.user_count()
            return count > 0 or not need_users
        try:
            return await asyncio.wait_for(self._app.run(probe), 5)
        except Exception:  # noqa: BLE001 -- any failure to read is "degraded"; the reason is not the client's
            return False

    async def _metrics(self, connection: ServerConnection, request: Request, address: str) -> Response:
        app = self._app
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _unauthorized(connection)
        left = await app.lockout.aremaining(lockout_key(address))
        if left:
            app.metrics.login("bearer", "locked")
            response = connection.respond(HTTPStatus.TOO_MANY_REQUESTS,
                                          f"{ErrorKind.LOCKED_OUT.value}. Try again in {left}s\n")
            response.headers["Retry-After"] = str(left)
            return response
        session, _ = await app.logins.authenticate(address, "bearer", app.engine.authenticate, token,
                                                   source="http", address=address)
        if session is None:
            return _unauthorized(connection)
        try:
            limits = await app.run(app.engine.consume_rate, session)
        except RateLimited as exc:
            response = connection.respond(HTTPStatus.TOO_MANY_REQUESTS, exc.message + "\n")
            response.headers["Retry-After"] = str(exc.reset_in)
            _rate_headers(response, exc.limit, 0, exc.reset_in)
            return response
        entries = await app.run(address_entries, app.lockout)
        text = app.metrics.render(connections=len(app.connections), sessions=len(app.sessions),
                                  locked=sum(1 for _, _, until in entries if until),
                                  uptime=time.monotonic() - app.started, degraded=bool(app.link and app.link.degraded),
                                  listening=app.changes.listening)
        response = connection.respond(HTTPStatus.OK, text)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
        if limits:
            _rate_headers(response, *limits)
        return response


def _json_response(connection: ServerConnection, status: HTTPStatus, body: dict) -> Response:
    response = connection.respond(status, json.dumps(body) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


def _unauthorized(connection: ServerConnection) -> Response:
    response = connection.respond(HTTPStatus.UNAUTHORIZED, "Invalid or missing API key\n")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _rate_headers(response: Response, limit: int, remaining: int, reset_in: int) -> None:
    """The de-facto standard headers of a rate-limited API (a key's `rate=`)."""
    response.headers["X-RateLimit-Limit"] = str(limit)
    response.headers["X-RateLimit-Remaining"] = str(remaining)
    response.headers["X-RateLimit-Reset"] = str(reset_in)
