"""Read and check a policy file (policy.md): every problem found, each naming its line."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import tomlkit
from tomlkit.exceptions import ParseError

from backend.errors import CommandError
from backend.language.kinds import check_kg_role, check_name, check_networks, check_rate, check_role

from .model import ALL_KGS, NEVER, ApiKey, State, rate_text
from .positions import Path, key_lines, line_of

PASSWORD_KEYS = {"password", "passwd", "pass", "password_hash"}
SECRET_KEYS = PASSWORD_KEYS | {"api_key", "apikey", "secret", "token", "digest", "hash", "key", "private_key"}
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
TABLES = ("users", "kgs", "api_keys")
USER_KEYS = ("role", "password_env")
KG_KEYS = ("acl",)
KEY_KEYS = ("owner", "role", "kgs", "expires", "ips", "rate")


class PolicyError(Exception):
    """The file cannot be used; `lines` are its problems as `<file>:<line>: <message>`."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass
class Policy:
    state: State                       # what the file declares, without the entries it got wrong
    password_env: dict[str, str]       # user -> variable holding the password of a new user
    source: str                        # the file name, for messages
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)    # (line, message)
    declared: dict[str, set[str]] = field(default_factory=dict)      # table -> every name in it

    def where(self, *path: str) -> str:
        return f"{self.source}:{line_of(self.lines, tuple(path))}"

    def failure(self, more: Sequence[tuple[int, str]] = ()) -> PolicyError:
        """All problems, the file's own and `more`, as one error in line order."""
        found = sorted([*self.problems, *more], key=lambda problem: problem[0])
        return PolicyError([f"{self.source}:{line}: {message}" for line, message in found])


class _Checker:
    def __init__(self, source: str, lines: dict[Path, int]):
        self.source = source
        self.lines = lines
        self.errors: list[tuple[int, str]] = []
        self.declared: dict[str, set[str]] = {table: set() for table in TABLES}

    def error(self, path: Path, message: str) -> None:
        self.errors.append((line_of(self.lines, path), message))

    def value(self, path: Path, raw: Any, convert: Callable[[Any], Any]) -> Any:
        """`convert(raw)`, or None after recording its complaint at `path`."""
        try:
            return convert(raw)
        except (CommandError, ValueError) as exc:
            self.error(path, exc.message if isinstance(exc, CommandError) else str(exc))
            return None

    def table(self, path: Path, raw: Any, allowed: tuple[str, ...]) -> dict | None:
        """`raw` as a table whose keys are all `allowed` (secrets and unknown keys refused)."""
        if not isinstance(raw, dict):
            self.error(path, f"'{'.'.join(path)}' must be a table")
            return None
        good = {}
        for key, value in raw.items():
            if key.lower() in SECRET_KEYS:
                self.error(path + (key,), secret_message(key))
            elif key not in allowed:
                self.error(path + (key,), f"unknown key '{key}' in [{'.'.join(path)}]; "
                                          f"allowed: {', '.join(allowed)}")
            else:
                good[key] = value
        return good

    def names(self, path: Path, raw: Any) -> dict:
        """A table of named tables (`[users.<name>]`), with names checked."""
        if not isinstance(raw, dict):
            self.error(path, f"'{path[0]}' must be a table of tables ([{path[0]}.<name>])")
            return {}
        self.declared[path[0]] = set(raw)
        return {name: value for name, value in raw.items() if self.value(path + (name,), name, check_name)}


def secret_message(key: str) -> str:
    if key.lower() in PASSWORD_KEYS:
        return "passwords do not belong in a policy file; use password_env"
    return f"secrets do not belong in a policy file: remove '{key}'"


def _string(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected a string")   # noqa: TRY004 -- _Checker.value() reports ValueErrors
    return raw


def _env_name(raw: Any) -> str:
    if not isinstance(raw, str) or not ENV_NAME_RE.fullmatch(raw):
        raise ValueError("password_env must name an environment variable (letters, digits, '_')")
    return raw


def _expiry(raw: Any) -> str:
    if raw == NEVER:
        return NEVER
    if isinstance(raw, datetime):
        raw = raw.isoformat()
    if isinstance(raw, str) and TIME_RE.fullmatch(raw):
        try:
            datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ")
            return raw
        except ValueError:
            pass
    raise ValueError(f"bad expires {raw!r}: use \"never\" or a UTC time like \"2027-02-28T00:00:00Z\"")


def _kg_scope(raw: Any) -> tuple[str, ...] | None:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ValueError('kgs must be a list of knowledge graph names, or ["*"] for all of them')
    if raw == [ALL_KGS]:
        return None
    if not raw:
        raise ValueError('kgs must name at least one knowledge graph, or be ["*"] for all of them')
    return tuple(sorted({check_name(name) for name in raw}))


def _networks(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(item, str) for item in raw):
        raise ValueError('ips must be a list of addresses or CIDR ranges, e.g. ["10.0.0.0/8"]')
    return check_networks(",".join(raw))


def _rate(raw: Any) -> str:
    return rate_text(*check_rate(_string(raw)))


def _required(check: _Checker, path: Path, table: dict, key: str, convert: Callable[[Any], Any]) -> Any:
    if key not in table:
        check.error(path, f"[{'.'.join(path)}] needs '{key}'")
        return None
    return check.value(path + (key,), table[key], convert)


def parse_policy(text: str, source: str) -> Policy:
    """The policy in `text`, or PolicyError listing every problem."""
    policy = read_policy(text, source)
    if policy.problems:
        raise policy.failure()
    return policy


def read_policy(text: str, source: str) -> Policy:
    """The policy in `text` with the problems found in it, so that those the store shows
    (make_plan) can be told in the same run; PolicyError only when it is not TOML at all."""
    try:
        document = tomlkit.parse(text).unwrap()
    except ParseError as exc:
        raise PolicyError([f"{source}:{exc.line}: not valid TOML: {_parse_reason(exc)}"]) from None
    check = _Checker(source, key_lines(text))
    policy = Policy(State(), {}, source, check.lines)
    for name in document:
        if name.lower() in SECRET_KEYS:
            check.error((name,), secret_message(name))
        elif name not in TABLES:
            check.error((name,), f"unknown table '{name}'; allowed: {', '.join(TABLES)}")
    _users(check, policy, document.get("users", {}))
    _kgs(check, policy, document.get("kgs", {}))
    _keys(check, policy, document.get("api_keys", {}))
    policy.problems, policy.declared = check.errors, check.declared
    return policy


def _parse_reason(exc: ParseError) -> str:
    # tomlkit ends its message with " at line L col C", which our prefix already says.
    return re.sub(r" at line \d+ col \d+$", "", str(exc))


def _users(check: _Checker, policy: Policy, raw: Any) -> None:
    for name, spec in check.names(("users",), raw).items():
        path = ("users", name)
        table = check.table(path, spec, USER_KEYS)
        if table is None:
            continue
        role = _required(check, path, table, "role", lambda r: check_role(_string(r)))
        if role:
            policy.state.users[name] = role
        if "password_env" in table:
            env = check.value(path + ("password_env",), table["password_env"], _env_name)
            if env:
                policy.password_env[name] = env


def _kgs(check: _Checker, policy: Policy, raw: Any) -> None:
    for name, spec in check.names(("kgs",), raw).items():
        path = ("kgs", name)
        if name.startswith("_"):
            check.error(path, f"Invalid name '{name}': names starting with '_' are reserved for the system")
            continue
        table = check.table(path, spec, KG_KEYS)
        if table is None:
            continue
        acl: dict[str, str] = {}
        if "acl" in table:
            entries = table["acl"]
            if not isinstance(entries, dict):
                check.error(path + ("acl",), 'acl must be a table of user = level, e.g. { alice = "editor" }')
                entries = {}
            for user, level in entries.items():
                where = path + ("acl", user)
                if check.value(where, user, check_name):
                    converted = check.value(where, level, lambda lv: check_kg_role(_string(lv)))
                    if converted:
                        acl[user] = converted
        policy.state.kgs[name] = dict(sorted(acl.items()))


def _keys(check: _Checker, policy: Policy, raw: Any) -> None:
    for label, spec in check.names(("api_keys",), raw).items():
        path = ("api_keys", label)
        table = check.table(path, spec, KEY_KEYS)
        if table is None:
            continue
        errors = len(check.errors)
        owner = _required(check, path, table, "owner", lambda o: check_name(_string(o)))
        role = _required(check, path, table, "role", lambda r: check_role(_string(r)))
        kgs = _required(check, path, table, "kgs", _kg_scope)
        expires = _required(check, path, table, "expires", _expiry)
        ips = check.value(path + ("ips",), table["ips"], _networks) if "ips" in table else ()
        rate = check.value(path + ("rate",), table["rate"], _rate) if "rate" in table else ""
        if len(check.errors) == errors:
            policy.state.keys[label] = ApiKey(owner, role, kgs, expires, ips, rate)
