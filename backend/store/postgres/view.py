"""What a node knows of the store without asking it: one row cache shared by its threads, the
generation (the `generation` counter) its rows are of, and until when that may be trusted.

A server node listens for the notification every change transaction sends (listen.py), and
proves every fraction of a second that its listening connection is alive: a round trip on it
returns only after the notifications of every commit made before the round trip began were
received. So, for one second after such a proof began, the cache holds what the store granted at
most one second ago — usually what it grants now, since a change is heard within milliseconds.
While that holds, a read command may be served from the cache with no round trip at all
(scaleout.md: changes reach every node; each node drops what it cached). Without a fresh proof
(not listening, a stalled connection, or not a server at all) every read command takes a
snapshot and checks the generation in it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

TRUST_SECS = 1.0        # how long one proof of hearing vouches for the cache: scaleout.md's bound


class RowCache:
    """Rows read in snapshots of one generation. Replaced, never emptied, when the generation
    moves: a reader still holding the old one fills only the old one."""
    __slots__ = ("generation", "rows")

    def __init__(self, generation: int | None):
        self.generation = generation
        self.rows: dict = {}


class NodeView:
    """`epoch` counts the times the node started to listen or stopped: a snapshot begun in an
    earlier epoch may predate commits nobody heard, so its rows never join the shared cache."""

    def __init__(self, clock: Callable[[], float]):
        """`clock`: monotonic seconds (time.monotonic, or a test's fake)."""
        self.clock = clock
        self._lock = threading.Lock()
        self.cache = RowCache(None)
        self.epoch = 0
        self._trusted_until = 0.0

    def trusted(self) -> RowCache | None:
        """The cache, if a read may be served from it now without asking the store."""
        cache = self.cache
        if cache.generation is None or self.clock() >= self._trusted_until:
            return None
        return cache

    def vouch(self, since: float) -> None:
        """Every notification of a commit made before `since` (this clock) has been heard."""
        with self._lock:
            self._trusted_until = max(self._trusted_until, since + TRUST_SECS)

    def reset(self) -> None:
        """The node has just started to listen (every commit from now on will be heard), or
        has lost its listening connection (what it hears can no longer be relied on)."""
        with self._lock:
            self.epoch += 1
            self._trusted_until = 0.0
            self.cache = RowCache(None)

    def heard(self, generation: int | None) -> None:
        """A commit reached `generation` (None: some commit, of an unknown generation)."""
        with self._lock:
            known = self.cache.generation
            if generation is None or known is None or generation > known:
                self.cache = RowCache(generation)

    def cache_for(self, generation: int, epoch: int) -> RowCache:
        """Where rows read in a snapshot of `generation`, begun in `epoch`, go: the shared
        cache, made anew when the snapshot is newer than what was heard; a private one for an
        older snapshot, or one begun before the node's last start or loss of listening."""
        with self._lock:
            known = self.cache.generation
            if epoch != self.epoch or (known is not None and generation < known):
                return RowCache(generation)
            if known is None or generation > known:
                self.cache = RowCache(generation)
            return self.cache
