"""What only the PostgreSQL store has: URLs and libpq conventions, the server secrets file, the
schema's version, several nodes bootstrapping and writing at once, NOTIFY, pg_dump of a sealed
store. Everything the SQLite store does is tested on both stores by the `engine` fixture."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import psycopg
import pytest
from conftest import ADMIN_PASSWORD, ROOT, StoreTarget

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
def target(pg_server, tmp_path):
    t = StoreTarget("postgresql", tmp_path, pg_server)
    yield t
    t.close()


@pytest.fixture
def pg_engine(target):
    engine = Engine(target.open(), _cheap())
    engine.bootstrap(ADMIN_PASSWORD)
    return engine, engine.login("admin", ADMIN_PASSWORD, source="local")


def dump(target) -> bytes:
    return target.pg.pg_dump(target.dbname)


def test_urls_are_shown_without_their_password():
    assert redact_url("postgresql://il:hunter2@db:5432/x?sslmode=require") == \
        "postgresql://il:****@db:5432/x?sslmode=require"
    assert redact_url("postgresql://il@db/x") == "postgresql://il@db/x"
    assert redact_url("postgres://:p%40ss@db/x") == "postgres://:****@db/x"


def test_a_wrong_password_fails_cleanly_and_is_never_shown(target):
    url = target.url.replace(target.pg.password, "not-the-password-42")
    with pytest.raises(StoreError) as exc:
        PostgresStore(url, secret_file=str(target.secret_file))
    message = str(exc.value)
    assert "not-the-password-42" not in message and "****" in message and "\n" not in message
    assert "password authentication failed" in message


def test_libpq_conventions_pgpassword_and_pgpass(target, monkeypatch, tmp_path):
    bare = target.pg.url(target.dbname, password=False)
    monkeypatch.setenv("PGPASSWORD", target.pg.password)
    PostgresStore(bare, secret_file=str(target.secret_file)).close()
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{target.pg.port}:*:*:{target.pg.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    PostgresStore(bare, secret_file=str(target.secret_file)).close()
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(StoreError, match="password"):
        PostgresStore(bare, secret_file=str(target.secret_file))


def test_the_server_secrets_file_is_required_and_must_match(target, tmp_path):
    with pytest.raises(StoreError, match="INPUTLAYER_SERVER_SECRET_FILE"):
        PostgresStore(target.url, secret_file=None)
    short = tmp_path / "short"
    short.write_bytes(b"x" * 31)
    with pytest.raises(StoreError, match="fewer than 32"):
        PostgresStore(target.url, secret_file=str(short))
    target.open().close()
    other = tmp_path / "other"
    other.write_bytes(secrets.token_bytes(64))
    with pytest.raises(StoreError, match="not this store's"):
        PostgresStore(target.url, secret_file=str(other))
    assert str(target.secret_file.read_bytes()[:8]) not in dump(target).decode(errors="replace")


def test_a_newer_schema_is_refused_untouched(target):
    target.open().close()
    with psycopg.connect(target.url, autocommit=True) as conn:
        conn.execute("""UPDATE inputlayer.meta SET data = '{"version": 99, "encrypted": false, "key_id": ""}'
                        WHERE name = 'format'""")
    before = dump(target)
    with pytest.raises(StoreError, match="format version 99, this program reads version 1"):
        target.open()
    assert dump(target) == before


def test_a_foreign_schema_of_the_same_name_is_refused_untouched(target):
    with psycopg.connect(target.url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA inputlayer")
        conn.execute("CREATE TABLE inputlayer.accounts (id int)")
    before = dump(target)
    with pytest.raises(StoreError, match="not an InputLayer store"):
        target.open()
    assert dump(target) == before


NODE = """
import sys
from backend.config import Config, with_values
from backend.engine import Engine
from backend.store.postgres.store import PostgresStore
url, secret_file, password, tag = sys.argv[1:]
sys.stdin.readline()                                  # all nodes start on the same signal
store = PostgresStore(url, secret_file=secret_file)
engine = Engine(store, with_values(Config(), {"security.argon2_memory_kib": 8, "security.argon2_time_cost": 1}))
created, _ = engine.bootstrap(password)
print("bootstrapped" if created else "found", flush=True)
session = engine.login("admin", password, source="local")
for i in range(40):
    engine.execute(session, f".kg create {tag}-{i}")
    engine.execute(session, f".kg acl grant {tag}-{i} admin viewer")
store.close()
print("done", flush=True)
"""


def test_three_nodes_on_an_empty_database_bootstrap_once_and_chain_without_gaps(target):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    nodes = [subprocess.Popen([sys.executable, "-c", NODE, target.url, str(target.secret_file), ADMIN_PASSWORD, tag],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for tag in ("n1", "n2", "n3")]
    for node in nodes:
        assert node.stdin is not None
        node.stdin.write(b"go\n")
        node.stdin.flush()
    outputs = []
    for node in nodes:
        out, errs = node.communicate(timeout=180)
        assert node.returncode == 0, errs.decode()[-2000:]
        outputs.append(out.decode().split())
    assert sorted(o[0] for o in outputs) == ["bootstrapped", "found", "found"]
    assert all(o[1] == "done" for o in outputs)
    store = target.open()
    with store.read():
        assert [u["name"] for u in store.users()] == ["admin"]
        assert len(store.kgs()) == 1 + 3 * 40
        assert store.verify_audit() == (2 + 3 * (1 + 80), None)
    seqs = [row[0] for row in store.conn.execute("SELECT seq FROM audit ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))
    engine = Engine(store, _cheap())
    admin = engine.login("admin", ADMIN_PASSWORD, source="local")
    assert engine.execute(admin, ".audit verify").rows[0][0].startswith("Audit log intact")


def _cheap():
    from conftest import CHEAP_ARGON2

    from backend.config import Config, with_values

    return with_values(Config(), CHEAP_ARGON2)


def test_encrypted_store_shows_nothing_in_pg_dump(pg_server, tmp_path):
    def run_session(encryption_key):
        target = StoreTarget("postgresql", tmp_path / ("sealed" if encryption_key else "plain"), pg_server)
        engine = Engine(target.open(encryption_key=encryption_key), _cheap())
        engine.bootstrap(ADMIN_PASSWORD)
        admin = engine.login("admin", ADMIN_PASSWORD, source="local")
        for line in SESSION:
            engine.execute(admin, line)
        text = dump(target).decode(errors="replace")
        target.close()
        return text

    plain = run_session(None)
    assert [word for word in NAMES if word not in plain] == []      # the check sees names that are there
    assert [word for word in PASSWORDS if word in plain] == []
    sealed = run_session(KEY)
    assert [word for word in NAMES + PASSWORDS if word in sealed] == [], "readable in pg_dump"


def test_wrong_or_missing_key_is_refused_untouched(target):
    Engine(target.open(encryption_key=KEY), _cheap()).bootstrap(ADMIN_PASSWORD)
    before = dump(target)
    with pytest.raises(StoreError, match="the store is encrypted"):
        target.open()
    with pytest.raises(StoreError, match="wrong encryption key"):
        target.open(encryption_key=secrets.token_bytes(32))
    assert dump(target) == before


def test_each_change_notifies_in_its_own_transaction(pg_engine, target):
    engine, admin = pg_engine
    with psycopg.connect(target.url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        engine.execute(admin, ".user create nia nia-passphrase viewer")
        with pytest.raises(AuthError):
            engine.login("nia", "wrong-passphrase", source="local")        # an audit record only
        engine.begin_batch(atomic=True)
        engine.execute(admin, ".kg create never")
        engine.end_batch(False)                                           # rolled back: no NOTIFY
        engine.execute(admin, ".kg acl grant default nia editor")
        payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]
        assert payloads == ["users", "acl"]
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


def shell_run(target, config_file, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
    from conftest import cli_env, run_cli

    env = {"INPUTLAYER_ADMIN_PASSWORD": ADMIN_PASSWORD, **target.cli_env(), **env}
    proc = run_cli([*args], stdin=stdin, env=cli_env(config_file, **env))
    proc.stdout, proc.stderr = proc.stdout.decode(), proc.stderr.decode()
    return proc


def test_the_shell_never_shows_the_password_of_a_store_url(target, config_file):
    wrong = target.url.replace(target.pg.password, "Sekr3t-in-url")
    proc = shell_run(target, config_file, "--store", wrong, "-c", ".whoami")
    assert proc.returncode == 2
    assert "Sekr3t-in-url" not in proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: cannot open the store postgresql://pgadmin:****@127.0.0.1:")
    both = shell_run(target, config_file, "--store", target.url, "--data-dir", "/tmp/x", "-c", ".whoami")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    from_env = shell_run(target, config_file, "-c", ".whoami", INPUTLAYER_STORE=target.url)
    assert from_env.returncode == 0 and from_env.stdout.startswith("admin\t")


def test_a_node_without_the_servers_secrets_or_with_others_refuses_to_start(target, config_file, tmp_path):
    from conftest import cli_env, run_cli

    assert shell_run(target, config_file, *target.cli_args(), "-c", ".whoami").returncode == 0
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    none = run_cli(["--store", target.url, "--port", "0"], env=env, program="backend")
    assert none.returncode == 2
    assert b"INPUTLAYER_SERVER_SECRET_FILE" in none.stderr and b"head -c 64 /dev/urandom" in none.stderr
    other = tmp_path / "other-secrets"
    other.write_bytes(secrets.token_bytes(64))
    wrong = run_cli(["--store", target.url, "--port", "0"], env={**env, "INPUTLAYER_SERVER_SECRET_FILE": str(other)},
                    program="backend")
    assert wrong.returncode == 2 and b"not this store's" in wrong.stderr


def test_two_nodes_and_a_shell_writing_at_once_keep_one_gapless_chain(target, config_file):
    import threading

    from conftest import cli_env
    from serverkit import ServerProcess, logged_in

    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, **target.cli_env())
    nodes = [ServerProcess(target.cli_args(), env) for _ in range(2)]
    refused: list[dict] = []                 # replies other than a result, from either node
    try:
        def write_through(node, tag):
            with logged_in(node.url) as client:
                for i in range(30):
                    reply = client.execute(f".kg create {tag}-{i}")
                    if reply["type"] != "result":
                        refused.append(reply)

        writers = [threading.Thread(target=write_through, args=(node, f"node{n}")) for n, node in enumerate(nodes)]
        for writer in writers:
            writer.start()
        script = "".join(f".kg create shell-{i}\n" for i in range(30))
        assert shell_run(target, config_file, *target.cli_args(), stdin=script).returncode == 0
        for writer in writers:
            writer.join(120)
    finally:
        for node in nodes:
            node.stop()
    assert refused == []
    verify = shell_run(target, config_file, *target.cli_args(), "-c", ".audit verify", "-c", ".kg list")
    assert verify.stdout.startswith("Audit log intact"), verify.stderr
    assert len([line for line in verify.stdout.splitlines() if "-" in line.split("\t")[0]]) == 90
    store = target.open()
    seqs = [row[0] for row in store.conn.execute("SELECT seq FROM audit ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))


def test_connections_the_server_dropped_are_replaced_by_themselves(pg_engine, target):
    engine, admin = pg_engine
    engine.execute(admin, ".user list")                       # a pooled reader and the writer, both in use
    with psycopg.connect(target.url, autocommit=True) as killer:
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


def test_rekey_on_to_a_new_key_and_off_keeps_keys_working_and_the_chain_intact(target, config_file):
    from conftest import cli_env, run_cli

    setup = shell_run(target, config_file, *target.cli_args(), stdin="\n".join(SESSION) + "\n")
    assert setup.returncode == 0, setup.stderr
    key = next(line.split("\t")[0] for line in setup.stdout.splitlines() if line.startswith("il_"))
    first, second = secrets.token_hex(32), secrets.token_hex(32)

    def rekey(**keys: str):
        env = cli_env(config_file, **target.cli_env(), **keys)
        proc = run_cli(["rekey", "--store", target.url], env=env, program="backend")
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    code, out, err = rekey(INPUTLAYER_NEW_ENCRYPTION_KEY=first)
    assert code == 0 and "encrypted under the new key" in out and target.pg.password not in out, err
    sealed = dump(target).decode(errors="replace")
    assert "zebulon-user" not in sealed and "nebula-label" not in sealed
    assert rekey(INPUTLAYER_ENCRYPTION_KEY=second, INPUTLAYER_NEW_ENCRYPTION_KEY=first)[0] == 2  # wrong old key
    assert dump(target).decode(errors="replace") == sealed
    assert rekey(INPUTLAYER_ENCRYPTION_KEY=first, INPUTLAYER_NEW_ENCRYPTION_KEY=second)[0] == 0
    check = shell_run(target, config_file, *target.cli_args(), "-c", ".whoami", INPUTLAYER_API_KEY=key,
                      INPUTLAYER_ENCRYPTION_KEY=second)
    assert check.returncode == 0 and check.stdout.startswith("zebulon-user"), check.stderr
    assert rekey(INPUTLAYER_ENCRYPTION_KEY=second)[0] == 0
    plain = shell_run(target, config_file, *target.cli_args(), "-c", ".audit verify", "-c", ".user list")
    assert plain.stdout.startswith("Audit log intact") and "zebulon-user" in plain.stdout, plain.stderr


def test_a_failed_rekey_leaves_the_store_under_its_old_key(pg_engine, target, monkeypatch):
    engine, admin = pg_engine
    engine.execute(admin, ".user create ria ria-passphrase viewer")
    before = dump(target)

    def broken(self, rows):
        raise StoreError("disk full (simulated)")
    monkeypatch.setattr(PostgresStore, "import_rows", broken)
    with pytest.raises(StoreError, match="simulated"):
        engine.store.rekey(KEY)
    monkeypatch.undo()
    assert dump(target) == before
    assert "ria" in [row[0] for row in engine.execute(admin, ".user list").rows]    # and it still works


def test_a_user_dropped_through_one_node_loses_its_session_on_the_other(target, config_file):
    from conftest import cli_env
    from serverkit import ServerProcess, logged_in
    from test_protocol import assert_ended

    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, **target.cli_env())
    nodes = [ServerProcess(target.cli_args(), env) for _ in range(2)]
    try:
        with logged_in(nodes[0].url) as admin:
            assert admin.execute(".user create bob pw-123456 viewer")["type"] == "result"
            bob = logged_in(nodes[1].url, "bob", "pw-123456")
            assert admin.execute(".user drop bob")["type"] == "result"
        assert_ended(bob, "user dropped", within=1.0)
    finally:
        for node in nodes:
            node.stop()


def test_replacing_the_secrets_ends_tokens_keeps_keys_and_rechains_the_audit_log(pg_engine, target):
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
        target.open()                          # the old file no longer matches the store


def test_rotate_secrets_on_postgresql_writes_the_new_file_and_keeps_keys(target, config_file):
    from conftest import cli_env, run_cli

    setup = shell_run(target, config_file, *target.cli_args(), "-c", ".apikey create survivor")
    key = setup.stdout.split("\t")[0]
    before = target.secret_file.read_bytes()
    proc = run_cli(["rotate-secrets", "--store", target.url], program="backend",
                   env=cli_env(config_file, **target.cli_env()))
    assert proc.returncode == 0 and b"every token ended" in proc.stdout, proc.stderr
    assert target.secret_file.read_bytes() != before
    assert oct(target.secret_file.stat().st_mode & 0o777) == "0o600"
    check = shell_run(target, config_file, *target.cli_args(), "-c", ".whoami", "-c", ".audit verify",
                      INPUTLAYER_API_KEY=key)
    assert check.returncode == 0 and "Audit log intact" in check.stdout, check.stderr
