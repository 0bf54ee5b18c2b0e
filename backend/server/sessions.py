"""The live sessions of this server: what the engine's `.session list/kill` and `.status` see
(its SessionDirectory), and what the store watcher re-checks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..engine import Session

if TYPE_CHECKING:
    from .connection import Connection


class LiveSessions:
    """Authenticated connections by session id. Called from engine threads; `end` hands the
    ending of a session to the event loop."""

    def __init__(self, end: Callable[[Connection, str], None]):
        self._end = end
        self._lock = threading.Lock()
        self._connections: dict[str, Connection] = {}

    def add(self, connection: Connection) -> None:
        assert connection.session is not None
        with self._lock:
            self._connections[connection.session.id] = connection

    def remove(self, connection: Connection) -> None:
        if connection.session is not None:
            with self._lock:
                if self._connections.get(connection.session.id) is connection:
                    del self._connections[connection.session.id]

    def connections(self) -> list[Connection]:
        with self._lock:
            return list(self._connections.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._connections)

    # SessionDirectory
    def sessions(self) -> list[Session]:
        return [c.session for c in self.connections() if c.session is not None]

    def kill(self, session_id: str, reason: str) -> bool:
        with self._lock:
            connection = self._connections.get(session_id)
        if connection is None:
            return False
        self._end(connection, reason)
        return True
