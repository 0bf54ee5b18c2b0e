"""Policies against a server (`--url`): the same plan and apply output as on a data directory,
and an apply that is all or nothing there too, through the protocol's `"atomic": true`."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ADMIN_PASSWORD, cli_env, run_cli
from serverkit import Client, ServerProcess, logged_in, running_server, server_env
from test_examples import KEY_PLACEHOLDER, KEY_RE
from test_policy_cli import PASSWORDS, POLICIES


@pytest.fixture
def server(tmp_path, config_file):
    process = ServerProcess(["--data-dir", str(tmp_path / "srv")],
                            server_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    yield process
    code, _, err = process.stop()
    assert code == 0, err


def il(server, config_file: Path, *args: str, **extra: str) -> tuple[int, str, str]:
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, **PASSWORDS, **extra)
    proc = run_cli(["--url", server.url, *args], env=env)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_the_company_policy_gives_the_same_output_remotely(server, config_file):
    status, out, err = il(server, config_file, "apply", str(POLICIES / "acme.toml"), "--yes", "--format", "table")
    assert KEY_RE.sub(KEY_PLACEHOLDER, out + err) + f"[exit status {status}]\n" == \
        (POLICIES / "acme.apply.out").read_text()
    status, out, err = il(server, config_file, "plan", str(POLICIES / "acme-next.toml"), "--prune")
    assert out + err + f"[exit status {status}]\n" == (POLICIES / "acme-next.prune.out").read_text()
    assert il(server, config_file, "apply", str(POLICIES / "acme-next.toml"), "--prune", "--yes")[0] == 0
    assert il(server, config_file, "plan", str(POLICIES / "acme-next.toml"), "--prune")[1] == "No changes.\n"
    audit = il(server, config_file, "-c", ".audit limit=5 action=user")[1]
    assert "ws:127.0.0.1 (apply acme-next.toml)\tuser.drop\ttom" in audit


def test_a_remote_apply_that_fails_part_way_changes_nothing(server, config_file, tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[users.admin]\nrole = "admin"\n[kgs.a]\n[kgs.b]\n[kgs.c]\n[kgs.d]\n'
                      '[users.zed]\nrole = "viewer"\npassword_env = "SHORT"\n')
    status, out, err = il(server, config_file, "apply", str(policy), "--yes", SHORT="abc")
    assert (status, err) == (3, "error: + user zed (viewer): Password too short: at least 8 characters\n"
                                "error: the apply was rolled back; nothing was changed\n")
    assert "[kgs.a]" not in il(server, config_file, "export")[1]


def test_atomic_on_the_wire(tmp_path, cheap_config):
    with running_server(tmp_path / "data", cheap_config) as srv, logged_in(srv.url) as client:
        assert client.request({"type": "ping"})["type"] == "pong"
        reply = client.request({"type": "execute", "atomic": True, "note": "apply x.toml",
                                "program": ".kg create one\n.kg create two\n.kg acl grant two nobody viewer"})
        assert reply == {"type": "error", "message": "line 3: User 'nobody' not found"}
        assert "one" not in str(client.execute(".kg list"))
        reply = client.request({"type": "execute", "atomic": True, "program": ".kg create one\n.whoami"})
        assert reply["type"] == "result" and reply["columns"][0] == "username"      # as any program
        assert [r["columns"] for r in reply["results"]] == [["message"], ["username", "role", "auth", "knowledge_graph"]]
        bad = client.request({"type": "execute", "atomic": True, "note": "\x1b[31m", "program": ".whoami"})
        assert bad["type"] == "error" and "note" in bad["message"]
        audit = client.execute(".audit limit=1 action=kg.create")
        assert audit["rows"][0][3] == "ws:127.0.0.1"                                   # no note given


def test_the_server_announces_atomic_programs(tmp_path, cheap_config):
    with running_server(tmp_path / "data", cheap_config) as srv, Client(srv.url) as raw:
        assert raw.login()["features"] == ["atomic"]
