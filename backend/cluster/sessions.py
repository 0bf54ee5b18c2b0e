"""The cluster's live-session directory in Redis (scaleout.md, Shared state).

Each node keeps one hash, `<prefix>sessions:<node>` (session id -> what `.session list` shows),
with an expiry its heartbeat renews: a node that dies without a word (`kill -9`) leaves the
directory when that expiry passes. The heartbeat rewrites the whole hash each time, which also
repairs it after Redis restarts empty or after writes lost while it was away. A session on
another node is ended through that node's channel, `<prefix>kill:<node>` (pub/sub).

The engine calls `sessions()` and `kill()` from its worker threads (the synchronous client);
the writes, the heartbeat and the subscription run on the server's event loop (asyncio client).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from ..engine import ListedSession
from .link import RedisLink

if TYPE_CHECKING:
    from ..server.sessions import LiveSessions

log = logging.getLogger("inputlayer.cluster")

SYNC = ("sync",)


def _encode(session: ListedSession) -> str:
    return json.dumps({k: v for k, v in session._asdict().items() if k != "node"})


def _decode(raw: bytes, node: str) -> ListedSession | None:
    try:
        fields = json.loads(raw) | {"node": node}
        return ListedSession(**fields)
    except (ValueError, TypeError):
        return None                 # not ours: another program's key under our prefix


class SharedSessions:
    """A SessionDirectory over every node: this node's `LiveSessions` plus the others' in Redis."""

    def __init__(self, local: LiveSessions, link: RedisLink, ttl_secs: float):
        self.local = local
        self._link = link
        self._ttl_ms = int(ttl_secs * 1000)
        self._beat_secs = ttl_secs / 3
        self._queue: asyncio.Queue[tuple] | None = None
        local.mirror = self

    def _key(self, node: str) -> str:
        return self._link.key("sessions", node)

    def _channel(self, node: str) -> str:
        return self._link.key("kill", node)

    # --- SessionDirectory (engine threads) -------------------------------------------------

    def sessions(self) -> list[ListedSession]:
        return self.local.sessions() + self._link.call(self._others, list)

    def _others(self, r) -> list[ListedSession]:
        head, mine = self._key(""), self.local.node()
        out = []
        for key in r.scan_iter(match=head + "*", count=500):
            node = key.decode()[len(head):]
            if node == mine:
                continue
            out += [s for s in (_decode(raw, node) for raw in r.hvals(key)) if s is not None]
        return out

    def kill(self, session_id: str, reason: str) -> bool:
        if self.local.kill(session_id, reason):
            return True
        return self._link.call(lambda r: self._kill_elsewhere(r, session_id, reason), lambda: False)

    def _kill_elsewhere(self, r, session_id: str, reason: str) -> bool:
        head = self._key("")
        for key in r.scan_iter(match=head + "*", count=500):
            if r.hexists(key, session_id):
                node = key.decode()[len(head):]
                message = json.dumps({"id": session_id, "reason": reason})
                return int(r.publish(self._channel(node), message)) > 0   # 0: its node is gone
        return False

    # --- Mirror (event loop) ---------------------------------------------------------------

    def added(self, session: ListedSession) -> None:
        if self._queue is not None:
            self._queue.put_nowait(("add", session.id, _encode(session)))

    def removed(self, session_id: str) -> None:
        if self._queue is not None:
            self._queue.put_nowait(("del", session_id))

    # --- the node's tasks ------------------------------------------------------------------

    async def run(self, end: Callable[[str, str], bool]) -> None:
        """Write, beat and listen until cancelled; `end(session_id, reason)` ends a session of
        this node that another node killed."""
        self._queue = asyncio.Queue()
        self._queue.put_nowait(SYNC)
        await asyncio.gather(self._write(), self._beat(), self._listen(end))

    async def leave(self) -> None:
        """A node that stops cleanly takes its sessions out of the directory at once."""
        try:
            await self._link.aio.delete(self._key(self.local.node()))
        except (RedisError, OSError):
            pass                        # they expire anyway

    async def _beat(self) -> None:
        assert self._queue is not None
        while True:
            # While Redis is away, look for it every second, so the node returns to it soon.
            await asyncio.sleep(min(1.0, self._beat_secs) if self._link.degraded else self._beat_secs)
            self._queue.put_nowait(SYNC)

    async def _write(self) -> None:
        """One writer, so the directory sees a node's changes in the order they happened."""
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            key = self._key(self.local.node())
            pipe = self._link.aio.pipeline(transaction=True)
            if item[0] == "add":
                pipe.hset(key, item[1], item[2])
            elif item[0] == "del":
                pipe.hdel(key, item[1])
            else:
                pipe.delete(key)
                mapping: dict[FieldT, EncodableT] = {s.id: _encode(s) for s in self.local.sessions()}
                if mapping:
                    pipe.hset(key, mapping=mapping)
            pipe.pexpire(key, self._ttl_ms)
            try:
                if item is SYNC or not self._link.degraded:
                    await pipe.execute()
                    self._link.succeeded()
            except (RedisError, OSError) as exc:
                self._link.failed(exc)          # the next beat writes everything again

    async def _listen(self, end: Callable[[str, str], bool]) -> None:
        channel = self._channel(self.local.node())
        while True:
            pubsub = self._link.aio.pubsub()
            try:
                await pubsub.subscribe(channel)
                while True:
                    # A read that waits at most a while, not listen(): some redis-py versions
                    # apply the socket timeout to it and would report an idle channel as a fault.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._heard(message["data"], end)
            except (RedisError, OSError) as exc:
                self._link.failed(exc)
                await asyncio.sleep(1.0)        # then subscribe again: Redis may be back
            finally:
                await pubsub.aclose()

    @staticmethod
    def _heard(data: bytes, end: Callable[[str, str], bool]) -> None:
        try:
            order = json.loads(data)
            session_id, reason = str(order["id"]), str(order["reason"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed message on the session-kill channel")
            return
        end(session_id, reason)
