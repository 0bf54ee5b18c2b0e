"""`.audit outcome=`, `action=` names and groups, `action=!auth` (issue 14)."""

from __future__ import annotations

import pytest

from backend.errors import AuthError, CommandError, PermissionDenied


def column(result, name):
    i = result.columns.index(name)
    return [row[i] for row in result.rows]


def test_outcome_and_hidden_actions(engine, admin):
    engine.execute(admin, ".user create bob bob-passphrase")
    bob = engine.login("bob", "bob-passphrase", source="local")
    with pytest.raises(PermissionDenied):
        engine.execute(bob, ".user list")
    with pytest.raises(AuthError):
        engine.login("bob", "wrong-passphrase", source="local")
    denied = engine.execute(admin, ".audit outcome=denied")
    assert column(denied, "action") == ["user.list"] and column(denied, "outcome") == ["denied"]
    assert column(engine.execute(admin, ".audit outcome=failed"), "action") == ["auth.login"]
    everything = column(engine.execute(admin, ".audit"), "action")
    assert "auth.login" in everything
    hidden = column(engine.execute(admin, ".audit action=!auth"), "action")
    assert hidden == [a for a in everything if not a.startswith("auth.")] and hidden
    assert set(column(engine.execute(admin, ".audit action=auth"), "action")) == {"auth.login"}
    assert column(engine.execute(admin, ".audit action=!auth outcome=ok"), "action")[0] == "user.create"


def test_unknown_action_is_an_error_listing_the_names(engine, admin):
    with pytest.raises(CommandError) as exc:
        engine.execute(admin, ".audit action=usr.create")
    assert exc.value.message.startswith("Unknown audit action 'usr.create'. Valid: acl.check, ")
    assert "auth.login" in exc.value.message and "user.create" in exc.value.message
