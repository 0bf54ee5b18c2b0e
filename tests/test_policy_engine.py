"""What policies need from the engine: `.apikey show` and `.apikey alter`, absolute expiries,
programs run as one transaction, and logins that write nothing until something changes."""

from __future__ import annotations

import pytest

from backend.errors import CommandError, PermissionDenied, SessionEnded
from backend.display import iso
from conftest import ADMIN_PASSWORD


def err(engine, session, line: str) -> str:
    with pytest.raises(CommandError) as caught:
        engine.execute(session, line)
    return caught.value.message


def show(engine, session, label: str) -> dict[str, str]:
    return dict(engine.execute(session, f".apikey show {label}").rows)


@pytest.fixture
def keyed(engine, admin):
    engine.execute(admin, ".user create eve eve-passphrase editor")
    engine.execute(admin, ".kg create sales")
    engine.execute(admin, ".kg create hr")
    secret = engine.execute(admin, ".apikey create job user=eve kg=sales expires=2031-01-01T00:00:00Z").rows[0][0]
    return secret


def test_show_has_every_limit_and_never_a_secret(engine, admin, keyed):
    detail = show(engine, admin, "job")
    assert detail == {"label": "job", "owner": "eve", "role": "editor", "kgs": "sales",
                      "expires_at": "2031-01-01T00:00:00Z", "ips": "", "rate": "", "status": "active",
                      "created_at": detail["created_at"], "last_used_at": ""}
    assert keyed not in str(detail)
    assert err(engine, admin, ".apikey show nope") == "API key 'nope' not found"


def test_alter_changes_limits_in_place_and_keeps_the_secret(engine, admin, keyed):
    message = engine.execute(admin, ".apikey alter job role=viewer kg=sales,hr ips=10.0.0.0/8 rate=100/m "
                                    "expires=2032-02-02T00:00:00Z")
    assert message.rows == [["API key 'job' altered."]]
    assert show(engine, admin, "job") | {"created_at": ""} == {
        "label": "job", "owner": "eve", "role": "viewer", "kgs": "hr,sales", "expires_at": "2032-02-02T00:00:00Z",
        "ips": "10.0.0.0/8", "rate": "100/m", "status": "active", "created_at": "", "last_used_at": ""}
    engine.execute(admin, ".apikey alter job kg=* ips=* rate=none expires=never")
    detail = show(engine, admin, "job")
    assert (detail["kgs"], detail["ips"], detail["rate"], detail["expires_at"]) == ("*", "", "", "")
    audit = engine.execute(admin, ".audit limit=1 action=apikey.alter").rows[0]
    assert audit[-1] == "kg=*; expires=never; ips=*; rate=none"
    # The secret is the same one: it still logs in, as eve, unscoped now.
    session = engine.authenticate(keyed, source="local")
    assert engine.execute(session, ".whoami").rows[0][:3] == ["eve", "viewer", "api_key:job"]


def test_alter_refuses_what_create_refuses(engine, admin, keyed):
    assert err(engine, admin, ".apikey alter job") == \
        "Usage: .apikey alter <label> [role=<r>] [kg=<a,b|*>] [expires=<d|time>] [ips=<cidr,...|*>] " \
        "[rate=<n>/<s|m|h|d>|none]"
    assert err(engine, admin, ".apikey alter job role=admin") == "Role 'admin' exceeds the owner's role 'editor'"
    assert err(engine, admin, ".apikey alter job kg=nowhere") == "Knowledge graph 'nowhere' not found"
    assert err(engine, admin, ".apikey alter job expires=2001-01-01T00:00:00Z").startswith("Invalid expiry")
    assert err(engine, admin, ".apikey alter job expires=2031-02-30T00:00:00Z").startswith("Invalid time")
    engine.execute(admin, ".apikey revoke job")
    assert err(engine, admin, ".apikey alter job role=viewer") == "API key 'job' is already revoked"
    eve = engine.login("eve", "eve-passphrase", source="local")
    with pytest.raises(PermissionDenied):
        engine.execute(eve, ".apikey show job")


def test_narrowing_a_keys_addresses_ends_its_sessions_from_elsewhere(engine, admin, keyed):
    session = engine.authenticate(keyed, source="local")          # the local shell counts as 127.0.0.1
    engine.execute(admin, ".apikey alter job ips=10.0.0.0/8")
    with pytest.raises(SessionEnded, match="not allowed from this address"):
        engine.execute(session, ".whoami")


def test_an_atomic_program_is_all_or_nothing_and_its_refusal_stays_audited(engine, admin):
    with pytest.raises(CommandError, match="^line 3: User 'ghost' not found$"):
        engine.execute_atomic(admin, ".kg create one\n.kg create two\n.kg acl grant two ghost viewer", note="apply p.toml")
    assert [row[0] for row in engine.execute(admin, ".kg list").rows] == ["default"]
    engine.execute(admin, ".user create vic vic-passphrase viewer")
    vic = engine.login("vic", "vic-passphrase", source="local")
    with pytest.raises(PermissionDenied, match="^line 1: Permission denied"):
        engine.execute_atomic(vic, ".user create mal mal-passphrase admin")
    assert engine.execute(admin, ".audit limit=1").rows[0][4:7] == ["user.create", "mal", "denied"]
    results = engine.execute_atomic(admin, ".kg create one\n.kg create two", note="apply p.toml")
    assert [r.rows for r in results] == [[["Knowledge graph 'one' created."], ["Switched to knowledge graph: one"]],
                                        [["Knowledge graph 'two' created."], ["Switched to knowledge graph: two"]]]
    assert {row[3] for row in engine.execute(admin, ".audit limit=2").rows} == {"local (apply p.toml)"}


def test_a_login_without_record_writes_nothing_until_its_first_change(engine, admin):
    def footprint():
        with engine.store.read():
            return engine.store.verify_audit()[0], engine.store.user("admin")["last_login_at"]

    before = footprint()
    quiet = engine.login("admin", ADMIN_PASSWORD, source="local", record=False)
    engine.execute(quiet, ".user list")
    assert footprint() == before
    engine.execute_atomic(quiet, ".kg create one", note="apply p.toml")
    count, last_login = footprint()
    assert count == before[0] + 2 and last_login == quiet.connected_at
    actions = [row[4] for row in engine.execute(admin, ".audit limit=2").rows]
    assert actions == ["kg.create", "auth.login"]
    assert iso(last_login)
