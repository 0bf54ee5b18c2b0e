"""Lockout and rate limits counted in Redis, for every node at once (scaleout.md, Shared state).

The same interface as the in-memory `Lockout` and `RateLimiter` (security.py), which the engine
uses without knowing which it has. Every count is one Lua script, run atomically by Redis: no
read-modify-write across nodes, so the 21st failure from one address is refused whichever node
the 20 before it reached. Times come from the node's clock (the engine's, so tests can fake it);
Redis expiries only keep the keys from piling up.

While Redis is unreachable the node counts in its own memory (the same in-memory classes), and
what it counted there keeps counting after Redis is back: `remaining` is the longer of the two,
so a lockout taken during an outage is not forgotten when Redis returns.
"""

from __future__ import annotations

import math
import secrets

from ..config import SecurityConfig
from ..engine.clock import Clock
from ..engine.limits import Lockout, RateLimiter
from .link import RedisLink

# KEYS: failures (sorted set: score = time), lock (string: locked-until).
# ARGV: now, window, limit, locked-until if this locks, lock ms, keep ms, a unique member.
RECORD_FAILURE = """
local now = tonumber(ARGV[1])
local locked = tonumber(redis.call('GET', KEYS[2]) or '0')
if locked > 0 and now >= locked then redis.call('DEL', KEYS[1], KEYS[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
  return 1
end
return 0
"""

# KEYS: the window (hash: start, count). ARGV: now, limit, window secs, keep ms.
# Returns {allowed, count after, start as text} (Lua numbers would come back truncated).
RATE_HIT = """
local now = tonumber(ARGV[1])
local start = tonumber(redis.call('HGET', KEYS[1], 'start') or '')
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
if not start or now - start >= tonumber(ARGV[3]) then
  start = now
  count = 0
  redis.call('HSET', KEYS[1], 'start', ARGV[1])
end
if count >= tonumber(ARGV[2]) then return {0, count, redis.call('HGET', KEYS[1], 'start')} end
redis.call('HSET', KEYS[1], 'count', count + 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, count + 1, redis.call('HGET', KEYS[1], 'start')}
"""


def _left(until: float, now: float) -> int:
    left = until - now
    return max(0, int(left + 0.999)) if left > 0 else 0


def _float(value: bytes | str | None) -> float:
    return float(value) if value else 0.0


class SharedLockout:
    """The lockout of security.md, counted in Redis."""

    blocking = True      # its synchronous calls wait on the network: not for an event loop

    def __init__(self, cfg: SecurityConfig, clock: Clock, link: RedisLink):
        self.limit = cfg.lockout_failures
        self.window = cfg.lockout_window_secs
        self.lock_secs = cfg.lockout_secs
        self.clock = clock
        self.local = Lockout(cfg, clock)        # the fallback while Redis is unreachable
        self._link = link
        self._record = link.sync.register_script(RECORD_FAILURE)

    def _keys(self, address: str) -> list[str]:
        return [self._link.key("lockout", "failures", address), self._link.key("lockout", "lock", address)]

    def remaining(self, address: str) -> int:
        """Whole seconds until `address` may try again; 0 when it is not locked."""
        now = self.clock()
        shared = self._link.call(lambda r: _left(_float(r.get(self._keys(address)[1])), now), lambda: 0)
        return max(shared, self.local.remaining(address))

    async def aremaining(self, address: str) -> int:
        now = self.clock()

        async def ask(r) -> int:
            return _left(_float(await r.get(self._keys(address)[1])), now)
        return max(await self._link.acall(ask, lambda: 0), self.local.remaining(address))

    def record_failure(self, address: str) -> bool:
        """Count a failure; True when this failure locks the address."""
        now = self.clock()
        argv: list[str | int] = [repr(now), self.window, self.limit, repr(now + self.lock_secs), int(self.lock_secs * 1000),
                int((self.window + self.lock_secs) * 1000), secrets.token_hex(8)]
        return bool(self._link.call(lambda r: self._record(keys=self._keys(address), args=argv, client=r),
                                    lambda: self.local.record_failure(address)))

    def clear(self, address: str) -> bool:
        local = self.local.clear(address)
        return bool(self._link.call(lambda r: r.delete(*self._keys(address)), lambda: 0)) or local

    def entries(self) -> list[tuple[str, int, float | None]]:
        """(address, recent failures, locked_until or None), Redis's and this node's own."""
        now = self.clock()
        empty: list[tuple[str, int, float | None]] = []
        shared = self._link.call(lambda r: self._shared_entries(r, now), lambda: empty)
        seen = {address for address, _, _ in shared}
        return sorted(shared + [e for e in self.local.entries() if e[0] not in seen])

    def _shared_entries(self, r, now: float) -> list[tuple[str, int, float | None]]:
        head = self._link.key("lockout", "failures", "")
        lock_head = self._link.key("lockout", "lock", "")
        addresses = {k.decode()[len(head):] for k in r.scan_iter(match=head + "*", count=500)}
        addresses |= {k.decode()[len(lock_head):] for k in r.scan_iter(match=lock_head + "*", count=500)}
        ordered = sorted(addresses)
        pipe = r.pipeline(transaction=False)
        for address in ordered:
            failures, lock = self._keys(address)
            pipe.get(lock)
            pipe.zcard(failures)
            pipe.zcount(failures, f"({now - self.window}", "+inf")
        answers = pipe.execute()
        out = []
        for i, address in enumerate(ordered):
            until, total, recent = _float(answers[3 * i]), answers[3 * i + 1], answers[3 * i + 2]
            locked = until if until > now else None
            count = total if locked else recent
            if count or locked:
                out.append((address, int(count), locked))
        return out


class SharedRateLimiter:
    """Fixed-window request counts per key in Redis: one `rate=` budget across nodes."""

    def __init__(self, clock: Clock, link: RedisLink):
        self.clock = clock
        self.local = RateLimiter(clock)
        self._link = link
        self._hit = link.sync.register_script(RATE_HIT)

    def hit(self, key: object, limit: int, window: int) -> tuple[bool, int, int]:
        """Count one request: (allowed, remaining, seconds until the window resets)."""
        now = self.clock()
        keep = math.ceil(window * 1000) + 1000

        def shared(r) -> tuple[bool, int, int]:
            allowed, count, start = self._hit(keys=[self._link.key("rate", str(key))],
                                              args=[repr(now), limit, window, keep], client=r)
            reset = max(1, int(_float(start) + window - now + 0.999))
            return bool(allowed), max(0, limit - int(count)) if allowed else 0, reset
        return self._link.call(shared, lambda: self.local.hit(key, limit, window))
