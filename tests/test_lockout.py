"""The lockout rules of security.md (Lockout) on the engine, with a fake clock: IPv6 counted
per /64, and per-account slowing that answers alike for existing and unknown names."""

from __future__ import annotations

import pytest

from backend.config import with_values
from backend.engine import Engine
from backend.errors import AuthError, LockedOut
from backend.netaddr import lockout_key
from backend.store import SQLiteStore
from conftest import ADMIN_PASSWORD

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
