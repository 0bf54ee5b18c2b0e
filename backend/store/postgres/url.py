"""Store URLs: which ones name PostgreSQL, how they are shown, how they are connected to.

libpq reads the URL, so its conventions hold unchanged: the password may come from PGPASSWORD
or ~/.pgpass, TLS from `sslmode=`. A password written inside the URL is never shown: messages
and logs use redact_url().
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_SECS = 10       # scaleout.md: an unreachable store fails a command within 10 s


def is_postgres_url(text: str) -> bool:
    return urlsplit(text).scheme in SCHEMES and "://" in text


def redact_url(url: str) -> str:
    """The URL with its password, if any, replaced by `****`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:****@{hostinfo}"))


def redact_text(text: str, url: str) -> str:
    """`text` (a driver's error message) with the URL's password removed wherever it appears."""
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "****")
    return text.replace(url, redact_url(url))


def connect_kwargs(url: str) -> dict:
    """What psycopg.connect() is given besides the URL: a connect timeout unless the URL sets one."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(url)
    except ProgrammingError as exc:
        raise ValueError(f"not a valid store URL: {redact_url(url)}: {redact_text(str(exc), url)}") from None
    return {} if "connect_timeout" in given else {"connect_timeout": CONNECT_TIMEOUT_SECS}
