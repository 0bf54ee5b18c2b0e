"""Per-address lockout after failed authentications, and per-key request rates: the interfaces
the engine and the server use, and their in-memory implementations (a cluster's, in Redis, are
in backend/cluster)."""

from __future__ import annotations

import threading
from typing import Protocol

from ..config import SecurityConfig
from ..language.kinds import ACCOUNT_KEY
from .clock import Clock

Entry = tuple[str, int, float | None]      # (key, recent failures, locked_until or None)


class LockoutCounter(Protocol):
    """What the engine and the server ask of a lockout table. Two implementations: `Lockout`
    below (this process's memory) and `backend.cluster.SharedLockout` (Redis, every node)."""
    blocking: bool          # True: the synchronous calls wait on the network, not for an event loop

    def remaining(self, address: str) -> int: ...
    async def aremaining(self, address: str) -> int: ...
    def record_failure(self, address: str) -> bool: ...
    def clear(self, address: str) -> bool: ...
    def entries(self) -> list[tuple[str, int, float | None]]: ...


class RateCounter(Protocol):
    """Per-key request windows: `RateLimiter` below, or `backend.cluster.SharedRateLimiter`."""
    def hit(self, key: object, limit: int, window: int) -> tuple[bool, int, int]: ...


class _AddressState:
    __slots__ = ("failures", "locked_until")

    def __init__(self, failures: list[float]):
        self.failures = failures
        self.locked_until = 0.0


class Lockout:
    """`failures` failed authentications within `window` seconds from one address lock it for
    `lock_secs`. In memory and thread-safe; the server consults it before any argon2 work."""

    blocking = False

    def __init__(self, cfg: SecurityConfig, clock: Clock):
        self.limit = cfg.lockout_failures
        self.window = cfg.lockout_window_secs
        self.lock_secs = cfg.lockout_secs
        self.clock = clock
        self._state: dict[str, _AddressState] = {}
        self._lock = threading.Lock()

    def remaining(self, address: str) -> int:
        """Whole seconds until `address` may try again; 0 when it is not locked."""
        with self._lock:
            state = self._state.get(address)
            if state is None:
                return 0
            left = state.locked_until - self.clock()
            return max(0, int(left + 0.999)) if left > 0 else 0

    async def aremaining(self, address: str) -> int:
        return self.remaining(address)

    def record_failure(self, address: str) -> bool:
        """Count a failure; True when this failure locks the address."""
        now = self.clock()
        with self._lock:
            state = self._state.setdefault(address, _AddressState([]))
            if state.locked_until and now >= state.locked_until:
                state.failures, state.locked_until = [], 0.0
            state.failures = [t for t in state.failures if now - t < self.window]
            state.failures.append(now)
            if len(state.failures) >= self.limit:
                state.locked_until = now + self.lock_secs
                return True
            self._prune(now)
            return False

    def clear(self, address: str) -> bool:
        with self._lock:
            return self._state.pop(address, None) is not None

    def entries(self) -> list[tuple[str, int, float | None]]:
        """(address, recent failures, locked_until or None) for addresses worth showing."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            out = []
            for address, state in sorted(self._state.items()):
                locked = state.locked_until if state.locked_until > now else None
                count = len(state.failures) if locked else sum(now - t < self.window for t in state.failures)
                if count:
                    out.append((address, count, locked))
            return out

    def _prune(self, now: float) -> None:
        # Keeps memory bounded under a storm from many addresses.
        if len(self._state) < 10_000:
            return
        for address in [a for a, s in self._state.items()
                        if s.locked_until <= now and not any(now - t < self.window for t in s.failures)]:
            del self._state[address]


def address_entries(addresses: LockoutCounter) -> list[Entry]:
    """The address lockout's entries alone: under Redis both lockouts share one key space, so
    the address table also sees the `user:<name>` keys."""
    return [e for e in addresses.entries() if not e[0].startswith(ACCOUNT_KEY)]


def lockout_entries(addresses: LockoutCounter, accounts: LockoutCounter) -> list[Entry]:
    """What `.lockout list` shows: addresses with recent failures, then locked user names as
    `user:<name>` (the form `.lockout clear` takes), each with the counts of its own table. A
    name only once locked: every mistyped login (and any name an attacker sprays) is no news."""
    return address_entries(addresses) + [e for e in accounts.entries()
                                         if e[0].startswith(ACCOUNT_KEY) and e[2] is not None]


def account_lockout_config(cfg: SecurityConfig) -> SecurityConfig:
    """The settings of the per-account Lockout (keyed by user name): its own limit and lock
    time over the same window; the same Lockout class counts it."""
    return cfg._replace(lockout_failures=cfg.account_lockout_failures, lockout_secs=cfg.account_lockout_secs)


class RateLimiter:
    """Fixed-window request counts per key: `limit` requests per `window` seconds."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self._windows: dict[object, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def hit(self, key: object, limit: int, window: int) -> tuple[bool, int, int]:
        """Count one request: (allowed, remaining, seconds until the window resets)."""
        now = self.clock()
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= window:
                start, count = now, 0
            reset = max(1, int(start + window - now + 0.999))
            if count >= limit:
                return False, 0, reset
            self._windows[key] = (start, count + 1)
            return True, limit - count - 1, reset
