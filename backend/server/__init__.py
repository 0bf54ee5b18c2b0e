"""`inputlayer-server`: the engine served over WebSocket (protocol.md), with HTTP endpoints on
the same port.

Built on the `websockets` library's asyncio API. The event loop only moves messages: every engine
call blocks (SQLite, argon2) and runs in a thread pool (pools). Logins and API-key checks run in a
pool of their own, bounded to the number of cores, so a storm of wrong passwords queues there and
never stalls the commands of clients that are already in (logins).

Nothing secret is logged: a log line names the command (never the line), the user and the
address, never a password, key or program text. The `websockets` library's own debug logging,
which prints frames, is kept at INFO or above whatever the level asked for.

app: the Server and its life cycle; connection: one WebSocket driven by backend/protocol/;
logins; sessions: the live-session directory; http; metrics; tls; programs; pools.
"""

from .app import Server, ServerOptions
from .tls import tls_context

__all__ = ["Server", "ServerOptions", "tls_context"]
