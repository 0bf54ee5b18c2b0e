"""The embedded target: the engine in this process, on a local data directory."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..bootstrap import first_start, open_engine
from ..config import Config
from ..engine import Clock, Session, system_clock
from ..engine.limits import account_lockout_config
from ..errors import CommandError, StoreError
from ..result import Result

if TYPE_CHECKING:
    from ..cluster import RedisLink


@contextmanager
def _store_errors() -> Iterator[None]:
    """A database fault met outside a command (bootstrap, login, a batch's begin or end) is a
    StoreError: the shell reports it on one line with exit status 2."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"the store failed: {exc}") from None


class LocalBackend:
    """A Backend with the Batching, Bootstrapping, Atomic and QuietLogin capabilities
    (targets.protocols)."""
    target = "local"

    def __init__(self, location: str, config: Config, env: Mapping[str, str] | None = None, *,
                 clock: Clock = system_clock):
        """`location`: a data directory or a postgresql:// URL (store.locate.open_store); `env`
        gives INPUTLAYER_ENCRYPTION_KEY, INPUTLAYER_SERVER_SECRET_FILE, INPUTLAYER_SHARED_KEY."""
        self._link: RedisLink | None = None
        try:
            self.store, self.engine = open_engine(location, config, env or {}, clock=clock,
                                                  **self._shared_counters(config, clock))
        except BaseException:
            if self._link is not None:
                self._link.close()
            raise
        self.session: Session | None = None
        self.record_login = True      # False: a login writes nothing until the first change (policy apply)
        self.bootstrapped = False

    def _shared_counters(self, config: Config, clock: Clock) -> dict:
        """With a cluster's Redis (scaleout.md), the shell sees and clears the lockouts every
        node counts there (addresses and user names), and spends a key's `rate=` from the same budget."""
        if not config.cluster.redis_url:
            return {}
        from ..cluster import RedisLink, SharedLockout, SharedRateLimiter  # only a cluster needs redis-py

        self._link = link = RedisLink(config.cluster.redis_url, config.cluster.key_prefix)
        return {"lockout": SharedLockout(config.security, clock, link), "rate_limiter": SharedRateLimiter(clock, link),
                "account_lockout": SharedLockout(account_lockout_config(config.security), clock, link)}

    def bootstrap(self, admin_password: str | None) -> None:
        with _store_errors():
            self.bootstrapped, _ = self.engine.bootstrap(admin_password)

    def first_start(self, env: Mapping[str, str], config: Config, show: Callable[[str], None]) -> None:
        """The programs' bootstrap (bootstrap.first_start): the password from `env` or config."""
        with _store_errors():
            self.bootstrapped = first_start(self.engine, env, config, show)

    def login(self, username: str, password: str) -> None:
        with _store_errors():
            self.session = self.engine.login(username, password, source="local", record=self.record_login)

    def authenticate(self, api_key: str) -> None:
        with _store_errors():
            self.session = self.engine.authenticate(api_key, source="local", record=self.record_login)

    def use_bootstrap_admin(self) -> None:
        with _store_errors():
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
        with _store_errors():
            self.engine.begin_batch(atomic=atomic)

    def end_batch(self, commit: bool) -> None:
        with _store_errors():
            self.engine.end_batch(commit)

    def run_atomic(self, lines: list[str], *, note: str = "") -> list[Result]:
        """Run `lines` in one transaction: all of them, or none when one fails (its error then
        says `line <n>: `). `note` names where the lines came from in each audit record."""
        if self.session is None:
            raise CommandError("Not logged in")
        return self.engine.execute_atomic(self.session, "\n".join(lines), note=note)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        self.store.close()
