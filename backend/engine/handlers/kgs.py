"""Knowledge graphs: list, create, switch, drop."""

from __future__ import annotations

from ...errors import CommandError
from ...result import Result
from ..policy import level_of
from .base import Call, Env, handles


@handles("kg")
def kg_current(env: Env, call: Call) -> Result:
    session = call.session
    kg = session.knowledge_graph
    if kg is None or env.store.kg(kg) is None:
        return Result.message("No knowledge graph selected.")
    return Result.message(f"Current knowledge graph: {kg}")


@handles("kg list")
def kg_list(env: Env, call: Call) -> Result:
    rights = call.rights
    rows = []
    for kg in env.store.kgs():
        level = level_of(env.store, rights, kg["name"])
        if level is not None:
            rows.append([kg["name"], level])
    return Result(["name", "access"], rows)


@handles("kg create")
def kg_create(env: Env, call: Call) -> Result:
    session, rights = call.session, call.rights
    name = call.args["name"]
    if name.startswith("_"):
        raise CommandError(f"Invalid name '{name}': names starting with '_' are reserved for the system")
    if env.store.kg(name) is not None:
        raise CommandError(f"Knowledge graph '{name}' already exists")
    now = env.clock()
    env.store.add_kg(name, session.username, now)
    if rights.user_role != "admin":
        env.store.grant(name, session.username, "owner", session.username, now)
    env.audit(call)
    return Result.message(f"Knowledge graph '{name}' created.", f"Switched to knowledge graph: {name}",
                          switched_kg=name)


@handles("kg use")
def kg_use(env: Env, call: Call) -> Result:
    name = call.args["name"]
    return Result.message(f"Switched to knowledge graph: {name}", switched_kg=name)


@handles("kg drop")
def kg_drop(env: Env, call: Call) -> Result:
    session = call.session
    name = call.args["name"]
    if name == session.knowledge_graph:
        raise CommandError("Cannot drop current knowledge graph. Switch to another first.")
    entries = len(env.store.acl_for_kg(name))
    env.store.drop_kg(name)
    env.audit(call, f"acl_entries={entries}")
    return Result.message(f"Knowledge graph '{name}' dropped.")
