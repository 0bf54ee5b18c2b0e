"""The argument kinds of the dot-command language: each checks and converts one word.

A Kind says how a parameter's word is checked, what the shell offers for it and whether it is
a secret; the command table in registry.py names a Kind for each parameter and option.
"""

# No `from __future__ import annotations`: NamedTuple would compile each field's annotation
# string at every start-up (see registry.py).
import re
from collections.abc import Callable
from typing import NamedTuple

from ..errors import CommandError
from ..netaddr import normalize_address, normalize_network

ROLES = ("admin", "editor", "viewer")          # global roles, weakest last
KG_ROLES = ("owner", "editor", "viewer")       # KG levels, weakest last
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
DURATION_RE = re.compile(r"(\d{1,9})([smhd])")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_PASSWORD_CHARS = 1024
MAX_USERNAME_CHARS = 64      # a longer name at login is refused unread: never hashed, stored or audited
ACCOUNT_KEY = "user:"        # a user name's lockout, as listed and cleared: never an address, even in Redis


def check_name(text: str) -> str:
    if not NAME_RE.fullmatch(text):
        raise CommandError(f"Invalid name '{clip(text)}': use letters, digits, '_', '.', '-' (at most 64)")
    return text


def clip(text: str, limit: int = 70) -> str:
    """Echo user input in an error without letting a huge or binary argument flood the line."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "…"


def check_role(text: str) -> str:
    role = text.lower()
    if role not in ROLES:
        raise CommandError(f"Unknown role '{clip(text)}'. Valid roles: admin, editor, viewer")
    return role


def check_kg_role(text: str) -> str:
    role = text.lower()
    if role not in KG_ROLES:
        raise CommandError(f"Invalid KG role '{clip(text)}'. Valid: owner, editor, viewer")
    return role


def parse_duration(text: str) -> int | None:
    """Seconds, or None for `never`."""
    if text.lower() == "never":
        return None
    m = DURATION_RE.fullmatch(text.lower())
    if not m:
        raise CommandError(f"Invalid duration '{clip(text)}': use e.g. 30s, 15m, 24h, 90d or never")
    return int(m.group(1)) * DURATION_UNITS[m.group(2)]


class UtcTime(float):
    """An absolute expiry (seconds since the epoch), where a duration counts from now."""


UTC_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def parse_expiry(text: str) -> int | UtcTime | None:
    """A duration, `never`, or a UTC time such as 2027-02-28T00:00:00Z."""
    if UTC_TIME_RE.fullmatch(text):
        from datetime import datetime, timezone
        try:
            moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise CommandError(f"Invalid time '{clip(text)}': no such date or time") from None
        return UtcTime(moment.timestamp())
    try:
        return parse_duration(text)
    except CommandError:
        raise CommandError(f"Invalid duration '{clip(text)}': use e.g. 30s, 15m, 24h, 90d, never, "
                           "or a UTC time like 2027-02-28T00:00:00Z") from None


def check_kg_scope(text: str) -> tuple[str, ...] | None:
    """`*` (every KG) or a list of names."""
    return None if text == "*" else check_kg_list(text)


def check_networks_or_any(text: str) -> tuple[str, ...]:
    """`*` (from anywhere: no limit) or CIDR ranges."""
    return () if text == "*" else check_networks(text)


def check_rate_or_none(text: str) -> tuple[int, int] | None:
    return None if text.lower() == "none" else check_rate(text)


def check_positive_int(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 1_000_000:
        raise CommandError(f"Invalid number '{clip(text)}': use a whole number from 1 to 1000000")
    return int(text)


def check_kg_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part for part in text.split(",")))
    for name in names:
        check_name(name)
    return names


def check_secret(text: str) -> str:
    if len(text) > MAX_PASSWORD_CHARS:
        raise CommandError(f"Password too long: at most {MAX_PASSWORD_CHARS} characters")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:      # a lone surrogate: no bytes to hash
            raise CommandError("Invalid password: it is not valid Unicode text") from None
    return text


def check_networks(text: str) -> tuple[str, ...]:
    out = []
    for part in text.split(","):
        try:
            out.append(normalize_network(part))
        except ValueError:
            raise CommandError(f"Invalid address range '{clip(part)}': use CIDR like 10.0.0.0/8 or 2001:db8::/32") from None
    return tuple(dict.fromkeys(out))


RATE_RE = re.compile(r"(\d{1,9})/([smhd])")


def check_rate(text: str) -> tuple[int, int]:
    """(requests, window seconds) from `100/m`."""
    m = RATE_RE.fullmatch(text.lower())
    if not m or int(m.group(1)) == 0:
        raise CommandError(f"Invalid rate '{clip(text)}': use <n>/<s|m|h|d>, e.g. 100/m")
    return int(m.group(1)), DURATION_UNITS[m.group(2)]


def check_address(text: str) -> str:
    try:
        return normalize_address(text)
    except ValueError:
        raise CommandError(f"Invalid address '{clip(text)}': use an IPv4 or IPv6 address") from None


def check_lockout_target(text: str) -> str:
    """An address, or `user:<name>` for a user name's lockout: the name as given at login (any
    text a login may count: unknown names are counted too), so not held to NAME_RE."""
    if text.startswith(ACCOUNT_KEY):
        if not 0 < len(text) - len(ACCOUNT_KEY) <= MAX_USERNAME_CHARS:
            raise CommandError(f"Invalid user name '{clip(text)}': give user:<name>, at most {MAX_USERNAME_CHARS} characters")
        return text
    try:
        return normalize_address(text)
    except ValueError:
        raise CommandError(f"Invalid lockout '{clip(text)}': use an IPv4 or IPv6 address, or user:<name>") from None


def check_token_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", text):
        raise CommandError(f"Invalid identifier '{clip(text)}'")
    return text


class Kind(NamedTuple):
    name: str
    convert: Callable[[str], object]
    completes: str | None = None   # what the shell offers: users, kgs, api_keys, roles, kg_roles...
    secret: bool = False           # masked on screen and in history
    describe: str = ""             # its valid values, for `.help` and docs/commands.md


NAME_RULE = "a new name: letters, digits, '_', '.', '-', at most 64, not starting with '.' or '-'"
NEW_NAME = Kind("name", check_name, describe=NAME_RULE)
USER = Kind("user", check_name, completes="users", describe="a user name")
KG = Kind("kg", check_name, completes="kgs", describe="a knowledge graph name")
NEW_KG = Kind("kg", check_name, describe=NAME_RULE)
LABEL = Kind("label", check_name, completes="api_keys", describe="an API key's label")
ROLE = Kind("role", check_role, completes="roles", describe="a global role: " + ", ".join(ROLES))
KG_ROLE = Kind("kg_role", check_kg_role, completes="kg_roles", describe="a KG level: " + ", ".join(KG_ROLES))
SECRET = Kind("secret", check_secret, secret=True,
              describe=f"a password, at most {MAX_PASSWORD_CHARS} characters; asked for at a hidden prompt when left out")
DURATION = Kind("duration", parse_duration, completes="durations",
                describe="a duration: 30s, 15m, 24h, 90d (seconds, minutes, hours, days) or never")
COUNT = Kind("count", check_positive_int, describe="a whole number from 1 to 1000000")
KG_LIST = Kind("kg_list", check_kg_list, completes="kgs", describe="knowledge graph names separated by commas")
ADDRESS = Kind("address", check_address, describe="an IPv4 or IPv6 address")
IDENT = Kind("id", check_token_id, describe="an identifier: letters, digits, '_', '-'")
NETWORKS = Kind("networks", check_networks, describe="CIDR ranges separated by commas, e.g. 10.0.0.0/8,2001:db8::/32")
RATE = Kind("rate", check_rate, describe="requests per window: <n>/<s|m|h|d>, e.g. 100/m")
EXPIRY = Kind("duration", parse_expiry, completes="durations",
              describe="a duration (30s, 15m, 24h, 90d), never, or a UTC time such as 2027-02-28T00:00:00Z")
KG_SCOPE = Kind("kg_list", check_kg_scope, completes="kgs",
                describe="knowledge graph names separated by commas, or * for every KG the owner can reach")
ANY_NETWORKS = Kind("networks", check_networks_or_any, describe="CIDR ranges separated by commas, or * for any address")
RATE_OR_NONE = Kind("rate", check_rate_or_none, describe="requests per window, <n>/<s|m|h|d> (100/m), or none")
TOPIC = Kind("topic", str, completes="commands", describe="a command or a group, e.g. .kg acl or .apikey create")
SETTING = Kind("setting", str, completes="settings", describe="a config key, e.g. shell.format")
TEXT = Kind("text", str, describe="a value")
LOCKOUT = Kind("lockout", check_lockout_target, completes="addresses",   # `.lockout list`'s first column
               describe="a locked-out IPv4 or IPv6 address, or user:<name> for a locked user name")
PATH = Kind("path", str, describe="a file's path")


AUDIT_OUTCOMES = ("ok", "denied", "failed", "locked")
SESSION_PREFIX_MIN = 8


def check_outcome(text: str) -> str:
    if text.lower() not in AUDIT_OUTCOMES:
        raise CommandError(f"Unknown outcome '{clip(text)}'. Valid: {', '.join(AUDIT_OUTCOMES)}")
    return text.lower()


def check_session_prefix(text: str) -> str:
    check_token_id(text)
    if len(text) < SESSION_PREFIX_MIN:
        raise CommandError(f"Session id '{clip(text)}' too short: give the id or a unique prefix of "
                           f"at least {SESSION_PREFIX_MIN} characters")
    return text.lower()


def is_secret_reference(text: str) -> bool:
    """`@FILE` or `-`: where the shell reads a password from (the value itself is no secret)."""
    return text == "-" or text.startswith("@")


def check_password_option(text: str) -> str:
    if is_secret_reference(text):
        raise CommandError("password=@FILE and password=- are read by the shell; "
                           "this target was sent the reference, not the password")
    return check_secret(text)


OUTCOME = Kind("outcome", check_outcome, completes="outcomes", describe="one of " + ", ".join(AUDIT_OUTCOMES))
SESSION_PREFIX = Kind("session_id", check_session_prefix, completes="sessions",
                      describe=f"a session id, or a unique prefix of it of at least {SESSION_PREFIX_MIN} characters")
PASSWORD_SOURCE = Kind("password", check_password_option, secret=True,
                       describe="the password read by the shell from a file (@/run/secrets/bob) "
                                "or from the next line of stdin (-)")


def check_switch(text: str) -> str:
    if text.lower() not in ("on", "off"):
        raise CommandError(f"Invalid setting '{clip(text)}': use on or off")
    return text.lower()


def check_expanded(text: str) -> str:
    if text.lower() not in ("on", "off", "auto"):
        raise CommandError(f"Invalid setting '{clip(text)}': use on, off or auto")
    return text.lower()


def check_format(text: str) -> str:
    if text.lower() not in FORMATS:
        raise CommandError(f"Invalid format '{clip(text)}': use table, plain, json or csv")
    return text.lower()


FORMATS = ("table", "plain", "json", "csv")
SWITCH = Kind("switch", check_switch, completes="switches", describe="on or off")
EXPANDED = Kind("expanded", check_expanded, completes="expanded", describe="on, off or auto")
FORMAT = Kind("format", check_format, completes="formats", describe="table, plain, json or csv")
