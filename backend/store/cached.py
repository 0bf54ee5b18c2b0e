"""Reads answered from a store's row cache before, or without, a snapshot: both stores'
consistent(). A read entered this way takes its snapshot only when a row is missing; if the
snapshot then shows the cache was behind, and the read already used a cached row, the read runs
again on a snapshot from its start, so one read never mixes two states of the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

CACHED = "cached"       # a thread's reading connection while it reads only the cache (no snapshot yet)


class StaleView(Exception):
    """The cache turned out to be behind a commit after it served part of a read."""


class CachedReads:
    read: Callable[..., Any]        # read(cached=False): the store's snapshot, entered with `with`

    def consistent(self, fn: Callable[[], T]) -> T:
        """fn(), reading one state of the store: from the cache while it may be trusted, else a
        snapshot; fn runs again on a snapshot of its own when the cache fell behind half-way (so
        fn must change nothing but what it returns)."""
        attempt = self.read(cached=True)
        try:
            with attempt:
                return fn()
        except StaleView:
            if attempt.nested:
                raise               # the outermost read started the view: it runs again
        with self.read():
            return fn()
