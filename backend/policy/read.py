"""The state of a store, read with the listing dot-commands through any Backend's execute(), so
a data directory, a database and a remote server are read the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from backend.errors import CommandError
from backend.result import Result

from .model import ALL_KGS, NEVER, ApiKey, State

Execute = Callable[[str], Result]


class Caller(NamedTuple):
    username: str
    role: str
    auth: str
    knowledge_graph: str | None


def _records(result: Result) -> list[dict[str, str]]:
    return [dict(zip(result.columns, row)) for row in result.rows]


def _fields(result: Result) -> dict[str, str]:
    """A `key, value` result as a mapping (a repeated key keeps its first value)."""
    fields: dict[str, str] = {}
    for key, value in result.rows:
        fields.setdefault(key, value)
    return fields


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
        state.users[user["username"]] = user["role"]
    for kg in sorted(record["name"] for record in _records(execute(".kg list"))):
        state.kgs[kg] = {entry["username"]: entry["role"] for entry in _records(execute(f".kg acl list {kg}"))}
    for key in _records(execute(".apikey list")):
        if key["status"] == "revoked":
            continue
        detail = _fields(execute(f".apikey show {key['label']}"))
        kgs = None if key["kgs"] == ALL_KGS else tuple(sorted(filter(None, key["kgs"].split(","))))
        state.keys[key["label"]] = ApiKey(key["owner"], key["role"], kgs, key["expires_at"] or NEVER,
                                          tuple(filter(None, detail.get("ips", "").split(","))),
                                          detail.get("rate", ""))
    return state
