"""The live sessions of this server: what the engine's `.session list/kill` and `.status` see
(its SessionDirectory), and what the store watcher re-checks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..engine import ListedSession, Session

if TYPE_CHECKING:
    from .connection import Connection


class Mirror(Protocol):
    """Told of every session that starts or ends here, on the event loop (the cluster's
    directory in Redis); must not block."""
    def added(self, session: ListedSession) -> None: ...
    def removed(self, session_id: str) -> None: ...


def listed(session: Session, node: str) -> ListedSession:
    return ListedSession(session.id, session.username, session.auth, session.address,
                         session.knowledge_graph or "", session.connected_at, node)


class LiveSessions:
    """Authenticated connections by session id. Called from engine threads; `end` hands the
    ending of a session to the event loop."""

    def __init__(self, end: Callable[[Connection, str], None], node: Callable[[], str]):
        self._end = end
        self.node = node
        self.mirror: Mirror | None = None
        self._lock = threading.Lock()
        self._connections: dict[str, Connection] = {}

    def add(self, connection: Connection) -> None:
        assert connection.session is not None
        with self._lock:
            self._connections[connection.session.id] = connection
        if self.mirror is not None:
            self.mirror.added(listed(connection.session, self.node()))

    def remove(self, connection: Connection) -> None:
        if connection.session is None:
            return
        with self._lock:
            removed = self._connections.get(connection.session.id) is connection
            if removed:
                del self._connections[connection.session.id]
        if removed and self.mirror is not None:
            self.mirror.removed(connection.session.id)

    def connections(self) -> list[Connection]:
        with self._lock:
            return list(self._connections.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._connections)

    # SessionDirectory
    def sessions(self) -> list[ListedSession]:
        node = self.node()
        return [listed(c.session, node) for c in self.connections() if c.session is not None]

    def kill(self, session_id: str, reason: str) -> bool:
        with self._lock:
            connection = self._connections.get(session_id)
        if connection is None:
            return False
        self._end(connection, reason)
        return True
