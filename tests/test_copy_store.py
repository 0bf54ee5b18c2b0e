"""`inputlayer-server copy-store FROM TO`: data directory to PostgreSQL and back, everything
copied, keys still working, the audit chain still verifying, a failed copy leaving the target
empty, a non-empty target refused."""

from __future__ import annotations

import stat

import pytest
from conftest import ADMIN_PASSWORD, StoreTarget, cli_env, run_cli

from backend.errors import StoreError
from backend.store.copy import copy_store

SESSION = """.user create zia zia-passphrase editor
.kg create orbit
.kg acl grant orbit zia editor
.apikey create ci-bot role=viewer kg=orbit user=zia
"""


@pytest.fixture
def pg_target(pg_server, tmp_path):
    target = StoreTarget("postgresql", tmp_path / "pg", pg_server)
    target.secret_file.unlink()                  # copy-store writes the source's secrets there
    yield target
    target.close()


def shell(config_file, where: list[str], stdin: str = "", **env: str):
    proc = run_cli(where, stdin=stdin, env=cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, **env))
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def copy(config_file, source: str, target: str, **env: str):
    proc = run_cli(["copy-store", source, target], env=cli_env(config_file, **env), program="backend")
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_a_data_directory_to_postgresql_and_back(tmp_path, config_file, pg_target):
    data = tmp_path / "data"
    code, out, err = shell(config_file, ["--data-dir", str(data)], SESSION)
    assert code == 0, err
    key = next(line.split("\t")[0] for line in out.splitlines() if line.startswith("il_"))
    secret_env = {"INPUTLAYER_SERVER_SECRET_FILE": str(pg_target.secret_file)}
    code, out, err = copy(config_file, str(data), pg_target.url, **secret_env)
    assert code == 0, err
    assert out == ("Copied 2 users, 2 knowledge graphs, 1 ACL entries, 1 API keys, 0 session tokens, "
                   "7 audit records.\n")
    assert stat.S_IMODE(pg_target.secret_file.stat().st_mode) == 0o600
    on_pg = ["--store", pg_target.url]
    code, out, err = shell(config_file, on_pg, ".whoami\n.kg acl check orbit zia\n", INPUTLAYER_API_KEY=key,
                           **secret_env)
    assert code == 0 and out.startswith("zia\t") and "zia\torbit\teditor" in out, err
    code, out, _ = shell(config_file, on_pg, ".audit verify\n", **secret_env)
    assert out.startswith("Audit log intact: 9 records")      # 7 copied, 2 logins since
    back = tmp_path / "back"
    code, out, err = copy(config_file, pg_target.url, str(back), **secret_env)
    assert code == 0 and out.startswith("Copied 2 users, 2 knowledge graphs"), err
    code, out, err = shell(config_file, ["--data-dir", str(back)], ".whoami\n", INPUTLAYER_API_KEY=key)
    assert code == 0 and out.startswith("zia\t"), err
    assert shell(config_file, ["--data-dir", str(back)], ".audit verify\n")[1].startswith("Audit log intact")


def test_a_non_empty_target_or_other_secrets_are_refused(tmp_path, config_file, pg_target):
    data, other = tmp_path / "data", tmp_path / "other"
    for where in (data, other):
        assert shell(config_file, ["--data-dir", str(where)], SESSION)[0] == 0
    code, _, err = copy(config_file, str(data), str(other))
    assert code == 2 and "is not empty" in err
    pg_target.secret_file.write_bytes(b"x" * 64)
    code, _, err = copy(config_file, str(data), pg_target.url,
                        INPUTLAYER_SERVER_SECRET_FILE=str(pg_target.secret_file))
    assert code == 2 and "holds other secrets than the source's" in err


def test_a_failed_copy_leaves_the_target_empty(tmp_path, config_file, pg_target, monkeypatch):
    from backend.store.postgres.store import PostgresStore

    data = tmp_path / "data"
    assert shell(config_file, ["--data-dir", str(data)], SESSION)[0] == 0
    env = {"INPUTLAYER_SERVER_SECRET_FILE": str(pg_target.secret_file)}

    def broken(self, *args):
        raise StoreError("connection lost (simulated)")
    monkeypatch.setattr(PostgresStore, "grant", broken)     # after the users and KGs went in
    with pytest.raises(StoreError, match="simulated"):
        copy_store(str(data), pg_target.url, env)
    monkeypatch.undo()
    store = pg_target.open()
    with store.read():
        assert store.user_count() == 0 and store.kgs() == [] and store.verify_audit() == (0, None)
    assert copy_store(str(data), pg_target.url, env)["users"] == 2
