"""The one-time bootstrap of a data directory, shared by the shell and the server.

Same rules and same banner for both programs (cli.md, Bootstrap): `admin` with role `admin` and
the KG `default`; the password is INPUTLAYER_ADMIN_PASSWORD, else `bootstrap_admin_password` from
the config file, else a generated one that is printed once, to stderr, in this banner.
"""

from __future__ import annotations

from typing import Mapping

from .config import Config


def bootstrap_password(env: Mapping[str, str], config: Config) -> str | None:
    """The admin password a bootstrap would use, or None to generate one."""
    return env.get("INPUTLAYER_ADMIN_PASSWORD") or config.bootstrap_admin_password or None


def bootstrap_banner(generated_password: str) -> str:
    """The banner that shows a generated admin password, the only time it is ever shown."""
    return ("=" * 72 + "\n"
            "Bootstrap: created user 'admin' (role admin) and knowledge graph 'default'.\n"
            f"Generated admin password: {generated_password}\n"
            "Store it now: it will not be shown again.\n" + "=" * 72 + "\n")
