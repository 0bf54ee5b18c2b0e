"""What only the PostgreSQL store has: URLs and libpq conventions, the server secrets file, the
schema's version, several nodes bootstrapping and writing at once, NOTIFY, pg_dump of a sealed
store. Everything the SQLite store does is tested on both stores by the `engine` fixture."""

from __future__ import annotations

import secrets

import psycopg
import pytest
from conftest import ADMIN_PASSWORD, StoreTarget

from backend.engine import Engine
from backend.errors import AuthError, CommandError, StoreError
from backend.store.postgres.base import NOTIFY_CHANNEL
from backend.store.postgres.store import PostgresStore
from backend.store.postgres.url import redact_url

KEY = secrets.token_bytes(32)
SESSION = [".user create zebulon-user zebulon-passphrase editor", ".kg create quasar-graph",
           ".kg acl grant quasar-graph zebulon-user editor",
           ".apikey create nebula-label role=viewer kg=quasar-graph user=zebulon-user",
           ".user password zebulon-user zebulon-second-pass", ".audit"]
NAMES = ["zebulon-user", "quasar-graph", "nebula-label", "$argon2", "user.create", "acl.grant", "bootstrap"]
PASSWORDS = ["zebulon-passphrase", "zebulon-second-pass", ADMIN_PASSWORD]     # never stored, sealed or not


@pytest.fixture
def pg_engine(pg_target):
    engine = Engine(pg_target.open(), _cheap())
    engine.bootstrap(ADMIN_PASSWORD)
    return engine, engine.login("admin", ADMIN_PASSWORD, source="local")


def dump(pg_target) -> bytes:
    return pg_target.pg.pg_dump(pg_target.dbname)


def test_urls_are_shown_without_their_password():
    assert redact_url("postgresql://il:hunter2@db:5432/x?sslmode=require") == \
        "postgresql://il:****@db:5432/x?sslmode=require"
    assert redact_url("postgresql://il@db/x") == "postgresql://il@db/x"
    assert redact_url("postgres://:p%40ss@db/x") == "postgres://:****@db/x"


def test_a_wrong_password_fails_cleanly_and_is_never_shown(pg_target):
    url = pg_target.url.replace(pg_target.pg.password, "not-the-password-42")
    with pytest.raises(StoreError) as exc:
        PostgresStore(url, secret_file=str(pg_target.secret_file))
    message = str(exc.value)
    assert "not-the-password-42" not in message and "****" in message and "\n" not in message
    assert "password authentication failed" in message


def test_libpq_conventions_pgpassword_and_pgpass(pg_target, monkeypatch, tmp_path):
    bare = pg_target.pg.url(pg_target.dbname, password=False)
    monkeypatch.setenv("PGPASSWORD", pg_target.pg.password)
    PostgresStore(bare, secret_file=str(pg_target.secret_file)).close()
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_target.pg.port}:*:*:{pg_target.pg.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    PostgresStore(bare, secret_file=str(pg_target.secret_file)).close()
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(StoreError, match="password"):
        PostgresStore(bare, secret_file=str(pg_target.secret_file))


def test_the_server_secrets_file_is_required_and_must_match(pg_target, tmp_path):
    with pytest.raises(StoreError, match="INPUTLAYER_SERVER_SECRET_FILE"):
        PostgresStore(pg_target.url, secret_file=None)
    short = tmp_path / "short"
    short.write_bytes(b"x" * 31)
    with pytest.raises(StoreError, match="fewer than 32"):
        PostgresStore(pg_target.url, secret_file=str(short))
    pg_target.open().close()
    other = tmp_path / "other"
    other.write_bytes(secrets.token_bytes(64))
    with pytest.raises(StoreError, match="not this store's"):
        PostgresStore(pg_target.url, secret_file=str(other))
    assert str(pg_target.secret_file.read_bytes()[:8]) not in dump(pg_target).decode(errors="replace")


def test_a_newer_schema_is_refused_untouched(pg_target):
    pg_target.open().close()
    with psycopg.connect(pg_target.url, autocommit=True) as conn:
        conn.execute("""UPDATE inputlayer.meta SET data = '{"version": 99, "encrypted": false, "key_id": ""}'
                        WHERE name = 'format'""")
    before = dump(pg_target)
    with pytest.raises(StoreError, match="format version 99, this program reads version 1"):
        pg_target.open()
    assert dump(pg_target) == before


def test_a_foreign_schema_of_the_same_name_is_refused_untouched(pg_target):
    with psycopg.connect(pg_target.url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA inputlayer")
        conn.execute("CREATE TABLE inputlayer.accounts (id int)")
    before = dump(pg_target)
    with pytest.raises(StoreError, match="not an InputLayer store"):
        pg_target.open()
    assert dump(pg_target) == before


def _cheap():
    from conftest import CHEAP_ARGON2

    from backend.config import Config, with_values

    return with_values(Config(), CHEAP_ARGON2)


def test_encrypted_store_shows_nothing_in_pg_dump(pg_server, tmp_path):
    def run_session(encryption_key):
        pg_target = StoreTarget("postgresql", tmp_path / ("sealed" if encryption_key else "plain"), pg_server)
        engine = Engine(pg_target.open(encryption_key=encryption_key), _cheap())
        engine.bootstrap(ADMIN_PASSWORD)
        admin = engine.login("admin", ADMIN_PASSWORD, source="local")
        for line in SESSION:
            engine.execute(admin, line)
        text = dump(pg_target).decode(errors="replace")
        pg_target.close()
        return text

    plain = run_session(None)
    assert [word for word in NAMES if word not in plain] == []      # the check sees names that are there
    assert [word for word in PASSWORDS if word in plain] == []
    sealed = run_session(KEY)
    assert [word for word in NAMES + PASSWORDS if word in sealed] == [], "readable in pg_dump"


def test_wrong_or_missing_key_is_refused_untouched(pg_target):
    Engine(pg_target.open(encryption_key=KEY), _cheap()).bootstrap(ADMIN_PASSWORD)
    before = dump(pg_target)
    with pytest.raises(StoreError, match="the store is encrypted"):
        pg_target.open()
    with pytest.raises(StoreError, match="wrong encryption key"):
        pg_target.open(encryption_key=secrets.token_bytes(32))
    assert dump(pg_target) == before


def test_each_change_notifies_in_its_own_transaction(pg_engine, pg_target):
    engine, admin = pg_engine
    with psycopg.connect(pg_target.url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        engine.execute(admin, ".user create nia nia-passphrase viewer")
        with pytest.raises(AuthError):
            engine.login("nia", "wrong-passphrase", source="local")        # an audit record only
        engine.begin_batch(atomic=True)
        engine.execute(admin, ".kg create never")
        engine.end_batch(False)                                           # rolled back: no NOTIFY
        engine.execute(admin, ".kg acl grant default nia editor")
        with engine.store.read():
            now = engine.store.data_version()
        payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]
        # Each names the generation it committed: the two changes were the last two.
        assert payloads == [f"{now - 1} users", f"{now} acl"]
        assert list(listener.notifies(timeout=0.2)) == []


def test_a_statement_failing_mid_command_leaves_nothing_behind(pg_engine):
    engine, admin = pg_engine
    conn = engine.store.conn
    conn.execute("""CREATE FUNCTION inputlayer.refuse() RETURNS trigger LANGUAGE plpgsql AS
                    $$ BEGIN RAISE EXCEPTION 'disk full (simulated)'; END $$""")
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON inputlayer.audit FOR EACH ROW "
                 "EXECUTE FUNCTION inputlayer.refuse()")
    with pytest.raises(CommandError) as exc:
        engine.execute(admin, ".user create fil fil-passphrase viewer")
    assert exc.value.message == ("The store could not complete the command: cannot write to the store: "
                                 "disk full (simulated). Nothing was changed.")
    conn.execute("DROP TRIGGER refuse ON inputlayer.audit")
    with engine.store.read():
        assert engine.store.user("fil") is None
        assert engine.store.verify_audit()[1] is None
    assert engine.execute(admin, ".user create fil fil-passphrase viewer").rows


def test_connections_the_server_dropped_are_replaced_by_themselves(pg_engine, pg_target):
    engine, admin = pg_engine
    engine.execute(admin, ".user list")                       # a pooled reader and the writer, both in use
    with psycopg.connect(pg_target.url, autocommit=True) as killer:
        killed = killer.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
    assert killed is not None and killed[0] >= 2
    assert engine.execute(admin, ".user create ola ola-passphrase viewer").rows
    assert "ola" in [row[0] for row in engine.execute(admin, ".user list").rows]


def test_a_damaged_store_fails_a_command_with_one_clear_line(pg_engine):
    engine, admin = pg_engine
    engine.store.conn.execute("DROP TABLE inputlayer.generation")
    with pytest.raises(CommandError) as exc:
        engine.execute(admin, ".user list")
    assert exc.value.message == ('The store could not complete the command: cannot read the store: '
                                 'relation "generation" does not exist. Nothing was changed.')


def test_a_failed_rekey_leaves_the_store_under_its_old_key(pg_engine, pg_target, monkeypatch):
    engine, admin = pg_engine
    engine.execute(admin, ".user create ria ria-passphrase viewer")
    before = dump(pg_target)

    def broken(self, rows):
        raise StoreError("disk full (simulated)")
    monkeypatch.setattr(PostgresStore, "import_rows", broken)
    with pytest.raises(StoreError, match="simulated"):
        engine.store.rekey(KEY)
    monkeypatch.undo()
    assert dump(pg_target) == before
    assert "ria" in [row[0] for row in engine.execute(admin, ".user list").rows]    # and it still works


def test_replacing_the_secrets_ends_tokens_keeps_keys_and_rechains_the_audit_log(pg_engine, pg_target):
    from backend.store.secrets import ServerSecrets

    engine, admin = pg_engine
    key = engine.execute(admin, ".apikey create survivor").rows[0][0]
    token = engine.execute(admin, ".token issue").rows[0][0]
    store = engine.store
    new = ServerSecrets.generate(hmac=store.secrets.hmac)          # digests of keys stay valid
    with store.write():
        store.replace_secrets(new)
    assert engine.authenticate(key, source="local").username == "admin"
    with pytest.raises(AuthError):
        engine.authenticate(token, source="local")
    assert engine.execute(admin, ".audit verify").rows[0][0].startswith("Audit log intact")
    store.close()
    with pytest.raises(StoreError, match="not this store's"):
        pg_target.open()                          # the old file no longer matches the store


def test_a_writer_never_acts_on_a_row_another_node_changed_since(pg_engine, pg_target):
    """The writer keeps the rows it read from one transaction to the next only while no other
    commit changed a row: a role another node lowered is the one this node's next change sees."""
    engine, admin = pg_engine
    engine.execute(admin, ".user create nia nia-passphrase admin")
    nia = engine.login("nia", "nia-passphrase", source="local")
    engine.execute(nia, ".kg create first")                    # nia's row, read by this writer
    other = Engine(pg_target.open(), _cheap())
    try:
        other.execute(other.login("admin", ADMIN_PASSWORD, source="local"), ".user role nia viewer")
    finally:
        other.store.close()
    with engine.store.write():
        assert engine.store.user("nia")["role"] == "viewer"
