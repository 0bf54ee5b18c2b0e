"""`inputlayer` in script mode, run as a user would: a subprocess with stdin piped."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest

from backend.errors import CommandError
from conftest import ADMIN_PASSWORD
from repl.environment import fake_environment


def test_stdin_comments_blank_lines_and_plain_output(shell):
    proc = shell("# a comment\n\n   // another\n.whoami\n.user create hash pa#ss//word viewer\n.kg\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["admin\tadmin\tpassword\tdefault",
                                        "User 'hash' created with role 'viewer'.",
                                        "Current knowledge graph: default"]
    # `#` and `//` inside a line are ordinary characters: they were part of the password.
    assert shell(".whoami\n", "--user", "hash", INPUTLAYER_PASSWORD="pa#ss//word").stdout.startswith("hash\t")


def test_errors_are_source_line_and_stop_with_status_3(shell):
    proc = shell(".whoami\n\n.user drop nobody\n.kg create never-made\n")
    assert proc.returncode == 3
    assert proc.stderr == "<stdin>:3: error: User 'nobody' not found\n"
    assert "never-made" not in shell(".kg list\n").stdout


def test_on_error_continue_runs_every_line_and_exits_1(shell):
    proc = shell(".user drop nobody\n.kg create made-anyway\n", "--on-error", "continue")
    assert proc.returncode == 1
    assert "made-anyway" in shell(".kg list\n").stdout


def test_c_and_f_run_in_order_and_stdin_is_not_read(shell, tmp_path):
    script = tmp_path / "setup.il"
    script.write_text(".kg create from-file\n.kg\n")
    proc = shell(".kg create from-stdin\n", "-c", ".kg create first", "-f", str(script), "-c", ".kg")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["Knowledge graph 'first' created.", "Switched to knowledge graph: first",
                                        "Knowledge graph 'from-file' created.",
                                        "Switched to knowledge graph: from-file",
                                        "Current knowledge graph: from-file",
                                        "Current knowledge graph: from-file"]
    assert "from-stdin" not in shell(".kg list\n").stdout
    bad = shell("", "-c", ".whoami", "-c", ".user show ghost")
    assert bad.stderr == "-c:2: error: User 'ghost' not found\n"
    failing_file = shell("", "-f", str(script))
    assert failing_file.stderr.startswith(f"{script}:1: error: Knowledge graph 'from-file' already exists")


def test_unreadable_file_changes_nothing(shell, tmp_path):
    proc = shell("", "-c", ".kg create before-file", "-f", str(tmp_path / "missing.il"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: cannot read {tmp_path / 'missing.il'}: No such file or directory"
    assert "before-file" not in shell(".kg list\n").stdout


def test_formats(shell):
    as_json = shell(".user list\n.user show ghost\n", "--format", "json", "--on-error", "continue")
    first, second = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert first["ok"] is True and first["columns"] == ["username", "role", "created_at", "last_login_at"]
    assert second == {"ok": False, "error": "User 'ghost' not found", "line": 2}
    assert as_json.stderr == "<stdin>:2: error: User 'ghost' not found\n"
    as_csv = shell(".kg acl check default admin\n", "--format", "csv")
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [["username", "kg", "access", "because"],
                                                           ["admin", "default", "owner", "global role admin"]]
    assert as_csv.stdout.endswith("\r\n")
    table = shell(".kg list\n.kg\n", "--format", "table").stdout.splitlines()
    assert table == ["name    | access", "--------+-------", "default | owner", "1 row",
                     "Current knowledge graph: default"]


def test_single_transaction_is_all_or_nothing(shell):
    ok = shell(".kg create t1\n.kg create t2\n", "-1")
    assert ok.returncode == 0
    failed = shell(".kg create t3\n.kg create t1\n.kg create t4\n", "--single-transaction")
    assert failed.returncode == 3
    assert "<stdin>:2: error: Knowledge graph 't1' already exists" in failed.stderr
    listing = shell(".kg list\n").stdout
    assert "t1" in listing and "t2" in listing and "t3" not in listing and "t4" not in listing


def test_single_transaction_keeps_the_audit_chain(shell):
    shell(".user create u1 u1-passphrase\n.kg create tx\n", "-1")
    assert shell(".audit verify\n").stdout.startswith("Audit log intact: ")


def test_password_required_in_script_mode(shell):
    proc = shell(".user create nopass viewer\n")
    assert proc.returncode == 3 and "Password required" in proc.stderr
    assert "nopass" not in shell(".user list\n").stdout


def test_bootstrap_banner_once_with_a_generated_password(shell):
    first = shell(".whoami\n", INPUTLAYER_ADMIN_PASSWORD=None)
    assert first.returncode == 0
    assert "will not be shown again" in first.stderr
    password = next(line.split(": ", 1)[1] for line in first.stderr.splitlines() if "Generated admin password" in line)
    assert len(password) >= 22        # ≥ 128 bits, URL-safe
    again = shell(".whoami\n", INPUTLAYER_ADMIN_PASSWORD=None)
    assert again.returncode == 2 and again.stderr.strip() == (
        "error: no credentials: set INPUTLAYER_API_KEY, or INPUTLAYER_ADMIN_PASSWORD, or pass --user")
    assert shell(".whoami\n", INPUTLAYER_ADMIN_PASSWORD=password).stdout.startswith("admin\t")


def test_credentials_order_and_refusals(shell):
    shell(".user create bob bob-passphrase viewer\n")
    key = shell(".apikey create bobs-key user=bob\n").stdout.split("\t")[0]
    # 1. the API key wins over everything else
    assert shell(".whoami\n", INPUTLAYER_API_KEY=key).stdout.startswith("bob\tviewer\tapi_key:bobs-key")
    # 2. --user with INPUTLAYER_PASSWORD wins over the admin password
    as_bob = shell(".whoami\n.user list\n", "--user", "bob", INPUTLAYER_PASSWORD="bob-passphrase")
    assert as_bob.stdout.startswith("bob\tviewer\tpassword") and as_bob.returncode == 3
    assert "Permission denied: only admins can manage users" in as_bob.stderr
    assert shell(".whoami\n", INPUTLAYER_USER="bob", INPUTLAYER_PASSWORD="bob-passphrase").stdout.startswith("bob")
    no_password = shell(".whoami\n", "--user", "bob")
    assert no_password.returncode == 2 and "INPUTLAYER_PASSWORD" in no_password.stderr
    wrong = shell(".whoami\n", "--user", "bob", INPUTLAYER_PASSWORD="nope-nope")
    assert wrong.returncode == 2 and wrong.stderr.strip() == "error: authentication failed: Invalid credentials"
    bad_key = shell(".whoami\n", INPUTLAYER_API_KEY="il_not_a_key")
    assert bad_key.returncode == 2 and "Invalid credentials" in bad_key.stderr


def test_usage_errors_exit_2(shell, tmp_path):
    assert shell("", "--format", "xml").returncode == 2
    assert shell("", "--url", "ws://127.0.0.1:1/ws", "-1").returncode == 2
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[shell]\nformat = 1\n")
    proc = shell(".whoami\n", INPUTLAYER_CONFIG=str(bad_config))
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {bad_config}: bad value for 'shell.format'")


def test_version_and_help(shell):
    assert shell("", "--version").stdout.startswith("inputlayer 0.1.0")
    assert "--single-transaction" in shell("", "--help").stdout
    wide, narrow = shell("", "--help", COLUMNS="100").stdout, shell("", "--help", COLUMNS="50").stdout
    assert "  --user NAME           log in as NAME (password\n" in narrow        # wrapped to the width
    assert "  --user NAME           log in as NAME (password from INPUTLAYER_PASSWORD or asked)\n" in wide


@pytest.mark.parametrize("variables, columns", [({"COLUMNS": "123"}, 123), ({}, 80), ({"COLUMNS": "wide"}, 80),
                                                ({"COLUMNS": "0"}, 80)])
def test_terminal_width_for_help(variables, columns):
    assert fake_environment(env=variables).columns == columns


def test_corrupt_store_exits_2_and_is_untouched(tmp_path, config_file):
    from conftest import cli_env, run_cli

    data = tmp_path / "corrupt"
    data.mkdir()
    (data / "inputlayer.db").write_bytes(b"\x00garbage" * 512)
    proc = run_cli(["--data-dir", str(data), "-c", ".whoami"],
                   env=cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("error: cannot open the store: ")
    assert (data / "inputlayer.db").read_bytes() == b"\x00garbage" * 512


def test_garbage_input_gives_clean_errors(shell):
    binary = "\x00\x01\x02\x1b[31m\xff\n.user create \"unclosed\n" + ".kg create " + "x" * 1_000_000 + "\n"
    proc = shell(binary + ".whoami\n", "--on-error", "continue")
    assert proc.returncode == 1
    errors = proc.stderr.splitlines()
    assert len(errors) == 3 and "Traceback" not in proc.stderr
    assert errors[1] == "<stdin>:2: error: Unclosed quote"
    assert len(errors[2]) < 200
    assert proc.stdout.startswith("admin\t")


def test_quit_stops_a_script_cleanly(shell):
    proc = shell(".kg create q1\n.quit\n.kg create q2\n")
    assert proc.returncode == 0
    assert "q2" not in shell(".kg list\n").stdout


def test_a_coprocess_gets_each_answer_before_sending_the_next_line(tmp_path, config_file):
    """Group commit never waits for input that is not there yet."""
    import subprocess
    import sys

    from conftest import ROOT, cli_env

    proc = subprocess.Popen([sys.executable, "-m", "repl", "--data-dir", str(tmp_path / "co")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD), cwd=ROOT)
    try:
        for name in ("co1", "co2", "co3"):
            proc.stdin.write(f".kg create {name}\n".encode())
            proc.stdin.flush()
            assert proc.stdout.readline() == f"Knowledge graph '{name}' created.\n".encode()
            assert proc.stdout.readline() == f"Switched to knowledge graph: {name}\n".encode()
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0


def test_lines_parsed_ahead_run_as_if_parsed_in_their_turn(engine, admin):
    lines = [".kg create sales", ".user create pa1 pa1-passphrase viewer", ".kg acl grant default pa1 editor",
             ".kg acl list", ".kg use default", ".kg acl list", ".kg acl grant nosuch pa1 viewer", ".bogus"]
    engine.prepare(lines)
    outcomes = []
    for line in lines:
        try:
            outcomes.append(engine.execute(admin, line).rows)
        except CommandError as exc:
            outcomes.append(exc.message)
    # The same `.kg acl list` lists the KG current at each one's turn: sales, then default.
    assert [row[0] for row in outcomes[3]] == [] and [row[0] for row in outcomes[5]] == ["pa1"]
    assert outcomes[6:] == ["Knowledge graph 'nosuch' not found", "Unknown command: .bogus. Type .help for the list."]
    assert engine._parsed_ahead == {}


def test_passwords_are_hashed_ahead_and_still_valid(engine, admin):
    lines = [f".user create ahead{i} ahead-passphrase-{i} viewer" for i in range(5)]
    lines.append(".USER\tCreate ahead5 ahead-passphrase-5")      # commands ignore case and tabs
    engine.prepare(lines + [".user create short x", ".kg create not-a-password"])
    assert len(engine.hasher._ahead) == 6          # the too-short password is never hashed
    for line in lines:
        engine.execute(admin, line)
    assert engine.hasher._ahead == {}
    assert engine.login("ahead3", "ahead-passphrase-3", source="local").username == "ahead3"
