"""The embedded target: the engine in this process, on a local data directory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .config import Config
from .engine import Engine, Session
from .errors import CommandError
from .result import Result
from .security import Clock, system_clock
from .store import SQLiteStore

if TYPE_CHECKING:
    from .cluster import RedisLink


class Backend(Protocol):
    """What the shell talks to. The remote backend has the same surface."""
    target: str            # shown in the prompt: `local` or `host:port`

    def login(self, username: str, password: str) -> None: ...
    def authenticate(self, api_key: str) -> None: ...
    def execute(self, line: str) -> Result: ...
    def close(self) -> None: ...


class LocalBackend:
    target = "local"

    def __init__(self, data_dir: str, config: Config, *, encryption_key: bytes | None = None,
                 shared_key: str | None = None, clock: Clock = system_clock):
        self.store = SQLiteStore(data_dir, encryption_key=encryption_key)
        self._link: RedisLink | None = None
        try:
            counters = self._shared_counters(config, clock)
            self.engine = Engine(self.store, config, clock=clock, shared_key=shared_key, **counters)
        except BaseException:
            self.close()
            raise
        self.session: Session | None = None
        self.bootstrapped = False
        self.generated_password: str | None = None

    def _shared_counters(self, config: Config, clock: Clock) -> dict:
        """With a cluster's Redis (scaleout.md), the shell sees and clears the lockouts every
        node counts there, and spends a key's `rate=` from the same budget."""
        if not config.cluster.redis_url:
            return {}
        from .cluster import RedisLink, SharedLockout, SharedRateLimiter   # only a cluster needs redis-py

        self._link = link = RedisLink(config.cluster.redis_url, config.cluster.key_prefix)
        return {"lockout": SharedLockout(config.security, clock, link), "rate_limiter": SharedRateLimiter(clock, link)}

    def bootstrap(self, admin_password: str | None) -> None:
        self.bootstrapped, self.generated_password = self.engine.bootstrap(admin_password)

    def login(self, username: str, password: str) -> None:
        self.session = self.engine.login(username, password, source="local")

    def authenticate(self, api_key: str) -> None:
        self.session = self.engine.authenticate(api_key, source="local")

    def use_bootstrap_admin(self) -> None:
        self.session = self.engine.trusted_session("admin")

    def execute(self, line: str) -> Result:
        if self.session is None:
            raise CommandError("Not logged in")
        return self.engine.execute(self.session, line)

    def prepare(self, lines: list[str]) -> None:
        self.engine.prepare(lines)

    def discard_prepared(self) -> None:
        self.engine.discard_prepared()

    def begin_batch(self, *, atomic: bool = False) -> None:
        self.engine.begin_batch(atomic=atomic)

    def end_batch(self, commit: bool) -> None:
        self.engine.end_batch(commit)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        self.store.close()
