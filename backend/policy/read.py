"""The state of a store, read with the listing dot-commands through any Backend's execute(), so
a data directory, a database and a remote server are read the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from backend.errors import CommandError
from backend.language.kinds import KG_ROLES, ROLES, check_name, check_networks, check_rate
from backend.result import Result

from .model import ALL_KGS, NEVER, ApiKey, State, rate_text
from .parse import TIME_RE

Execute = Callable[[str], Result]


class Caller(NamedTuple):
    username: str
    role: str
    auth: str
    knowledge_graph: str | None


def _records(result: Result) -> list[dict[str, str]]:
    return [dict(zip(result.columns, row)) for row in result.rows]


def _checked(value: str, allowed: tuple[str, ...] | None = None) -> str:
    """A name or role as the target reported it: a server is not trusted to send only what a
    plan line, a terminal and a policy file can safely hold."""
    if allowed is None:
        check_name(value)
    elif value not in allowed:
        raise CommandError(f"The target reported an invalid value '{value.encode('unicode_escape').decode()}'")
    return value


def _fields(result: Result) -> dict[str, str]:
    """A `key, value` result as a mapping (a repeated key keeps its first value)."""
    fields: dict[str, str] = {}
    for key, value in result.rows:
        fields.setdefault(key, value)
    return fields


def _time(value: str) -> str:
    if not TIME_RE.fullmatch(value):
        raise CommandError(f"The target reported an invalid time '{value.encode('unicode_escape').decode()}'")
    return value


def read_caller(execute: Execute) -> Caller:
    me = _records(execute(".whoami"))[0]
    return Caller(me["username"], me["role"], me["auth"], me["knowledge_graph"] or None)


def read_state(execute: Execute, caller: Caller) -> State:
    """Users, KGs with their ACLs and the keys that are not revoked. Needs an admin who reaches
    every KG: anything less would read part of the store and plan to create the rest."""
    if caller.auth.startswith("api_key:"):
        own_key = _fields(execute(f".apikey show {caller.auth.split(':', 1)[1]}"))
        if own_key.get("kgs") != ALL_KGS:
            raise CommandError("Permission denied: this API key is limited to some knowledge graphs; "
                               "export, plan and apply need the whole store")
    state = State()
    for user in _records(execute(".user list")):
        state.users[_checked(user["username"])] = _checked(user["role"], ROLES)
    for kg in sorted(_checked(record["name"]) for record in _records(execute(".kg list"))):
        state.kgs[kg] = {_checked(entry["username"]): _checked(entry["role"], KG_ROLES)
                         for entry in _records(execute(f".kg acl list {kg}"))}
    for key in _records(execute(".apikey list")):
        if key["status"] == "revoked":
            continue
        label = _checked(key["label"])
        detail = _fields(execute(f".apikey show {label}"))
        kgs = None if key["kgs"] == ALL_KGS else tuple(sorted(_checked(kg) for kg in key["kgs"].split(",") if kg))
        state.keys[label] = ApiKey(_checked(key["owner"]), _checked(key["role"], ROLES), kgs,
                                   _time(key["expires_at"]) if key["expires_at"] else NEVER,
                                   tuple(check_networks(detail["ips"])) if detail.get("ips") else (),
                                   rate_text(*check_rate(detail["rate"])) if detail.get("rate") else "")
    return state
