"""engine.can(principal, kg, action) over the whole matrix:
global role × KG level × key limits × action, every cell asserted.

The oracle is the rule of commands.md written out plainly: an admin is owner of every KG, anyone
else has exactly their ACL level; a key is capped by its role (admin→owner, editor→editor,
viewer→viewer), reaches only its KGs when scoped, and never more than its owner has now.
"""

from __future__ import annotations

import itertools

import pytest

from backend.errors import CommandError, PermissionDenied, SessionEnded

ROLES = ("admin", "editor", "viewer")
LEVELS = (None, "viewer", "editor", "owner")
ACTIONS = ("read", "write", "manage")
RANK = {None: 0, "viewer": 1, "editor": 2, "owner": 3}
NEEDS = {"read": 1, "write": 2, "manage": 3}
CAP = {"viewer": "viewer", "editor": "editor", "admin": "owner"}
# Key variants: (cap role or None for "the owner's role", scope: None=all, "in", "out")
KEY_VARIANTS = [(None, None), ("viewer", None), ("editor", None), ("admin", None),
                (None, "in"), (None, "out"), ("viewer", "in")]


def expected(role: str, level: str | None, key: tuple | None, action: str) -> bool:
    have = "owner" if role == "admin" else level
    if key is not None:
        cap, scope = key
        if scope == "out":
            have = None
        elif have is not None:
            cap_level = CAP[cap or role]
            have = have if RANK[have] <= RANK[cap_level] else cap_level
    return RANK[have] >= NEEDS[action]


@pytest.fixture
def matrix(engine, admin):
    engine.execute(admin, ".kg create g")
    engine.execute(admin, ".kg create other")
    principals = {}
    for role, level in itertools.product(ROLES, LEVELS):
        name = f"u-{role}-{level or 'none'}"
        engine.execute(admin, f".user create {name} pass-{name} {role}")
        if level:
            engine.execute(admin, f".kg acl grant g {name} {level}")
        principals[(role, level, None)] = engine.login(name, f"pass-{name}", source="local")
        for n, (cap, scope) in enumerate(KEY_VARIANTS):
            if cap and ROLES.index(cap) < ROLES.index(role):
                continue   # a key may not exceed its owner's role: refused at creation (tested below)
            options = [f"user={name}"]
            if cap:
                options.append(f"role={cap}")
            if scope:
                options.append("kg=g" if scope == "in" else "kg=other")
            secret = engine.execute(admin, f".apikey create k{n}-{name} {' '.join(options)}").rows[0][0]
            principals[(role, level, (cap, scope))] = engine.authenticate(secret, source="local")
    return principals


def test_every_cell(engine, matrix):
    checked = 0
    for (role, level, key), session in matrix.items():
        for action in ACTIONS:
            assert engine.can(session, "g", action) is expected(role, level, key, action), \
                (role, level, key, action)
            checked += 1
    # 4 KG levels × (admin: password + 7 keys, editor: + 6, viewer: + 5) × 3 actions
    assert checked == 4 * (8 + 7 + 6) * 3


def test_spot_checks_in_plain_words(engine, matrix):
    assert engine.can(matrix[("viewer", "owner", None)], "g", "manage")       # ACL owner, global viewer
    assert not engine.can(matrix[("editor", None, None)], "g", "read")        # no entry, no access
    assert engine.can(matrix[("admin", None, None)], "g", "manage")           # admins own every KG
    assert not engine.can(matrix[("admin", None, ("viewer", None))], "g", "write")   # capped key
    assert not engine.can(matrix[("admin", None, (None, "out"))], "g", "read")       # out of scope
    assert not engine.can(matrix[("admin", None, None)], "missing", "read")   # no such KG


def test_unknown_action_is_a_programming_error(engine, admin):
    with pytest.raises(ValueError):
        engine.can(admin, "default", "delete")


def test_key_never_exceeds_owner_now(engine, admin):
    engine.execute(admin, ".user create ann ann-passphrase editor")
    engine.execute(admin, ".kg acl grant default ann editor")
    secret = engine.execute(admin, ".apikey create ann-key user=ann").rows[0][0]
    key = engine.authenticate(secret, source="local")
    assert engine.can(key, "default", "write")
    engine.execute(admin, ".kg acl grant default ann viewer")      # owner demoted on the KG
    assert not engine.can(key, "default", "write") and engine.can(key, "default", "read")
    engine.execute(admin, ".user role ann viewer")                  # global demotion
    assert engine.execute(key, ".whoami").rows[0][1] == "viewer"
    with pytest.raises(PermissionDenied):
        engine.execute(key, ".kg create newer")
    engine.execute(admin, ".user drop ann")                          # owner gone: key gone
    assert not engine.can(key, "default", "read")
    with pytest.raises(SessionEnded, match="Session ended: user dropped"):
        engine.execute(key, ".whoami")


def test_key_role_cap_cannot_exceed_owner(engine, admin):
    engine.execute(admin, ".user create bea bea-passphrase viewer")
    with pytest.raises(CommandError, match="Role 'editor' exceeds the owner's role 'viewer'"):
        engine.execute(admin, ".apikey create too-much role=editor user=bea")


def test_expired_key_loses_everything(engine, admin, clock):
    secret = engine.execute(admin, ".apikey create short expires=1h").rows[0][0]
    key = engine.authenticate(secret, source="local")
    assert engine.can(key, "default", "manage")
    clock.advance(3601)
    assert not engine.can(key, "default", "read")
    with pytest.raises(SessionEnded, match="API key expired"):
        engine.execute(key, ".whoami")


def test_dropping_a_kg_never_widens_a_scoped_key(engine, admin):
    engine.execute(admin, ".kg create only")
    secret = engine.execute(admin, ".apikey create scoped kg=only").rows[0][0]
    key = engine.authenticate(secret, source="local")
    engine.execute(admin, ".kg use default")
    engine.execute(admin, ".kg drop only")
    # The scope is now empty: the key reaches nothing, rather than everything.
    assert not engine.can(key, "default", "read")
    assert engine.execute(key, ".kg list").rows == []
