"""The one-time bootstrap of a data directory, shared by the shell and the server.

Same rules and same banner for both programs (cli.md, Bootstrap): `admin` with role `admin` and
the KG `default`; the password is INPUTLAYER_ADMIN_PASSWORD, else `bootstrap_admin_password` from
the config file, else a generated one that is printed once, to stderr, in this banner.
"""

from __future__ import annotations

from typing import Mapping

from .config import Config
from .pgstore.url import is_postgres_url, redact_url


def bootstrap_password(env: Mapping[str, str], config: Config) -> str | None:
    """The admin password a bootstrap would use, or None to generate one."""
    return env.get("INPUTLAYER_ADMIN_PASSWORD") or config.bootstrap_admin_password or None


def bootstrap_banner(generated_password: str) -> str:
    """The banner that shows a generated admin password, the only time it is ever shown."""
    return ("=" * 72 + "\n"
            "Bootstrap: created user 'admin' (role admin) and knowledge graph 'default'.\n"
            f"Generated admin password: {generated_password}\n"
            "Store it now: it will not be shown again.\n" + "=" * 72 + "\n")


def open_store(location: str, env: Mapping[str, str]):
    """The store at `location` (a postgresql:// URL, else a data directory), sealed under
    INPUTLAYER_ENCRYPTION_KEY when set. The PostgreSQL driver is imported only when needed."""
    from .codec import key_from_env

    key = key_from_env(env)
    if is_postgres_url(location):
        from .pgstore.store import PostgresStore

        return PostgresStore(location, encryption_key=key, secret_file=env.get("INPUTLAYER_SERVER_SECRET_FILE"))
    from .store import Store

    return Store(location, encryption_key=key)


def describe_store(location: str) -> str:
    """`location` as messages and logs may show it: a URL's password never appears."""
    return redact_url(location) if is_postgres_url(location) else location
