"""Server secrets live outside the database: a copy of it cannot sign a token or re-chain the
audit log; rotate-secrets; and the upgrade of a version-2 store, whose secrets were inside."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import stat
from pathlib import Path

import jwt
import psycopg
import pytest

from backend.engine import Engine
from backend.engine.keys import key_digest, new_api_key
from backend.engine.passwords import PasswordHasher
from backend.errors import AuthError, CommandError, StoreError
from backend.store import SQLiteStore
from backend.store.rotate import rotate_secrets
from conftest import ADMIN_PASSWORD, cli_env, run_cli


def secret_of(result):
    return result.rows[0][0]


def database_candidates(target) -> set[bytes]:
    """Every value a copy of the database could offer as a key: each 64-hex-digit run in its
    files, or its pg_dump (as text and as bytes), and each string stored in `meta`."""
    if target.kind == "sqlite":
        db = target.data_dir / "inputlayer.db"
        raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
        with sqlite3.connect(db) as conn:
            meta = [data for (data,) in conn.execute("SELECT data FROM meta")]
    else:
        raw = target.pg.pg_dump(target.dbname)
        with psycopg.connect(target.url) as conn:
            meta = [data for (data,) in conn.execute("SELECT data FROM inputlayer.meta")]
    found: set[bytes] = set()
    for run in set(re.findall(rb"[0-9a-f]{64}", raw)):
        found |= {run, bytes.fromhex(run.decode())}
    for data in meta:
        found |= {s.encode() for s in re.findall(r'"([^"]+)"', str(data))}
    return found


# Rewrite the chain's head (seq, hash) in place, as someone with write access to the tables could.
SET_HEAD = {
    "sqlite": "UPDATE meta SET data = json_set(data, '$.seq', ?, '$.hash', ?) WHERE name = 'audit_head'",
    "postgresql": "UPDATE meta SET data = jsonb_set(jsonb_set(data::jsonb, '{seq}', to_jsonb(%s::int)), "
                  "'{hash}', to_jsonb(%s::text))::text WHERE name = 'audit_head'",
}


def marked(sql: str, kind: str) -> str:
    """`sql` with the driver's placeholder: `?` for sqlite3, `%s` for psycopg."""
    return sql if kind == "sqlite" else sql.replace("?", "%s")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_a_copy_of_the_database_holds_nothing_that_signs_or_forges_a_token(engine, admin, clock, store_target):
    engine.execute(admin, ".user create vera vera-passphrase viewer")
    vera = engine.login("vera", "vera-passphrase", source="local")
    genuine = secret_of(engine.execute(vera, ".token issue ttl=1m"))
    claims = jwt.decode(genuine, options={"verify_signature": False})
    clock.advance(120)
    forged = {**claims, "sub": "admin", "role": "admin", "kgs": None, "exp": int(clock() + 10 * 365 * 86400)}
    candidates = database_candidates(store_target)
    assert candidates
    for candidate in candidates:
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(genuine, candidate, algorithms=["HS256"], options={"verify_exp": False})
        with pytest.raises(AuthError):
            engine.authenticate(jwt.encode(forged, candidate, algorithm="HS256"), source="local")


def test_the_secrets_file_is_owner_only_and_sealed_when_the_store_is_encrypted(tmp_path):
    key = bytes(range(32))
    store = SQLiteStore(tmp_path / "sealed", encryption_key=key)
    secrets_file = store.secrets_file
    held = store.secrets
    store.close()
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    raw = secrets_file.read_bytes()
    assert held.token.hex().encode() not in raw and b"token" not in raw and held.audit not in raw
    with pytest.raises(StoreError, match="wrong encryption key"):
        SQLiteStore(tmp_path / "sealed", encryption_key=bytes(32))
    reopened = SQLiteStore(tmp_path / "sealed", encryption_key=key)
    assert reopened.secrets == held
    reopened.close()


def test_a_store_refuses_a_missing_or_foreign_secrets_file(tmp_path):
    SQLiteStore(tmp_path / "one").close()
    SQLiteStore(tmp_path / "two").close()
    (tmp_path / "one" / "secrets").replace(tmp_path / "kept")
    with pytest.raises(StoreError, match="secrets file .* is missing"):
        SQLiteStore(tmp_path / "one")
    (tmp_path / "two" / "secrets").rename(tmp_path / "one" / "secrets")
    with pytest.raises(StoreError, match="does not belong to this store"):
        SQLiteStore(tmp_path / "one")


@pytest.fixture
def audited(engine, admin):
    for name in ("a1", "a2", "a3", "a4"):
        engine.execute(admin, f".user create {name} {name}-passphrase")
    assert engine.execute(admin, ".audit verify").rows[0][0].startswith("Audit log intact")
    return engine, admin


def verify_error(engine, admin) -> str:
    with pytest.raises(CommandError) as exc:
        engine.execute(admin, ".audit verify")
    return exc.value.message


def rewrite_chain(conn, key: bytes | None, kind: str) -> None:
    """Edit a record and re-chain the whole log as an attacker with a copy of the database
    could: with plain SHA-256 (None, what version 2 did) or an HMAC under a candidate key."""
    import hmac as hmac_module
    prev = "0" * 64
    rows = conn.execute("SELECT seq, data FROM audit ORDER BY seq").fetchall()
    for seq, data in rows:
        record = json.loads(data)
        record[0] = prev
        if seq == 2:
            record[8] = "role=viewer; nothing to see"
        body = json.dumps(record[:-1], separators=(",", ":"), ensure_ascii=False).encode()
        prev = hashlib.sha256(body).hexdigest() if key is None else hmac_module.new(key, body, "sha256").hexdigest()
        record[-1] = prev
        conn.execute(marked("UPDATE audit SET data = ? WHERE seq = ?", kind),
                     (json.dumps(record, separators=(",", ":"), ensure_ascii=False), seq))
    conn.execute(SET_HEAD[kind], (rows[-1][0], prev))


def test_an_audit_log_rechained_from_a_copy_of_the_database_fails_verification(audited, store_target):
    engine, admin = audited
    keys: list[bytes | None] = [None, *sorted(database_candidates(store_target))]
    for key in keys:
        rewrite_chain(engine.store.conn, key, store_target.kind)
        assert "Audit log broken" in verify_error(engine, admin)


def test_cutting_the_newest_audit_records_and_rewriting_the_head_fails_verification(audited, store_target):
    engine, admin = audited
    conn, kind = engine.store.conn, store_target.kind
    last = conn.execute("SELECT max(seq) FROM audit").fetchone()[0]
    kept = json.loads(conn.execute(marked("SELECT data FROM audit WHERE seq = ?", kind), (last - 2,)).fetchone()[0])
    conn.execute(marked("DELETE FROM audit WHERE seq > ?", kind), (last - 2,))
    conn.execute(SET_HEAD[kind], (last - 2, kept[-1]))
    assert verify_error(engine, admin) == f"Audit log broken at record {last - 2}: the chain's head was rewritten"


def test_rotate_secrets_ends_every_token_keeps_keys_and_the_chain_verifies(tmp_path, cheap_config, config_file):
    data = tmp_path / "data"
    store = SQLiteStore(data)
    engine = Engine(store, cheap_config)
    engine.bootstrap(ADMIN_PASSWORD)
    admin = engine.login("admin", ADMIN_PASSWORD, source="local")
    key = secret_of(engine.execute(admin, ".apikey create survivor"))
    token = secret_of(engine.execute(admin, ".token issue"))
    before = store.secrets
    store.close()
    done = run_cli(["rotate-secrets", "--data-dir", str(data)], env=cli_env(config_file), program="backend")
    assert done.returncode == 0, done.stderr
    assert b"every token ended" in done.stdout
    store = SQLiteStore(data)
    try:
        after = store.secrets
        assert after.hmac == before.hmac and after.token != before.token and after.audit != before.audit
        assert not (data / "secrets.new").exists()
        engine = Engine(store, cheap_config)
        with pytest.raises(AuthError):
            engine.authenticate(token, source="local")
        via_key = engine.authenticate(key, source="local")
        verified = engine.execute(via_key, ".audit verify").rows[0][0]
        assert verified.startswith("Audit log intact")
        assert engine.execute(via_key, ".audit action=secrets.rotate").rows[0][2] == "system"
    finally:
        store.close()


def test_an_interrupted_rotation_is_finished_when_the_store_opens(tmp_path, monkeypatch):
    from backend.store import rotate

    SQLiteStore(tmp_path / "d").close()

    def power_cut(*args):
        raise OSError("power cut")
    monkeypatch.setattr(rotate, "promote_pending", power_cut)   # after the commit, before the rename
    with pytest.raises(OSError, match="power cut"):
        rotate_secrets(tmp_path / "d", None)
    assert (tmp_path / "d" / "secrets.new").exists()
    store = SQLiteStore(tmp_path / "d")
    assert not (tmp_path / "d" / "secrets.new").exists()
    assert store.verify_audit()[1] is None
    assert store.verify_audit()[0] == 1
    store.close()


def test_rotate_secrets_refuses_while_another_process_has_the_store_open(tmp_path):
    held = SQLiteStore(tmp_path / "d")
    before = held.secrets
    try:
        with pytest.raises(StoreError, match="in use by another process"):
            rotate_secrets(tmp_path / "d", None)
    finally:
        held.close()
    reopened = SQLiteStore(tmp_path / "d")
    assert reopened.secrets == before
    reopened.close()


def test_a_failed_rotation_changes_nothing(tmp_path, monkeypatch):
    SQLiteStore(tmp_path / "d").close()
    before = (tmp_path / "d" / "secrets").read_bytes()

    def broken(self):
        raise StoreError("disk full")
    monkeypatch.setattr(SQLiteStore, "_rechain", broken)
    with pytest.raises(StoreError, match="disk full"):
        rotate_secrets(tmp_path / "d", None)
    assert not (tmp_path / "d" / "secrets.new").exists()
    assert (tmp_path / "d" / "secrets").read_bytes() == before
    store = SQLiteStore(tmp_path / "d")
    assert store.verify_audit() == (0, None)
    store.close()


# --- the upgrade from version 2 (secrets in `meta`, unkeyed chain, no ids) -------------------

V2_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, data) WITHOUT ROWID;
CREATE TABLE users (ref TEXT PRIMARY KEY, data NOT NULL) WITHOUT ROWID;
CREATE TABLE kgs (ref TEXT PRIMARY KEY, data NOT NULL) WITHOUT ROWID;
CREATE TABLE acl (kg_ref TEXT NOT NULL REFERENCES kgs(ref) ON DELETE CASCADE,
    user_ref TEXT NOT NULL REFERENCES users(ref) ON DELETE CASCADE, data NOT NULL,
    PRIMARY KEY (kg_ref, user_ref)) WITHOUT ROWID;
CREATE INDEX acl_by_user ON acl(user_ref);
CREATE TABLE api_keys (id INTEGER PRIMARY KEY AUTOINCREMENT, label_ref TEXT NOT NULL UNIQUE,
    owner_ref TEXT NOT NULL REFERENCES users(ref) ON DELETE CASCADE, digest_ref TEXT UNIQUE,
    prev_digest_ref TEXT UNIQUE, data NOT NULL);
CREATE INDEX api_keys_by_owner ON api_keys(owner_ref);
CREATE TABLE api_key_kgs (key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    kg_ref TEXT NOT NULL REFERENCES kgs(ref) ON DELETE CASCADE, PRIMARY KEY (key_id, kg_ref)) WITHOUT ROWID;
CREATE INDEX api_key_kgs_by_kg ON api_key_kgs(kg_ref);
CREATE TABLE tokens (ref TEXT PRIMARY KEY, data NOT NULL) WITHOUT ROWID;
CREATE TABLE audit (seq INTEGER PRIMARY KEY, data NOT NULL);
"""


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def make_v2_store(data: Path, password_hash: str, encryption_key: bytes | None = None) -> tuple[str, str]:
    """A version-2 store as that version wrote it (plain, or sealed under `encryption_key`);
    returns (an API key, the HMAC secret)."""
    from backend.store.codec import Codec

    codec = Codec(encryption_key)
    data.mkdir(mode=0o700)
    hmac_hex, token_hex = "ab" * 32, "cd" * 32
    key = new_api_key()
    conn = sqlite3.connect(data / "inputlayer.db", isolation_level=None)
    conn.executescript(V2_SCHEMA)
    conn.execute("PRAGMA application_id = 1229734212")
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO meta VALUES ('format', ?)",
                 (json.dumps({"encrypted": codec.encrypted, "key_id": codec.key_id}),))
    admin_ref, default_ref = codec.ref("user", "admin"), codec.ref("kg", "default")
    conn.execute("INSERT INTO users VALUES (?, ?)", (admin_ref, codec.seal("users", admin_ref, {
        "name": "admin", "role": "admin", "password_hash": password_hash, "password_version": 1,
        "created_at": 1.0, "last_login_at": None})))
    conn.execute("INSERT INTO kgs VALUES (?, ?)", (default_ref, codec.seal("kgs", default_ref, {
        "name": "default", "created_at": 1.0, "created_by": "admin"})))
    digest = key_digest(hmac_hex.encode(), key)
    conn.execute("INSERT INTO api_keys VALUES (1, ?, ?, ?, NULL, ?)", (
        codec.ref("label", "old-key"), admin_ref, codec.ref("digest", digest), codec.seal("api_keys", "1", {
            "label": "old-key", "owner": "admin", "role": "admin", "scoped": False, "digest": digest,
            "prev_digest": None, "prev_valid_until": None, "created_at": 1.0, "expires_at": None,
            "last_used_at": None, "revoked_at": None, "ips": [], "rate": None})))
    token_ref = codec.ref("token", "jti-1")
    conn.execute("INSERT INTO tokens VALUES (?, ?)", (token_ref, codec.seal("tokens", token_ref, {
        "jti": "jti-1", "username": "admin", "issued_at": 1.0, "expires_at": 9e9, "revoked_at": None})))
    prev = "0" * 64
    for seq, action in enumerate(("user.create", "kg.create", "apikey.create"), 1):
        body = dumps([prev, seq, 1.0, "system", "bootstrap", action, "x", "ok", ""])
        prev = hashlib.sha256(body.encode()).hexdigest()
        conn.execute("INSERT INTO audit VALUES (?, ?)", (seq, codec.seal_text("audit", str(seq), f'{body[:-1]},"{prev}"]')))
    for name, value in (("secrets", {"hmac": hmac_hex, "token": token_hex}), ("audit_head", {"seq": 3, "hash": prev})):
        conn.execute("INSERT INTO meta VALUES (?, ?)", (name, codec.seal("meta", name, value)))
    conn.close()
    return key, hmac_hex


@pytest.mark.parametrize("encryption_key", [None, bytes(range(32))], ids=["plain", "encrypted"])
def test_a_version_2_store_is_upgraded_on_open_and_its_keys_keep_working(tmp_path, cheap_config, encryption_key):
    data = tmp_path / "old"
    key, hmac_hex = make_v2_store(data, PasswordHasher(cheap_config.security).hash(ADMIN_PASSWORD), encryption_key)
    store = SQLiteStore(data, encryption_key=encryption_key)
    try:
        engine = Engine(store, cheap_config)
        via_key = engine.authenticate(key, source="local")
        assert engine.execute(via_key, ".audit verify").rows[0][0] == "Audit log intact: 5 records."
        upgrade = engine.execute(via_key, ".audit action=store.upgrade").rows[0]
        assert "3 records verified" in upgrade[7]
        assert engine.login("admin", ADMIN_PASSWORD, source="local").user_id
        assert store.key("old-key")["owner_id"] == store.user("admin")["id"]
        assert store.token("jti-1") is None
        assert store.conn.execute("SELECT count(*) FROM meta WHERE name = 'secrets'").fetchone()[0] == 0
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == 3
    finally:
        store.close()
    assert stat.S_IMODE((data / "secrets").stat().st_mode) == 0o600
    assert hmac_hex.encode() not in (data / "inputlayer.db").read_bytes()
    assert (hmac_hex.encode().hex().encode() in (data / "secrets").read_bytes()) == (encryption_key is None)
    reopened = SQLiteStore(data, encryption_key=encryption_key)    # once upgraded, it opens as version 3
    assert reopened.verify_audit() == (6, None)
    reopened.close()
