"""Encryption at rest: nothing readable in any file, wrong keys refused untouched, tampering
detected, and rekey atomic."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import pytest

from backend.engine import Engine
from backend.errors import CommandError, StoreError
from backend.store import SQLiteStore, codec
from backend.store.codec import parse_encryption_key
from backend.store.rekey import rekey
from conftest import ADMIN_PASSWORD

KEY_HEX = secrets.token_hex(32)
KEY = bytes.fromhex(KEY_HEX)
SESSION = """.user create zebulon-user zebulon-passphrase editor
.kg create quasar-graph
.kg acl grant quasar-graph zebulon-user editor
.apikey create nebula-label role=viewer kg=quasar-graph user=zebulon-user
.user password zebulon-user zebulon-second-pass
.audit
"""
PLAINTEXTS = ["zebulon-user", "quasar-graph", "nebula-label", "$argon2", "user.create", "acl.grant",
              "auth.login", "bootstrap", "default", "admin", "zebulon-passphrase", "zebulon-second-pass"]


def files_digest(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


def test_key_formats():
    assert parse_encryption_key(KEY_HEX) == KEY
    import base64
    assert parse_encryption_key(base64.b64encode(KEY).decode()) == KEY
    for bad in ["", "abc", "00" * 31, "zz" * 32, base64.b64encode(b"x" * 16).decode()]:
        with pytest.raises(StoreError, match="64 hex digits or as base64"):
            parse_encryption_key(bad)


def test_no_plaintext_in_any_file(shell, cheap_config):
    proc = shell(SESSION, INPUTLAYER_ENCRYPTION_KEY=KEY_HEX)
    assert proc.returncode == 0, proc.stderr
    key = next(line.split("\t")[0] for line in proc.stdout.splitlines() if line.startswith("il_"))
    assert shell(".whoami\n", INPUTLAYER_API_KEY=key, INPUTLAYER_ENCRYPTION_KEY=KEY_HEX).stdout.startswith("zebulon-user")
    # Keep a connection open with an uncheckpointed change, so the WAL and shm are searched too.
    store = SQLiteStore(shell.data_dir, encryption_key=KEY)
    engine = Engine(store, cheap_config)
    admin = engine.login("admin", ADMIN_PASSWORD, source="local")
    engine.execute(admin, ".kg create pulsar-graph")
    try:
        files = [p for p in shell.data_dir.iterdir() if p.is_file()]
        assert {p.name for p in files} >= {"inputlayer.db", "inputlayer.db-wal"}
        for path in files:
            data = path.read_bytes()
            for text in PLAINTEXTS + ["pulsar-graph", key, ADMIN_PASSWORD]:
                assert text.encode() not in data, f"{text!r} readable in {path.name}"
    finally:
        store.close()


def test_missing_wrong_or_unwanted_key_exits_2_and_changes_no_byte(shell):
    assert shell(SESSION, INPUTLAYER_ENCRYPTION_KEY=KEY_HEX).returncode == 0
    before = files_digest(shell.data_dir)
    missing = shell(".whoami\n")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: the store is encrypted: set INPUTLAYER_ENCRYPTION_KEY to its key"
    wrong = shell(".whoami\n", INPUTLAYER_ENCRYPTION_KEY=secrets.token_hex(32))
    assert wrong.returncode == 2 and "wrong encryption key" in wrong.stderr
    malformed = shell(".whoami\n", INPUTLAYER_ENCRYPTION_KEY="not-a-key")
    assert malformed.returncode == 2 and "64 hex digits" in malformed.stderr
    assert files_digest(shell.data_dir) == before
    plain_dir_run = shell(".whoami\n", "--data-dir", str(shell.data_dir.parent / "plain"))
    assert plain_dir_run.returncode == 0
    unwanted = shell(".whoami\n", "--data-dir", str(shell.data_dir.parent / "plain"),
                     INPUTLAYER_ENCRYPTION_KEY=KEY_HEX)
    assert unwanted.returncode == 2 and "the store is not encrypted" in unwanted.stderr


@pytest.fixture
def sealed(tmp_path, cheap_config):
    store = SQLiteStore(tmp_path / "sealed", encryption_key=KEY)
    engine = Engine(store, cheap_config)
    engine.bootstrap(ADMIN_PASSWORD)
    admin = engine.login("admin", ADMIN_PASSWORD, source="local")
    for name in ("ann", "ben"):
        engine.execute(admin, f".user create {name} {name}-passphrase viewer")
    yield engine, admin
    store.close()


def test_swapped_sealed_values_are_detected_never_returned(sealed):
    engine, admin = sealed
    conn = engine.store.conn
    ann_ref, ben_ref = engine.store.codec.ref("user", "ann"), engine.store.codec.ref("user", "ben")
    ann, ben = (conn.execute("SELECT data FROM users WHERE ref = ?", (r,)).fetchone()[0] for r in (ann_ref, ben_ref))
    conn.execute("UPDATE users SET data = ? WHERE ref = ?", (ben, ann_ref))
    with pytest.raises(CommandError, match="failed authentication"):
        engine.execute(admin, ".user show ann")
    conn.execute("UPDATE users SET data = ? WHERE ref = ?", (ann, ann_ref))
    assert engine.execute(admin, ".user show ann").rows[0] == ["role", "viewer"]
    flipped = bytearray(ann)
    flipped[-1] ^= 1
    conn.execute("UPDATE users SET data = ? WHERE ref = ?", (bytes(flipped), ann_ref))
    with pytest.raises(CommandError, match="failed authentication"):
        engine.execute(admin, ".user list")


def test_audit_verify_reports_an_altered_sealed_record(sealed):
    engine, admin = sealed
    engine.store.conn.execute("UPDATE audit SET data = (SELECT data FROM audit WHERE seq = 2) WHERE seq = 3")
    with pytest.raises(CommandError, match="^Audit log broken at record 3: the sealed record was altered$"):
        engine.execute(admin, ".audit verify")


def test_rekey_on_off_and_to_a_new_key(shell, tmp_path):
    setup = shell(SESSION)
    key = next(line.split("\t")[0] for line in setup.stdout.splitlines() if line.startswith("il_"))
    data = shell.data_dir
    new_key = secrets.token_bytes(32)
    assert rekey(data, None, KEY) > 10
    assert b"zebulon-user" not in (data / "inputlayer.db").read_bytes()
    assert shell(".whoami\n", INPUTLAYER_API_KEY=key, INPUTLAYER_ENCRYPTION_KEY=KEY_HEX).returncode == 0
    rekey(data, KEY, new_key)
    assert shell(".whoami\n", INPUTLAYER_ENCRYPTION_KEY=KEY_HEX).returncode == 2
    ok = shell(".kg acl check quasar-graph zebulon-user\n.audit verify\n", INPUTLAYER_ENCRYPTION_KEY=new_key.hex())
    assert ok.returncode == 0 and "zebulon-user\tquasar-graph\teditor\tACL entry" in ok.stdout
    rekey(data, new_key, None)
    plain = shell(".user list\n.audit verify\n")
    assert plain.returncode == 0 and "zebulon-user" in plain.stdout
    assert shell(".whoami\n", INPUTLAYER_API_KEY=key).stdout.startswith("zebulon-user")


def test_rekey_interrupted_before_the_rename_leaves_the_old_store(shell, monkeypatch):
    shell(SESSION, INPUTLAYER_ENCRYPTION_KEY=KEY_HEX)
    before = files_digest(shell.data_dir)

    def crash(*args):
        raise OSError("power cut")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        rekey(shell.data_dir, KEY, secrets.token_bytes(32))
    monkeypatch.undo()
    assert {k: v for k, v in files_digest(shell.data_dir).items() if not k.endswith(".rekey")} == before
    assert shell(".audit verify\n", INPUTLAYER_ENCRYPTION_KEY=KEY_HEX).stdout.startswith("Audit log intact")


def test_rekey_with_the_wrong_old_key_changes_nothing(shell):
    shell(SESSION, INPUTLAYER_ENCRYPTION_KEY=KEY_HEX)
    before = files_digest(shell.data_dir)
    with pytest.raises(StoreError, match="wrong encryption key"):
        rekey(shell.data_dir, secrets.token_bytes(32), None)
    assert files_digest(shell.data_dir) == before


def test_blind_indexes_are_remembered_within_a_bound(monkeypatch):
    monkeypatch.setattr(codec, "REF_CACHE_SIZE", 3)
    key = secrets.token_bytes(32)
    remembering = codec.Codec(key)
    first = remembering.ref("user", "alice")
    assert remembering.ref("user", "alice") == first == codec.Codec(key).ref("user", "alice")
    assert remembering.ref("kg", "alice") != first            # the kind is part of the index
    assert codec.Codec(secrets.token_bytes(32)).ref("user", "alice") != first
    for name in ("bob", "carol", "dave", "erin"):
        remembering.ref("user", name)
    assert len(remembering._refs) <= 3
    assert remembering.ref("user", "alice") == first
