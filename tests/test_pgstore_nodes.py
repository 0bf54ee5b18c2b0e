"""Several processes on one PostgreSQL store, as operators run them: nodes bootstrapping and
writing at once, a shell beside two servers, revocation across nodes, the maintenance commands
(rekey, rotate-secrets) and what a node refuses at start."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from conftest import ADMIN_PASSWORD, ROOT
from test_pgstore import SESSION, _cheap, dump

from backend.engine import Engine

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


def test_three_nodes_on_an_empty_database_bootstrap_once_and_chain_without_gaps(pg_target):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    nodes = [subprocess.Popen([sys.executable, "-c", NODE, pg_target.url, str(pg_target.secret_file), ADMIN_PASSWORD, tag],
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
    store = pg_target.open()
    with store.read():
        assert [u["name"] for u in store.users()] == ["admin"]
        assert len(store.kgs()) == 1 + 3 * 40
        assert store.verify_audit() == (2 + 3 * (1 + 80), None)
    seqs = [row[0] for row in store.conn.execute("SELECT seq FROM audit ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))
    engine = Engine(store, _cheap())
    admin = engine.login("admin", ADMIN_PASSWORD, source="local")
    assert engine.execute(admin, ".audit verify").rows[0][0].startswith("Audit log intact")


def shell_run(pg_target, config_file, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
    from conftest import cli_env, run_cli

    env = {"INPUTLAYER_ADMIN_PASSWORD": ADMIN_PASSWORD, **pg_target.cli_env(), **env}
    proc = run_cli([*args], stdin=stdin, env=cli_env(config_file, **env))
    proc.stdout, proc.stderr = proc.stdout.decode(), proc.stderr.decode()
    return proc


def test_the_shell_never_shows_the_password_of_a_store_url(pg_target, config_file):
    wrong = pg_target.url.replace(pg_target.pg.password, "Sekr3t-in-url")
    proc = shell_run(pg_target, config_file, "--store", wrong, "-c", ".whoami")
    assert proc.returncode == 2
    assert "Sekr3t-in-url" not in proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: cannot open the store postgresql://pgadmin:****@127.0.0.1:")
    both = shell_run(pg_target, config_file, "--store", pg_target.url, "--data-dir", "/tmp/x", "-c", ".whoami")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    from_env = shell_run(pg_target, config_file, "-c", ".whoami", INPUTLAYER_STORE=pg_target.url)
    assert from_env.returncode == 0 and from_env.stdout.startswith("admin\t")


def test_a_node_without_the_servers_secrets_or_with_others_refuses_to_start(pg_target, config_file, tmp_path):
    from conftest import cli_env, run_cli

    assert shell_run(pg_target, config_file, *pg_target.cli_args(), "-c", ".whoami").returncode == 0
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    none = run_cli(["--store", pg_target.url, "--port", "0"], env=env, program="backend")
    assert none.returncode == 2
    assert b"INPUTLAYER_SERVER_SECRET_FILE" in none.stderr and b"head -c 64 /dev/urandom" in none.stderr
    other = tmp_path / "other-secrets"
    other.write_bytes(secrets.token_bytes(64))
    wrong = run_cli(["--store", pg_target.url, "--port", "0"], env={**env, "INPUTLAYER_SERVER_SECRET_FILE": str(other)},
                    program="backend")
    assert wrong.returncode == 2 and b"not this store's" in wrong.stderr


def test_two_nodes_and_a_shell_writing_at_once_keep_one_gapless_chain(pg_target, config_file):
    import threading

    from conftest import cli_env
    from serverkit import ServerProcess, logged_in

    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, **pg_target.cli_env())
    nodes = [ServerProcess(pg_target.cli_args(), env) for _ in range(2)]
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
        assert shell_run(pg_target, config_file, *pg_target.cli_args(), stdin=script).returncode == 0
        for writer in writers:
            writer.join(120)
    finally:
        for node in nodes:
            node.stop()
    assert refused == []
    verify = shell_run(pg_target, config_file, *pg_target.cli_args(), "-c", ".audit verify", "-c", ".kg list")
    assert verify.stdout.startswith("Audit log intact"), verify.stderr
    assert len([line for line in verify.stdout.splitlines() if "-" in line.split("\t")[0]]) == 90
    store = pg_target.open()
    seqs = [row[0] for row in store.conn.execute("SELECT seq FROM audit ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))


def test_rekey_on_to_a_new_key_and_off_keeps_keys_working_and_the_chain_intact(pg_target, config_file):
    from conftest import cli_env, run_cli

    setup = shell_run(pg_target, config_file, *pg_target.cli_args(), stdin="\n".join(SESSION) + "\n")
    assert setup.returncode == 0, setup.stderr
    key = next(line.split("\t")[0] for line in setup.stdout.splitlines() if line.startswith("il_"))
    first, second = secrets.token_hex(32), secrets.token_hex(32)

    def rekey(**keys: str):
        env = cli_env(config_file, **pg_target.cli_env(), **keys)
        proc = run_cli(["rekey", "--store", pg_target.url], env=env, program="backend")
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    code, out, err = rekey(INPUTLAYER_NEW_ENCRYPTION_KEY=first)
    assert code == 0 and "encrypted under the new key" in out and pg_target.pg.password not in out, err
    sealed = dump(pg_target).decode(errors="replace")
    assert "zebulon-user" not in sealed and "nebula-label" not in sealed
    assert rekey(INPUTLAYER_ENCRYPTION_KEY=second, INPUTLAYER_NEW_ENCRYPTION_KEY=first)[0] == 2  # wrong old key
    assert dump(pg_target).decode(errors="replace") == sealed
    assert rekey(INPUTLAYER_ENCRYPTION_KEY=first, INPUTLAYER_NEW_ENCRYPTION_KEY=second)[0] == 0
    check = shell_run(pg_target, config_file, *pg_target.cli_args(), "-c", ".whoami", INPUTLAYER_API_KEY=key,
                      INPUTLAYER_ENCRYPTION_KEY=second)
    assert check.returncode == 0 and check.stdout.startswith("zebulon-user"), check.stderr
    assert rekey(INPUTLAYER_ENCRYPTION_KEY=second)[0] == 0
    plain = shell_run(pg_target, config_file, *pg_target.cli_args(), "-c", ".audit verify", "-c", ".user list")
    assert plain.stdout.startswith("Audit log intact") and "zebulon-user" in plain.stdout, plain.stderr


def test_a_user_dropped_through_one_node_loses_its_session_on_the_other(pg_target, config_file):
    from conftest import cli_env
    from serverkit import ServerProcess, logged_in
    from test_protocol import assert_ended

    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, **pg_target.cli_env())
    nodes = [ServerProcess(pg_target.cli_args(), env) for _ in range(2)]
    try:
        with logged_in(nodes[0].url) as admin:
            assert admin.execute(".user create bob pw-123456 viewer")["type"] == "result"
            bob = logged_in(nodes[1].url, "bob", "pw-123456")
            assert admin.execute(".user drop bob")["type"] == "result"
        assert_ended(bob, "user dropped", within=1.0)
    finally:
        for node in nodes:
            node.stop()


def test_rotate_secrets_on_postgresql_writes_the_new_file_and_keeps_keys(pg_target, config_file):
    from conftest import cli_env, run_cli

    setup = shell_run(pg_target, config_file, *pg_target.cli_args(), "-c", ".apikey create survivor")
    key = setup.stdout.split("\t")[0]
    before = pg_target.secret_file.read_bytes()
    proc = run_cli(["rotate-secrets", "--store", pg_target.url], program="backend",
                   env=cli_env(config_file, **pg_target.cli_env()))
    assert proc.returncode == 0 and b"every token ended" in proc.stdout, proc.stderr
    assert pg_target.secret_file.read_bytes() != before
    assert oct(pg_target.secret_file.stat().st_mode & 0o777) == "0o600"
    check = shell_run(pg_target, config_file, *pg_target.cli_args(), "-c", ".whoami", "-c", ".audit verify",
                      INPUTLAYER_API_KEY=key)
    assert check.returncode == 0 and "Audit log intact" in check.stdout, check.stderr
