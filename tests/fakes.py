"""Test doubles."""

from __future__ import annotations


class FakeClock:
    """A clock that moves only when a test advances it."""

    def __init__(self, start: float = 1_795_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
