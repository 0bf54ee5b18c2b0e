"""Identity by immutable id, delegation limits, tokens bound to their key and to their record,
the cost of issuing a token, and the dummy verification after an argon2 parameter change."""

from __future__ import annotations

import jwt
import pytest

from backend.config import with_values
from backend.engine import Engine
from backend.errors import AuthError, CommandError, PermissionDenied, SessionEnded
from backend.store import SQLiteStore


def secret_of(result):
    return result.rows[0][0]


def _recreate_in_one_program(engine, admin):
    engine.execute_program(admin, ".user drop bob\n.user create bob other-passphrase admin")


def _recreate_in_one_group_commit(engine, admin):
    engine.begin_batch()
    engine.execute(admin, ".user drop bob")
    engine.execute(admin, ".user create bob other-passphrase admin")
    engine.end_batch(True)


@pytest.mark.parametrize("recreate", [_recreate_in_one_program, _recreate_in_one_group_commit])
def test_a_recreated_user_name_inherits_nothing_of_the_dropped_user(engine, admin, recreate):
    engine.execute(admin, ".user create bob bob-passphrase viewer")
    key = secret_of(engine.execute(admin, ".apikey create bob-key user=bob"))
    bob = engine.login("bob", "bob-passphrase", source="local")
    via_key = engine.authenticate(key, source="local")
    token = secret_of(engine.execute(bob, ".token issue"))
    recreate(engine, admin)
    for old in (bob, via_key):
        with pytest.raises(SessionEnded):
            engine.execute(old, ".user list")
    for credential in (token, key):
        with pytest.raises(AuthError):
            engine.authenticate(credential, source="local")
    new_bob = engine.login("bob", "other-passphrase", source="local")
    assert new_bob.user_id != bob.user_id
    assert engine.execute(new_bob, ".user list").rows


LIMITED = ".apikey create limited role=admin kg=sales expires=1h ips=127.0.0.1/32 rate=1000/m"


@pytest.fixture
def limited(engine, admin):
    engine.execute(admin, ".kg create sales")
    engine.execute(admin, ".kg use default")
    key = secret_of(engine.execute(admin, LIMITED))
    return engine.authenticate(key, source="ws", address="127.0.0.1")


def test_a_key_made_through_a_limited_key_inherits_every_limit(engine, admin, limited):
    made = engine.execute(limited, ".apikey create escaped role=admin")
    _, label, _, role, kgs, expires_at = made.rows[0]
    parent = engine.store.key("limited")
    child = engine.store.key("escaped")
    assert (kgs, child["expires_at"], child["ips"], child["rate"]) == \
        ("sales", parent["expires_at"], ["127.0.0.1/32"], [1000, 60])
    with pytest.raises(AuthError):
        engine.authenticate(secret_of(made), source="ws", address="192.0.2.7")
    escaped = engine.authenticate(secret_of(made), source="ws", address="127.0.0.1")
    assert engine.can(escaped, "sales", "manage") and not engine.can(escaped, "default", "read")


@pytest.mark.parametrize("option, problem", [
    ("kg=default", "knowledge graph 'default' is outside its scope"),
    ("kg=sales,default", "knowledge graph 'default' is outside its scope"),
    ("expires=2h", "expiry later than"),
    ("expires=never", "expiry later than"),
    ("ips=10.0.0.0/8", "address range '10.0.0.0/8' is outside 127.0.0.1/32"),
    ("ips=127.0.0.0/8", "address range '127.0.0.0/8' is outside"),
    ("rate=2000/m", "a rate above 1000/60s"),
    ("rate=20/s", "a rate above 1000/60s"),
])
def test_a_limited_key_cannot_make_a_key_beyond_its_limits(engine, limited, option, problem):
    with pytest.raises(CommandError, match="^Exceeds the limits of the credential in use: " + problem):
        engine.execute(limited, f".apikey create wider {option}")
    assert engine.store.key("wider") is None


@pytest.mark.parametrize("line", [
    ".user create mallory mallory-passphrase admin",
    ".user drop admin",
    ".user role admin viewer",
    ".user password bob bob-new-passphrase",
    ".user password admin admin-new-passphrase",
    ".lockout clear 192.0.2.1",
    ".lockout clear user:admin",
    ".lockout list",
])
def test_a_kg_scoped_credential_cannot_manage_users_or_lockouts(engine, admin, limited, line):
    engine.execute(admin, ".user create bob bob-passphrase viewer")
    with pytest.raises(PermissionDenied, match="a credential limited to some knowledge graphs cannot manage"):
        engine.execute(limited, line)
    assert engine.store.user("mallory") is None and engine.store.user("admin")["role"] == "admin"


def test_a_limited_key_cannot_rotate_a_key_with_more_rights(engine, admin, limited):
    engine.execute(admin, ".apikey create broad role=admin")
    with pytest.raises(CommandError, match="^Cannot rotate API key 'broad' with a credential of fewer rights"):
        engine.execute(limited, ".apikey rotate broad")
    engine.execute(limited, ".apikey create narrow kg=sales")
    assert engine.execute(limited, ".apikey rotate narrow").rows


def test_a_token_cannot_make_a_key_that_outlives_it(engine, admin, clock):
    token = secret_of(engine.execute(admin, ".token issue ttl=15m"))
    via_token = engine.authenticate(token, source="local")
    with pytest.raises(CommandError, match="expiry later than"):
        engine.execute(via_token, ".apikey create forever expires=never")
    with pytest.raises(CommandError, match="expiry later than"):
        engine.execute(via_token, ".apikey create longer expires=1h")
    engine.execute(via_token, ".apikey create short")
    assert engine.store.key("short")["expires_at"] == clock() + 15 * 60


@pytest.mark.parametrize("ending", [".apikey rotate k grace=0s", ".apikey rotate k", ".apikey revoke k"])
def test_tokens_end_with_the_key_they_came_from(engine, admin, ending):
    key = secret_of(engine.execute(admin, ".apikey create k role=admin"))
    via_key = engine.authenticate(key, source="local")
    token = secret_of(engine.execute(via_key, ".token issue"))
    via_token = engine.authenticate(token, source="local")
    engine.execute(admin, ending)
    with pytest.raises(SessionEnded):
        engine.check_session(via_token)          # what the server's sweep asks of live sessions
    with pytest.raises(SessionEnded):
        engine.execute(via_token, ".apikey create fresh role=admin")
    with pytest.raises(AuthError):
        engine.authenticate(token, source="local")
    assert engine.store.key("fresh") is None


def test_a_token_is_refused_unless_it_matches_its_stored_record(engine, admin, clock):
    engine.execute(admin, ".user create vera vera-passphrase viewer")
    vera = engine.login("vera", "vera-passphrase", source="local")
    claims = jwt.decode(secret_of(engine.execute(vera, ".token issue ttl=1m")), options={"verify_signature": False})
    clock.advance(120)                           # expired, its record not yet forgotten
    forged = {**claims, "sub": "admin", "role": "admin", "kgs": None, "exp": int(clock() + 10 * 365 * 86400)}
    with pytest.raises(AuthError):
        engine.authenticate(jwt.encode(forged, engine.store.token_secret, algorithm="HS256"), source="local")
    audit = engine.execute(admin, ".audit action=auth.token limit=1").rows[0]
    assert audit[6] == "failed" and "INVALID_TOKEN" in audit[7]


def test_issuing_a_token_reads_no_other_token(engine, admin, monkeypatch):
    for _ in range(30):
        engine.execute(admin, ".token issue")
    opened = []
    codec_open = engine.store.codec.open

    def counting_open(table, ref, blob):
        opened.append(table)
        return codec_open(table, ref, blob)
    monkeypatch.setattr(engine.store.codec, "open", counting_open)
    engine.execute(admin, ".token issue")
    assert opened.count("tokens") == 0


def test_an_unknown_user_is_verified_with_the_parameters_of_the_stored_hashes(tmp_path, cheap_config, clock):
    store = SQLiteStore(tmp_path / "data")
    try:
        first = Engine(store, cheap_config, clock=clock)
        first.bootstrap("s3cret-pass")
        first.execute(first.login("admin", "s3cret-pass", source="local"), ".user create bob bob-passphrase")
        raised = with_values(cheap_config, {"security.argon2_memory_kib": 16, "security.argon2_time_cost": 2})
        later = Engine(store, raised, clock=clock)
        with pytest.raises(AuthError):
            later.login("bob", "wrong-passphrase", source="local")
        stored = later.hasher.last_parameters
        for name in ("nobody", "alice", "root", "x" * 64):
            with pytest.raises(AuthError):
                later.login(name, "wrong-passphrase", source="local")
            assert later.hasher.last_parameters == stored
        assert stored[:3] == (8, 1, 1)
    finally:
        store.close()


@pytest.mark.parametrize("option", ["kg=*", "kg=default", "expires=never", "ips=*", "rate=none", "rate=5000/m"])
def test_a_limited_key_cannot_widen_a_key_by_altering_it(engine, admin, limited, option):
    engine.execute(limited, ".apikey create narrow")
    before = engine.store.key("narrow")
    for label in ("narrow", "limited"):
        with pytest.raises(CommandError, match="^Exceeds the limits of the credential in use"):
            engine.execute(limited, f".apikey alter {label} {option}")
    assert engine.store.key("narrow") == before
    assert engine.execute(limited, ".apikey alter narrow rate=10/m").rows
