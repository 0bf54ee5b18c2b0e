"""The one-time bootstrap of a data directory, shared by the shell and the server.

Same rules and same banner for both programs (cli.md, Bootstrap): `admin` with role `admin` and
the KG `default`; the password is INPUTLAYER_ADMIN_PASSWORD, else `bootstrap_admin_password` from
the config file, else a generated one that is printed once, to stderr, in this banner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .config import Config
from .engine import Clock, Engine, LockoutCounter, RateCounter, system_clock
from .store import Store
from .store.locate import open_store


def bootstrap_password(env: Mapping[str, str], config: Config) -> str | None:
    """The admin password a bootstrap would use, or None to generate one."""
    return env.get("INPUTLAYER_ADMIN_PASSWORD") or config.bootstrap_admin_password or None


def bootstrap_banner(generated_password: str) -> str:
    """The banner that shows a generated admin password, the only time it is ever shown."""
    return ("=" * 72 + "\n"
            "Bootstrap: created user 'admin' (role admin) and knowledge graph 'default'.\n"
            f"Generated admin password: {generated_password}\n"
            "Store it now: it will not be shown again.\n" + "=" * 72 + "\n")


def open_engine(location: str, config: Config, env: Mapping[str, str], *, clock: Clock = system_clock,
                lockout: LockoutCounter | None = None, rate_limiter: RateCounter | None = None,
                account_lockout: LockoutCounter | None = None) -> tuple[Store, Engine]:
    """The store at `location` (a data directory or a postgresql:// URL: store.locate) and the
    engine over it, with the given counters (else in memory); the store is closed again when
    the engine cannot start."""
    store = open_store(location, env, lock_wait_ms=config.shell.lock_wait_ms)
    try:
        return store, Engine(store, config, clock=clock, shared_key=env.get("INPUTLAYER_SHARED_KEY"),
                             lockout=lockout, rate_limiter=rate_limiter, account_lockout=account_lockout)
    except BaseException:
        store.close()
        raise


def first_start(engine: Engine, env: Mapping[str, str], config: Config, show: Callable[[str], None]) -> bool:
    """Bootstrap an empty store by the rules above, handing a generated password's banner to
    `show`; whether the store was empty."""
    bootstrapped, generated = engine.bootstrap(bootstrap_password(env, config))
    if generated:
        show(bootstrap_banner(generated))
    return bootstrapped
