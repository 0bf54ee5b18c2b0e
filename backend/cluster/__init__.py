"""What the nodes of a cluster share through Redis (scaleout.md): lockout and rate-limit counts,
and the live-session directory. Without Redis a node counts in its own memory (security.py) and
knows only its own sessions (server/sessions.py); the engine sees the same interfaces either way.

link: the connection and its degraded state; counters; sessions.
"""

from .counters import SharedLockout, SharedRateLimiter
from .link import RedisLink

__all__ = ["RedisLink", "SharedLockout", "SharedRateLimiter"]
