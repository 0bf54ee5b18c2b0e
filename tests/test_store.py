"""The store: permissions, refusing foreign or corrupt files, the audit chain, two processes."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backend.errors import AuthError, CommandError, StoreError
from backend.store import SQLiteStore
from backend.store.sqlite import DEFERRED_WRITES_MAX
from conftest import ADMIN_PASSWORD, ROOT, cli_env


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_owner_only_permissions(sqlite_engine):
    engine = sqlite_engine
    engine.execute(engine.login("admin", ADMIN_PASSWORD, source="local"), ".user create pat pat-passphrase")
    data = engine.store.dir
    assert mode(data) == 0o700
    files = list(data.iterdir())
    assert {f.name for f in files} >= {"inputlayer.db", "inputlayer.db-wal"}
    assert all(mode(f) == 0o600 for f in files), {f.name: oct(mode(f)) for f in files}


def test_wal_and_full_sync(sqlite_engine):
    engine = sqlite_engine
    assert engine.store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert engine.store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2   # FULL


def test_foreign_and_corrupt_files_are_refused_untouched(tmp_path):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "inputlayer.db").write_bytes(b"this is not a database" * 100)
    before = (garbage / "inputlayer.db").read_bytes()
    with pytest.raises(StoreError, match="not a valid database"):
        SQLiteStore(garbage)
    assert (garbage / "inputlayer.db").read_bytes() == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    conn = sqlite3.connect(foreign / "inputlayer.db")
    conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.commit()
    conn.close()
    before = (foreign / "inputlayer.db").read_bytes()
    with pytest.raises(StoreError, match="not an InputLayer store"):
        SQLiteStore(foreign)
    assert (foreign / "inputlayer.db").read_bytes() == before


@pytest.fixture
def audited(engine, admin):
    for name in ("a1", "a2", "a3"):
        engine.execute(admin, f".user create {name} {name}-passphrase")
    assert audit_intact(engine, admin)
    return engine, admin


def audit_intact(engine, admin) -> bool:
    return engine.execute(admin, ".audit verify").rows[0][0].startswith("Audit log intact")


def tamper(engine, sql):
    engine.store.conn.execute(sql)


# Rewrite a field of audit record 4 in place, as someone with write access to the database could.
EDIT_RECORD_4 = {
    "sqlite": "UPDATE audit SET data = json_set(data, '$[8]', 'role=admin') WHERE seq = 4",
    "postgresql": "UPDATE audit SET data = jsonb_set(data::jsonb, '{8}', '\"role=admin\"')::text WHERE seq = 4",
}


def verify_error(engine, admin):
    with pytest.raises(CommandError) as exc:
        engine.execute(admin, ".audit verify")
    return exc.value.message


def test_audit_detects_an_edited_record(audited, store_target):
    engine, admin = audited
    # A record is [prev_hash, seq, time, actor, source, action, target, outcome, detail, hash].
    tamper(engine, EDIT_RECORD_4[store_target.kind])
    assert verify_error(engine, admin) == "Audit log broken at record 4: contents do not match its hash"


def test_audit_detects_a_deleted_record(audited):
    engine, admin = audited
    tamper(engine, "DELETE FROM audit WHERE seq = 3")
    assert verify_error(engine, admin).startswith("Audit log broken at record 3:")


def test_audit_detects_reordered_records(audited):
    engine, admin = audited
    tamper(engine, "UPDATE audit SET seq = -seq WHERE seq IN (4, 5)")
    tamper(engine, "UPDATE audit SET seq = 5 WHERE seq = -4")
    tamper(engine, "UPDATE audit SET seq = 4 WHERE seq = -5")
    assert verify_error(engine, admin).startswith("Audit log broken at record 4:")


def test_audit_detects_removed_latest_records(audited):
    engine, admin = audited
    last = engine.store.conn.execute("SELECT max(seq) FROM audit").fetchone()[0]
    tamper(engine, f"DELETE FROM audit WHERE seq = {last}")
    assert "latest records were removed" in verify_error(engine, admin)


def test_audit_holds_no_secret(audited):
    engine, admin = audited
    dump = "\n".join(str(tuple(r)) for r in engine.store.conn.execute("SELECT * FROM audit"))
    assert "a1-passphrase" not in dump and ADMIN_PASSWORD not in dump and "$argon2" not in dump


WRITER = """
import sys
from backend.config import Config, with_values
from backend.engine import Engine
kind, where, secret_file, password, tag = sys.argv[1:]
if kind == "sqlite":
    from backend.store import SQLiteStore
    store = SQLiteStore(where)
else:
    from backend.store.postgres.store import PostgresStore
    store = PostgresStore(where, secret_file=secret_file)
cfg = with_values(Config(), {"security.argon2_memory_kib": 8, "security.argon2_time_cost": 1})
engine = Engine(store, cfg)
session = engine.login("admin", password, source="local")
for i in range(60):
    engine.execute(session, f".kg create {tag}-{i}")
print("done", flush=True)
"""


def writer_args(target) -> list[str]:
    where = str(target.data_dir) if target.kind == "sqlite" else target.url
    return [sys.executable, "-c", WRITER, target.kind, where, str(target.secret_file), ADMIN_PASSWORD]


def test_two_processes_writing_at_once_lose_nothing(store_target, cheap_config):
    from backend.engine import Engine

    store = store_target.open()
    Engine(store, cheap_config).bootstrap(ADMIN_PASSWORD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([*writer_args(store_target), tag], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for tag in ("p", "q")]
    for proc in procs:
        out, errs = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == b"done", errs.decode()[-2000:]
    with store.read():
        names = {r["name"] for r in store.kgs()}
    assert {f"{t}-{i}" for t in "pq" for i in range(60)} <= names
    if store_target.kind == "sqlite":
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with store.read():
        assert store.verify_audit()[1] is None


def test_a_change_in_one_process_is_seen_by_the_others_next_command(engine, admin, config_file, store_target):
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, **store_target.cli_env())
    proc = subprocess.run([sys.executable, "-m", "repl", *store_target.cli_args(),
                           "-c", ".user create from-outside outside-passphrase"],
                          env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "from-outside" in [r[0] for r in engine.execute(admin, ".user list").rows]


def test_closing_while_another_thread_reads_is_safe(engine, admin):
    """A reader connection is closed only when no thread is reading on it (closing one in use
    crashes the interpreter); a read after close fails with a clear error."""
    import threading

    started, release = threading.Event(), threading.Event()
    seen = []

    def reader():
        with engine.store.read():
            started.set()
            release.wait(5)
            seen.append(len(engine.store.users()))

    thread = threading.Thread(target=reader)
    thread.start()
    started.wait(5)
    closer = threading.Thread(target=engine.store.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()            # waits for the reading thread
    release.set()
    thread.join(5)
    closer.join(5)
    assert seen == [1] and not closer.is_alive()
    with pytest.raises(StoreError, match="the store is closed"):
        with engine.store.read():
            pass


def test_a_readers_cache_never_serves_a_row_another_connection_changed(engine, admin, cheap_config, store_target):
    from backend.engine import Engine as OtherEngine

    engine.execute(admin, ".user create ria ria-passphrase viewer")
    engine.execute(admin, ".kg acl grant default ria viewer")
    for _ in range(2):                                   # the second read is served from the cache
        with engine.store.read():
            assert engine.store.user("ria")["role"] == "viewer"
            assert engine.store.acl_entry("default", "ria")["role"] == "viewer"
    other = store_target.open()                          # as another process would
    try:
        elsewhere = OtherEngine(other, cheap_config)
        session = elsewhere.login("admin", ADMIN_PASSWORD, source="local")
        elsewhere.execute(session, ".user role ria editor")
        elsewhere.execute(session, ".kg acl grant default ria owner")
    finally:
        other.close()
    with engine.store.read():
        assert engine.store.user("ria")["role"] == "editor"
        assert engine.store.acl_entry("default", "ria")["role"] == "owner"
    other = store_target.open()
    try:
        elsewhere = OtherEngine(other, cheap_config)
        session = elsewhere.login("admin", ADMIN_PASSWORD, source="local")
        elsewhere.execute(session, ".kg acl revoke default ria")     # a delete, not an update
    finally:
        other.close()
    with engine.store.read():
        assert engine.store.acl_entry("default", "ria") is None


def test_a_commit_that_only_appends_audit_records_keeps_readers_caches(engine, admin):
    engine.execute(admin, ".user create ria ria-passphrase viewer")
    with engine.store.read():
        cached = engine.store.user("ria")
    with pytest.raises(AuthError):
        engine.login("ria", "wrong-passphrase", source="local")          # commits a `failed` record
    with engine.store.read():
        assert engine.store.user("ria") is cached
    engine.execute(admin, ".user role ria editor")
    with engine.store.read():
        assert engine.store.user("ria")["role"] == "editor"


def audit_count(engine) -> int:
    with engine.store.read():
        return len(engine.store.audit_records(limit=10**6, actor=None, action=None, since=None))


def ria_on_sales(engine) -> str | None:
    """ria's role on sales as the store holds it (None: no entry)."""
    with engine.store.read():
        entry = engine.store.acl_entry("sales", "ria")
    return entry and entry["role"]


@pytest.fixture
def granting(engine, admin):
    engine.execute(admin, ".user create ria ria-passphrase viewer")
    engine.execute(admin, ".kg create sales")
    return engine, admin


def test_an_atomic_batch_reads_its_held_back_writes_and_keeps_their_order(granting):
    engine, admin = granting
    before = audit_count(engine)
    engine.begin_batch(atomic=True)
    for _ in range(DEFERRED_WRITES_MAX + 1):        # more than one run of held-back writes
        engine.execute(admin, ".kg acl grant sales ria viewer")
    engine.execute(admin, ".kg acl revoke sales ria")
    engine.execute(admin, ".kg acl grant sales ria owner")
    # The last grant and its audit record are still held back: the check must run them first.
    assert engine.execute(admin, ".kg acl check sales ria").rows == [["ria", "sales", "owner", "ACL entry"]]
    engine.execute(admin, ".kg acl grant sales ria editor")
    engine.end_batch(True)
    assert ria_on_sales(engine) == "editor"
    assert audit_count(engine) == before + DEFERRED_WRITES_MAX + 4
    assert audit_intact(engine, admin)


def test_a_rolled_back_atomic_batch_leaves_nothing_of_its_held_back_writes(granting):
    engine, admin = granting
    before = audit_count(engine)
    engine.begin_batch(atomic=True)
    engine.execute(admin, ".kg acl grant sales ria editor")
    engine.end_batch(False)
    engine.execute(admin, ".user create tom tom-passphrase")     # the next change carries none of them
    assert ria_on_sales(engine) is None
    assert audit_count(engine) == before + 1
    assert audit_intact(engine, admin)


def test_a_held_back_write_that_fails_when_it_runs_changes_nothing(granting):
    engine, admin = granting
    before = audit_count(engine)
    engine.begin_batch(atomic=True)
    engine.execute(admin, ".kg acl grant sales ria editor")
    with engine.store.write():
        # No such user: the foreign key refuses the row, but only once it runs, at the commit.
        engine.store.grant("sales", "ghost", "viewer", "admin", 0.0)
    with pytest.raises(StoreError, match="(?i)foreign key"):
        engine.end_batch(True)
    assert ria_on_sales(engine) is None
    assert audit_count(engine) == before
    engine.execute(admin, ".kg acl grant sales ria viewer")      # and the store goes on working
    assert audit_intact(engine, admin)


def test_a_held_back_write_that_fails_when_a_read_sends_it_commits_nothing(granting, store_target):
    """A read inside the batch sends the held writes; one fails there, the read says so, and
    the batch then refuses to commit rather than (as PostgreSQL answers COMMIT after a failure)
    roll back silently."""
    if store_target.kind == "sqlite":
        pytest.skip("SQLite's engine wraps its driver's errors itself (see the test above)")
    engine, admin = granting
    before = audit_count(engine)
    engine.begin_batch(atomic=True)
    engine.execute(admin, ".kg acl grant sales ria editor")
    with engine.store.write():
        engine.store.grant("sales", "ghost", "viewer", "admin", 0.0)
    with pytest.raises(StoreError, match="(?i)foreign key"), engine.store.read():
        engine.store.data_version()
    with pytest.raises(StoreError):
        engine.end_batch(True)
    assert ria_on_sales(engine) is None
    assert audit_count(engine) == before
    engine.execute(admin, ".kg acl grant sales ria viewer")      # and the store goes on working
    assert audit_intact(engine, admin)
