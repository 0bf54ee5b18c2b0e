"""Each command's result columns, messages and errors, exactly as commands.md gives them."""

from __future__ import annotations

import pytest

from backend.errors import AuthError, CommandError, PermissionDenied, SessionEnded
from conftest import ADMIN_PASSWORD


def msg(result):
    assert result.columns == ["message"]
    return [r[0] for r in result.rows]


def err(engine, session, line):
    with pytest.raises(CommandError) as exc:
        engine.execute(session, line)
    return exc.value.message


@pytest.fixture
def team(engine, admin):
    engine.execute(admin, ".user create alice alice-passphrase editor")
    engine.execute(admin, ".user create bob bob-passphrase viewer")
    engine.execute(admin, ".kg create sales")
    engine.execute(admin, ".kg acl grant sales bob viewer")
    engine.execute(admin, ".kg use default")
    alice = engine.login("alice", "alice-passphrase", source="local")
    bob = engine.login("bob", "bob-passphrase", source="local")
    return alice, bob


def test_general(engine, admin):
    assert engine.execute(admin, ".whoami").columns == ["username", "role", "auth", "knowledge_graph"]
    assert engine.execute(admin, ".whoami").rows == [["admin", "admin", "password", "default"]]
    status = dict(engine.execute(admin, ".status").rows)
    assert status["target"] == "local" and status["role"] == "admin" and "version" in status
    assert engine.execute(admin, ".help").columns == ["message"]
    assert msg(engine.execute(admin, ".help .kg acl grant"))[0] == "Usage: .kg acl grant <kg> <user> <role>"
    assert len(engine.execute(admin, ".help user").rows) == 6
    assert err(engine, admin, ".help .nothing") == "Unknown command: .nothing. Type .help for the list."
    assert "shell command" in err(engine, admin, ".quit")
    assert "needs a server" in err(engine, admin, ".session list")


def test_users(engine, admin, team):
    assert engine.execute(admin, ".user list").columns == ["username", "role", "created_at", "last_login_at"]
    assert [r[0] for r in engine.execute(admin, ".user list").rows] == ["admin", "alice", "bob"]
    assert msg(engine.execute(admin, ".user create carl carl-passphrase")) == ["User 'carl' created with role 'viewer'."]
    assert err(engine, admin, ".user create carl carl-passphrase") == "User 'carl' already exists"
    assert err(engine, admin, ".user create dan short") == "Password too short: at least 8 characters"
    assert err(engine, admin, ".user create dan-the-man dan-the-man") == "Password must differ from the user name"
    assert err(engine, admin, ".user create dan") .startswith("Password required")
    assert msg(engine.execute(admin, ".user role carl editor")) == ["Role updated to 'editor' for 'carl'."]
    assert err(engine, admin, ".user role ghost editor") == "User 'ghost' not found"
    assert msg(engine.execute(admin, ".user password carl carl-new-passphrase")) == ["Password updated for 'carl'."]
    assert msg(engine.execute(admin, ".user drop carl")) == ["User 'carl' dropped."]
    assert err(engine, admin, ".user drop carl") == "User 'carl' not found"
    assert err(engine, admin, ".user drop admin") == "Cannot drop the last admin"
    assert err(engine, admin, ".user role admin editor") == "Cannot change the role of the last admin"
    show = engine.execute(admin, ".user show bob")
    assert show.columns == ["key", "value"] and ["grant", "sales: viewer"] in show.rows


def test_non_admins_on_users(engine, team):
    alice, bob = team
    assert err(engine, bob, ".user list") == "Permission denied: only admins can manage users"
    assert err(engine, bob, ".user show alice") == "Permission denied: only admins can manage users"
    assert engine.execute(bob, ".user show bob").rows[0] == ["role", "viewer"]
    assert err(engine, bob, ".user password alice x-long-password") == "Permission denied: only admins can manage users"
    assert msg(engine.execute(bob, ".user password bob bob-new-passphrase")) == ["Password updated for 'bob'."]
    assert engine.execute(bob, ".whoami").rows[0][0] == "bob"     # the changing session stays


def test_password_change_ends_other_password_sessions(engine, admin, team):
    alice, _ = team
    other = engine.login("alice", "alice-passphrase", source="local")
    engine.execute(alice, ".user password alice alice-second-pass")
    assert engine.execute(alice, ".whoami").rows[0][0] == "alice"
    with pytest.raises(SessionEnded, match="^Session ended: password changed$"):
        engine.execute(other, ".whoami")
    with pytest.raises(AuthError, match="Invalid credentials"):
        engine.login("alice", "alice-passphrase", source="local")
    assert engine.login("alice", "alice-second-pass", source="local")


def test_own_password_only_from_a_password_session(engine, admin, team):
    secret = engine.execute(admin, ".apikey create alice-key user=alice").rows[0][0]
    key = engine.authenticate(secret, source="local")
    with pytest.raises(PermissionDenied, match="logged in with it"):
        engine.execute(key, ".user password alice alice-third-pass")


def test_knowledge_graphs(engine, admin, team):
    alice, bob = team
    assert msg(engine.execute(admin, ".kg")) == ["Current knowledge graph: default"]
    assert msg(engine.execute(alice, ".kg create north")) == ["Knowledge graph 'north' created.",
                                                               "Switched to knowledge graph: north"]
    assert engine.execute(alice, ".kg list").rows == [["north", "owner"]]
    assert engine.execute(bob, ".kg list").rows == [["sales", "viewer"]]
    assert [r[0] for r in engine.execute(admin, ".kg list").rows] == ["default", "north", "sales"]
    assert err(engine, bob, ".kg create mine") == "Permission denied: viewers cannot create knowledge graphs"
    assert err(engine, admin, ".kg create north") == "Knowledge graph 'north' already exists"
    assert err(engine, admin, ".kg create _system").startswith("Invalid name '_system'")
    assert err(engine, admin, ".kg use ghost") == "Knowledge graph 'ghost' not found"
    assert err(engine, bob, ".kg use ghost") == "Access denied"       # bob could not see it anyway
    assert err(engine, bob, ".kg use north") == "Access denied"
    assert msg(engine.execute(bob, ".kg use sales")) == ["Switched to knowledge graph: sales"]
    assert err(engine, bob, ".kg drop sales") == "Permission denied: only KG owners can drop this knowledge graph"
    assert err(engine, alice, ".kg drop north") == "Cannot drop current knowledge graph. Switch to another first."
    engine.execute(admin, ".kg use default")
    assert msg(engine.execute(admin, ".kg drop north")) == ["Knowledge graph 'north' dropped."]
    assert msg(engine.execute(alice, ".kg")) == ["No knowledge graph selected."]


def test_acls(engine, admin, team):
    alice, bob = team
    acl = engine.execute(admin, ".kg acl list sales")
    assert acl.columns == ["username", "role", "granted_by", "granted_at"]
    assert [r[:3] for r in acl.rows] == [["bob", "viewer", "admin"]]
    assert msg(engine.execute(admin, ".kg acl grant sales alice editor")) == ["Granted 'editor' access on 'sales' to 'alice'."]
    assert msg(engine.execute(admin, ".kg acl grant sales alice owner")) == ["Granted 'owner' access on 'sales' to 'alice'."]
    assert len(engine.execute(admin, ".kg acl list sales").rows) == 2          # replaced, not added
    assert engine.execute(alice, ".kg acl revoke sales bob").rows == [["Revoked access on 'sales' from 'bob'."]]
    assert err(engine, alice, ".kg acl revoke sales bob") == "No ACL entry found for user 'bob' on 'sales'"
    assert err(engine, alice, ".kg acl grant sales ghost viewer") == "User 'ghost' not found"
    assert err(engine, admin, ".kg acl grant nowhere bob viewer") == "Knowledge graph 'nowhere' not found"
    engine.execute(alice, ".kg acl grant sales bob viewer")
    assert err(engine, bob, ".kg acl grant sales bob owner") == "Permission denied: only KG owners can manage ACLs"
    check = engine.execute(bob, ".kg acl check sales bob")
    assert check.columns == ["username", "kg", "access", "because"]
    assert check.rows == [["bob", "sales", "viewer", "ACL entry"]]
    assert err(engine, bob, ".kg acl check sales alice") == "Permission denied: only KG owners can manage ACLs"
    assert engine.execute(admin, ".kg acl check sales admin").rows[0][2:] == ["owner", "global role admin"]
    assert engine.execute(admin, ".kg acl check default bob").rows[0][2:] == ["none", "no ACL entry"]
    engine.execute(bob, ".kg use sales")
    assert len(engine.execute(bob, ".kg acl list").rows) == 2                  # defaults to the current KG


def test_api_keys(engine, admin, team, clock):
    created = engine.execute(admin, ".apikey create etl role=editor kg=sales expires=90d user=alice")
    assert created.columns == ["api_key", "label", "owner", "role", "kgs", "expires_at"]
    secret, *rest = created.rows[0]
    assert secret.startswith("il_") and rest[:4] == ["etl", "alice", "editor", "sales"]
    assert err(engine, admin, ".apikey create etl") == "API key with label 'etl' already exists"
    listing = engine.execute(admin, ".apikey list")
    assert listing.columns == ["label", "created_at", "owner", "role", "kgs", "expires_at", "last_used_at", "status"]
    assert secret not in repr(listing.rows)
    assert listing.rows[0][-1] == "active"
    key = engine.authenticate(secret, source="local")
    assert engine.execute(key, ".whoami").rows == [["alice", "editor", "api_key:etl", ""]]
    assert engine.execute(admin, ".apikey list").rows[0][6] != ""            # last_used_at
    assert msg(engine.execute(admin, ".apikey revoke etl")) == ["API key 'etl' revoked."]
    assert engine.execute(admin, ".apikey list").rows[0][-1] == "revoked"
    assert err(engine, admin, ".apikey revoke nothing") == "API key 'nothing' not found"
    with pytest.raises(SessionEnded, match="API key revoked"):
        engine.execute(key, ".whoami")
    with pytest.raises(AuthError, match="^Invalid credentials$"):
        engine.authenticate(secret, source="local")
    assert err(engine, team[0], ".apikey list") == "Permission denied: only admins can manage API keys"


def test_rotation_with_grace(engine, admin, clock):
    old = engine.execute(admin, ".apikey create svc").rows[0][0]
    rotated = engine.execute(admin, ".apikey rotate svc grace=1h")
    assert rotated.columns == ["api_key", "label", "previous_valid_until"]
    new = rotated.rows[0][0]
    assert engine.execute(admin, ".apikey list").rows[0][-1] == "rotating"
    old_session = engine.authenticate(old, source="local")
    engine.authenticate(new, source="local")
    clock.advance(3601)
    with pytest.raises(AuthError, match="^Invalid credentials$"):
        engine.authenticate(old, source="local")
    with pytest.raises(SessionEnded, match="API key rotated"):
        engine.execute(old_session, ".whoami")
    assert engine.execute(admin, ".apikey list").rows[0][-1] == "active"
    newest = engine.execute(admin, ".apikey rotate svc grace=0s").rows[0][0]
    with pytest.raises(AuthError):
        engine.authenticate(new, source="local")
    engine.authenticate(newest, source="local")


def test_audit_and_refusals(engine, admin, team):
    _, bob = team
    with pytest.raises(PermissionDenied):
        engine.execute(bob, ".user drop alice")
    records = engine.execute(admin, ".audit limit=5")
    assert records.columns == ["seq", "time", "actor", "source", "action", "target", "outcome", "detail"]
    assert any(r[2:7] == ["bob", "local", "user.drop", "alice", "denied"] for r in records.rows)
    assert [r[4] for r in engine.execute(admin, ".audit action=user.create").rows] == ["user.create"] * 3
    assert all("bob" in (r[2], r[5]) for r in engine.execute(admin, ".audit user=bob").rows)
    assert len(engine.execute(admin, ".audit limit=2").rows) == 2
    assert msg(engine.execute(admin, ".audit verify"))[0].startswith("Audit log intact: ")


def test_audit_names_the_key_a_change_or_refusal_came_through(engine, admin):
    engine.execute(admin, ".user create kit kit-passphrase viewer")
    secret = engine.execute(admin, ".apikey create ops-bot role=editor").rows[0][0]
    bot = engine.authenticate(secret, source="local")
    engine.execute(bot, ".kg create bot-made")
    with pytest.raises(PermissionDenied):
        engine.execute(bot, ".user drop kit")
    denied, made = engine.execute(admin, ".audit limit=2").rows
    assert made[2:] == ["admin", "local", "kg.create", "bot-made", "ok", "via api_key:ops-bot"]
    assert denied[2:6] == ["admin", "local", "user.drop", "kit"]
    assert denied[7] == "Permission denied: only admins can manage users; via api_key:ops-bot"


def test_program_of_several_lines_is_authorized_line_by_line(engine, admin, team):
    _, bob = team
    with pytest.raises(CommandError, match=r"^line 2: Permission denied: only admins can manage users$"):
        engine.execute_program(bob, ".whoami\n.user create eve eve-passphrase admin\n.whoami")
    results = engine.execute_program(admin, ".kg create a1\n\n.kg create a2")
    assert len(results) == 2 and admin.knowledge_graph == "a2"
    with pytest.raises(CommandError, match="^line 2: Knowledge graph 'a1' already exists$"):
        engine.execute_program(admin, ".kg create a3\n.kg create a1\n.kg create a4")
    names = [r[0] for r in engine.execute(admin, ".kg list").rows]
    assert "a3" in names and "a4" not in names


def test_login_failures_look_alike(engine, admin, clock):
    engine.execute(admin, ".user create zed zed-passphrase")
    revoked = engine.execute(admin, ".apikey create gone").rows[0][0]
    engine.execute(admin, ".apikey revoke gone")
    expired = engine.execute(admin, ".apikey create brief expires=1m").rows[0][0]
    clock.advance(61)
    before = engine.hasher.verifications
    for user, password in [("nobody", "whatever-pw"), ("zed", "wrong-password")]:
        with pytest.raises(AuthError) as exc:
            engine.login(user, password, source="local")
        assert exc.value.message == "Invalid credentials"
    for key in ["il_garbage", "il_" + "A" * 43 + "_AAAAAA", revoked, expired]:
        with pytest.raises(AuthError, match="^Invalid credentials$"):
            engine.authenticate(key, source="local")
    # Exactly one argon2 verification for each failure, whatever the reason.
    assert engine.hasher.verifications - before == 6


def test_locked_address_costs_no_verification(engine, cheap_config):
    for _ in range(20):
        with pytest.raises(AuthError, match="Invalid credentials"):
            engine.login("admin", "wrong-password", source="ws", address="10.9.8.7")
    before = engine.hasher.verifications
    with pytest.raises(AuthError, match=r"^Too many failed attempts. Try again in 60s$"):
        engine.login("admin", ADMIN_PASSWORD, source="ws", address="10.9.8.7")
    assert engine.hasher.verifications == before
    assert engine.login("admin", ADMIN_PASSWORD, source="ws", address="10.9.8.8")


def test_rehash_after_parameter_change(tmp_path, cheap_config, clock):
    from backend.config import with_values
    from backend.engine import Engine
    from backend.store import SQLiteStore

    store = SQLiteStore(tmp_path / "d")
    Engine(store, cheap_config, clock=clock).bootstrap(ADMIN_PASSWORD)
    old_hash = store.user("admin")["password_hash"]
    stronger = Engine(store, with_values(cheap_config, {"security.argon2_time_cost": 2}), clock=clock)
    session = stronger.login("admin", ADMIN_PASSWORD, source="local")
    new_hash = store.user("admin")["password_hash"]
    assert new_hash != old_hash and "t=2" in new_hash
    assert stronger.execute(session, ".whoami").rows[0][0] == "admin"    # a rehash ends no session


def test_a_session_that_changes_its_password_survives_a_check_before_the_commit(engine, admin, team):
    """Another thread (the server's sweep) may check the session while the change is not yet
    committed, and again after: neither check may end the session that made the change; a change
    rolled back, then another one made by an admin, still ends it."""
    import threading

    alice, _ = team

    def check_from_another_thread() -> BaseException | None:
        seen: list[BaseException | None] = [None]

        def run() -> None:
            try:
                engine.check_session(alice)
            except BaseException as exc:   # noqa: BLE001 -- handed to the test thread
                seen[0] = exc
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
        return seen[0]

    engine.begin_batch()
    engine.execute(alice, ".user password alice alice-second-pass")
    assert check_from_another_thread() is None          # sees the committed, older version
    engine.end_batch(commit=True)
    assert check_from_another_thread() is None          # sees the new version, made by this session
    assert engine.execute(alice, ".whoami").rows[0][0] == "alice"

    engine.begin_batch()
    engine.execute(alice, ".user password alice alice-third-pass")
    engine.end_batch(commit=False)
    engine.execute(admin, ".user password alice alice-fourth-pass")
    with pytest.raises(SessionEnded, match="password changed"):
        engine.execute(alice, ".whoami")
