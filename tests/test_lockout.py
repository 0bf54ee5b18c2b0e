"""The lockout rules of security.md (Lockout) on the engine, with a fake clock: IPv6 counted
per /64, per-account slowing that answers alike for existing and unknown names, and an admin
seeing and lifting both kinds of lock."""

from __future__ import annotations

import re

import pytest

from backend.config import with_values
from backend.display import iso
from backend.engine import Engine
from backend.errors import AuthError, CommandError, LockedOut, PermissionDenied
from backend.language.kinds import FORMATS
from backend.netaddr import lockout_key
from backend.result import Result
from backend.store import SQLiteStore
from conftest import ADMIN_PASSWORD
from repl.output import render

LOCKED = "Too many failed attempts. Try again in 60s"


@pytest.fixture
def engine(tmp_path, cheap_config, clock):
    config = with_values(cheap_config, {"security.account_lockout_failures": 5})
    store = SQLiteStore(tmp_path / "data")
    eng = Engine(store, config, clock=clock)
    eng.bootstrap(ADMIN_PASSWORD)
    yield eng
    store.close()


def fail(engine, name: str, address: str) -> str:
    with pytest.raises(AuthError) as raised:
        engine.login(name, "wrong-password", source="ws", address=address)
    return raised.value.message


def test_ipv6_clients_are_counted_per_64(engine):
    assert lockout_key("2001:db8:0:7::1") == "2001:db8:0:7::/64" and lockout_key("10.1.2.3") == "10.1.2.3"
    for n in range(20):            # 20 different addresses of one /64: one client
        fail(engine, f"nobody{n}", f"2001:db8:0:7::{n + 1:x}")
    assert fail(engine, "admin", "2001:db8:0:7:ffff::9").startswith("Too many failed attempts")
    engine.login("admin", ADMIN_PASSWORD, source="ws", address="2001:db8:0:8::1")     # the next /64 is not
    assert [(a, n) for a, n, _ in engine.lockout.entries()] == [("2001:db8:0:7::/64", 20)]
    admin = engine.login("admin", ADMIN_PASSWORD, source="local")
    assert engine.execute(admin, ".lockout clear 2001:db8:0:7::abcd").rows == [
        ["Lockout cleared for 2001:db8:0:7::/64."]]
    engine.login("admin", ADMIN_PASSWORD, source="ws", address="2001:db8:0:7::1")


def test_past_its_failures_a_user_name_is_refused_at_once_while_its_keys_and_sessions_work(engine, clock):
    admin = engine.login("admin", ADMIN_PASSWORD, source="ws", address="10.9.9.9")
    key = engine.execute(admin, ".apikey create ops").rows[0][0]
    for n in range(5):             # from five addresses: none of them is locked
        assert fail(engine, "admin", f"10.0.0.{n}") == "Invalid credentials"
    before = engine.hasher.verifications
    with pytest.raises(LockedOut, match=LOCKED):
        engine.login("admin", ADMIN_PASSWORD, source="ws", address="10.0.1.1")     # the right password too
    assert engine.hasher.verifications == before                                   # refused unchecked
    assert engine.authenticate(key, source="ws", address="10.0.1.1").username == "admin"
    assert engine.execute(admin, ".whoami").rows[0][0] == "admin"
    clock.advance(60)
    assert engine.login("admin", ADMIN_PASSWORD, source="ws", address="10.0.1.1").username == "admin"


def test_unknown_and_existing_names_are_slowed_alike(engine):
    answers = {}
    for name in ("admin", "no-such-user"):
        for n in range(5):
            fail(engine, name, f"10.1.{len(answers)}.{n}")
        before = engine.hasher.verifications
        answers[name] = fail(engine, name, "10.2.0.1")
        assert engine.hasher.verifications == before
    assert answers == {"admin": LOCKED, "no-such-user": LOCKED}


def test_refusals_of_a_slowed_name_are_audited_once_with_their_count(engine, clock):
    for n in range(5):
        fail(engine, "admin", f"10.0.0.{n}")
    for n in range(40):
        fail(engine, "admin", f"10.3.0.{n}")
    clock.advance(61)
    engine.login("admin", ADMIN_PASSWORD, source="ws", address="10.4.0.1")
    with engine.store.read():
        records = engine.store.audit_records(limit=1000, actor=None, action="auth.login", since=None)
    [summary] = [r for r in records if r["outcome"] == "locked"]
    assert summary["target"] == "admin" and summary["detail"] == "40 attempts refused while the user name was locked"


def test_a_locked_user_name_is_listed_after_the_addresses_and_an_admin_can_lift_it(engine, clock):
    for n in range(20):
        fail(engine, f"n{n:02}", "10.7.0.1")                   # locks the address
    for n in range(5):
        fail(engine, "admin", f"10.0.0.{n}")
    admin = engine.login("admin", ADMIN_PASSWORD, source="local")
    rows = engine.execute(admin, ".lockout list").rows
    until = iso(clock() + 60)
    assert rows[:6] == [["10.0.0.0", "1", ""], ["10.0.0.1", "1", ""], ["10.0.0.2", "1", ""], ["10.0.0.3", "1", ""],
                        ["10.0.0.4", "1", ""], ["10.7.0.1", "20", until]]
    assert rows[6:] == [["user:admin", "5", until]]          # names with fewer failures are not news
    assert engine.execute(admin, ".lockout clear user:admin").rows == [["Lockout cleared for user:admin."]]
    assert engine.login("admin", ADMIN_PASSWORD, source="ws", address="10.0.1.1").username == "admin"
    assert engine.execute(admin, ".lockout list").rows[5:] == [["10.7.0.1", "20", until]]
    with engine.store.read():
        [record] = engine.store.audit_records(limit=1, actor=None, action="lockout.clear", since=None)
    assert (record["actor"], record["target"], record["outcome"]) == ("admin", "user:admin", "ok")
    with pytest.raises(CommandError, match="^No lockout for user:admin$"):
        engine.execute(admin, ".lockout clear user:admin")
    with pytest.raises(LockedOut):                              # the address lock is its own
        engine.login("admin", ADMIN_PASSWORD, source="ws", address="10.7.0.1")


@pytest.mark.parametrize("line, problem", [
    (".lockout clear user:", "Invalid user name 'user:'"),
    (".lockout clear user:" + "x" * 65, "Invalid user name"),
    (".lockout clear admin", "Invalid lockout 'admin': use an IPv4 or IPv6 address, or user:<name>"),
])
def test_a_lockout_is_named_by_an_address_or_user_name(engine, line, problem):
    admin = engine.login("admin", ADMIN_PASSWORD, source="local")
    with pytest.raises(CommandError, match="^" + re.escape(problem)):
        engine.execute(admin, line)


def test_a_hostile_user_name_is_listed_escaped_and_can_be_cleared(engine):
    name = "\x1b]0;pwned\x07=HYPERLINK(1)\r\n"                # what an attacker types at login
    for n in range(5):
        fail(engine, name, f"10.0.0.{n}")
    admin = engine.login("admin", ADMIN_PASSWORD, source="local")
    result = engine.execute(admin, ".lockout list")
    assert result.rows[-1][0] == "user:" + name                 # as given; the renderers escape it
    tame = Result(result.columns, [[c.replace(name, "x") for c in row] for row in result.rows])
    for fmt in FORMATS:
        shown = render(result, fmt)
        assert "\x1b" not in shown and "\x07" not in shown and "pwned" in shown
        assert shown.count("\n") == render(tame, fmt).count("\n") and shown.count("\r") == render(tame, fmt).count("\r")
    cleared = engine.execute(admin, '.lockout clear "user:' + name + '"')
    assert "\x1b" not in render(cleared, "table") and "pwned" in render(cleared, "table")
    assert [r[0] for r in engine.execute(admin, ".lockout list").rows if r[0].startswith("user:")] == []


@pytest.mark.parametrize("line", [".lockout list", ".lockout clear user:admin", ".lockout clear 10.0.0.1"])
def test_only_an_admin_sees_or_lifts_lockouts(engine, line):
    for n in range(5):
        fail(engine, "admin", f"10.0.0.{n}")
    admin = engine.login("admin", ADMIN_PASSWORD, source="local")
    engine.execute(admin, ".user create ed ed-passphrase-1 editor")
    ed = engine.login("ed", "ed-passphrase-1", source="local")
    with pytest.raises(PermissionDenied, match="^Permission denied: only admins can manage lockouts$"):
        engine.execute(ed, line)
    assert [r[0] for r in engine.execute(admin, ".lockout list").rows][-1] == "user:admin"
