"""Security primitives: password hashing, API-key format and digests, lockout, clocks.

Nothing here touches the store or the network, so each piece is tested on its own.
"""

from __future__ import annotations

import functools
import hmac
import os
import secrets
import threading
import time
import zlib
from datetime import datetime, timezone
from hashlib import sha256
from typing import Callable, Protocol

from .config import SecurityConfig

# --- clocks ------------------------------------------------------------------------------------

Clock = Callable[[], float]   # seconds since the epoch; tests pass a FakeClock


class FakeClock:
    def __init__(self, start: float = 1_795_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def iso(ts: float | None) -> str:
    """ISO 8601 UTC to the second, or empty for a missing time."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- passwords ---------------------------------------------------------------------------------

SALT_BYTES, HASH_BYTES = 16, 32


class PasswordHasher:
    """argon2id with the configured parameters. Counts verifications so tests can check that
    every failure path spends exactly the same work (one verification), without timing."""

    def __init__(self, cfg: SecurityConfig):
        self._cfg = cfg
        self._dummy: str | None = None
        self._lock = threading.Lock()
        self._pool = None
        self._ahead: dict[str, list] = {}     # password -> futures of hashes made ahead of time
        self.verifications = 0
        self.parameters = (f"argon2id m={cfg.argon2_memory_kib} KiB, t={cfg.argon2_time_cost}, "
                           f"p={cfg.argon2_parallelism}")

    @functools.cached_property
    def _hasher(self):
        # argon2 is imported on first use: an API-key login in script mode never needs it.
        from argon2 import PasswordHasher as Argon2Hasher, Type

        cfg = self._cfg
        return Argon2Hasher(time_cost=cfg.argon2_time_cost, memory_cost=cfg.argon2_memory_kib,
                            parallelism=cfg.argon2_parallelism, hash_len=HASH_BYTES, salt_len=SALT_BYTES,
                            type=Type.ID)

    def hash(self, password: str) -> str:
        with self._lock:
            queued = self._ahead.get(password)
            future = queued.pop(0) if queued else None
            if queued == []:
                del self._ahead[password]
        return future.result() if future else self._hasher.hash(password)

    def hash_ahead(self, password: str) -> None:
        """Start hashing `password` on another core; hash() will collect it. argon2 releases the
        GIL, so a script of user creations hashes on every core and still commits in order."""
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="argon2")
            self._ahead.setdefault(password, []).append(self._pool.submit(self._hasher.hash, password))

    def discard_ahead(self) -> None:
        with self._lock:
            for futures in self._ahead.values():
                for future in futures:
                    future.cancel()
            self._ahead.clear()

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """One argon2 verification, against a dummy hash when there is no user, so an unknown
        user costs what a wrong password costs."""
        with self._lock:
            self.verifications += 1
        target = stored_hash or self._dummy_hash()
        try:
            encoded, secret = target.encode("ascii"), password.encode("utf-8")
        except UnicodeEncodeError:
            return False
        if not encoded.startswith(b"$argon2id$"):
            return False
        # The C verifier straight from argon2-cffi's own bindings: importing argon2-cffi itself
        # costs ~10 ms (its dataclasses), and every password log-in in script mode verifies.
        from _argon2_cffi_bindings import ffi, lib

        outcome = lib.argon2_verify(ffi.new("char[]", encoded), ffi.new("char[]", secret), len(secret),
                                    lib.Argon2_id)
        return outcome == lib.ARGON2_OK and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        cfg = self._cfg
        return argon2_parameters(stored_hash) != (cfg.argon2_memory_kib, cfg.argon2_time_cost,
                                                  cfg.argon2_parallelism, SALT_BYTES, HASH_BYTES)

    def _dummy_hash(self) -> str:
        # Made lazily: most runs never meet an unknown user and start-up must stay fast.
        if self._dummy is None:
            self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy


def argon2_parameters(encoded: str) -> tuple[int, int, int, int, int] | None:
    """(memory KiB, time cost, parallelism, salt bytes, hash bytes) of an argon2id v1.3 hash in
    its standard text form ($argon2id$v=19$m=..,t=..,p=..$salt$hash), or None."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[:3] != ["", "argon2id", "v=19"]:
        return None
    settings = dict(item.partition("=")[::2] for item in parts[3].split(","))
    try:
        memory, time_cost, parallelism = (int(settings[name]) for name in ("m", "t", "p"))
    except (KeyError, ValueError):
        return None
    return memory, time_cost, parallelism, len(parts[4]) * 3 // 4, len(parts[5]) * 3 // 4


def check_password_policy(name: str, password: str, min_length: int) -> str | None:
    """The policy violation as a user-facing message, or None."""
    if len(password) < min_length:
        return f"Password too short: at least {min_length} characters"
    if len(password) > 1024:
        return "Password too long: at most 1024 characters"
    if password == name:
        return "Password must differ from the user name"
    return None


# --- API keys ----------------------------------------------------------------------------------

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_BODY_CHARS = 43      # 62**43 > 2**256
KEY_CHECK_CHARS = 6      # CRC32 fits in 6 base62 digits


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(BASE62[rem])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), KEY_CHECK_CHARS)


def new_api_key() -> str:
    body = _base62(secrets.randbits(256), KEY_BODY_CHARS)
    return f"il_{body}_{_checksum(body)}"


def well_formed_key(key: str) -> bool:
    """Shape and checksum: a mistyped key is refused before any lookup."""
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != "il":
        return False
    body, check = parts[1], parts[2]
    if len(body) != KEY_BODY_CHARS or len(check) != KEY_CHECK_CHARS:
        return False
    if not all(c in BASE62 for c in body + check):
        return False
    return hmac.compare_digest(_checksum(body), check)


def key_digest(secret: bytes, key: str) -> str:
    """HMAC-SHA256 of the key under the server-side secret: what the store keeps and looks up."""
    return hmac.new(secret, key.encode(), sha256).hexdigest()


# --- lockout -----------------------------------------------------------------------------------

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


def system_clock() -> float:
    return time.time()
