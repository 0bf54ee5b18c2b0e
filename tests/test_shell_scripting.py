"""Script-mode conveniences and clear start-up errors (issue 14): `-f -`, a BOM, --echo, --quiet,
password=@FILE and password=-, a new store announced, URL advice, long remote lines."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ADMIN_PASSWORD, ROOT, cli_env, run_cli
from test_remote_shell import server_process  # noqa: F401 -- fixture


def test_f_dash_reads_stdin_and_a_bom_is_ignored(shell):
    proc = shell("\ufeff.whoami\n.kg\n", "-f", "-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["admin\tadmin\tpassword\tdefault", "Current knowledge graph: default"]
    with_c = shell("\ufeff.kg\n", "-c", ".whoami", "-f", "-")
    assert with_c.stdout.splitlines() == ["admin\tadmin\tpassword\tdefault", "Current knowledge graph: default"]


def test_a_bom_in_a_file(shell, tmp_path):
    script = tmp_path / "s.il"
    script.write_bytes(b"\xef\xbb\xbf.kg\n")
    proc = shell("", "-f", str(script))
    assert proc.returncode == 0 and proc.stdout == "Current knowledge graph: default\n", proc.stderr


def test_a_new_store_is_announced_with_its_absolute_path(tmp_path, config_file):
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    run = [sys.executable, "-m", "repl", "--data-dir", "d", "-c", ".kg"]
    env["PYTHONPATH"] = str(ROOT)
    first = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0
    assert first.stderr == f"Created a new store in {tmp_path / 'd'}; admin bootstrapped.\n"
    again = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stderr == ""


def test_a_file_as_data_dir_is_not_a_directory(tmp_path, config_file):
    afile = tmp_path / "notes.txt"
    afile.write_text("hello")
    proc = run_cli(["--data-dir", str(afile), "-c", ".whoami"],
                   env=cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    assert proc.returncode == 2
    assert proc.stderr.decode() == f"error: {afile}: not a directory\n"
    assert afile.read_text() == "hello"


def test_echo_prints_each_line_masked_and_quiet_drops_messages(shell):
    shell(".kg\n")       # the store exists: no `Created a new store` line below
    proc = shell(".user create bob bob-passphrase\n# a comment\n.user drop nobody\n.kg\n",
                 "--echo", "--on-error", "continue")
    assert proc.stdout.splitlines() == [
        ".user create bob ********", "User 'bob' created with role 'viewer'.",
        ".user drop nobody", ".kg", "Current knowledge graph: default"]
    assert proc.stderr == "<stdin>:3: error: User 'nobody' not found\n"
    quiet = shell(".user create carl carl-passphrase\n.user list\n.user drop nobody\n", "--quiet",
                  "--on-error", "continue")
    assert [line.split("\t")[0] for line in quiet.stdout.splitlines()] == ["admin", "bob", "carl"]
    assert quiet.stderr == "<stdin>:3: error: User 'nobody' not found\n" and quiet.returncode == 1


def test_passwords_from_a_file_and_from_the_next_stdin_line(shell, tmp_path):
    secret = tmp_path / "bob.secret"
    secret.write_text("bob-from-a-file\n")
    script = tmp_path / "provision.il"
    script.write_text(f".user create bob editor password=@{secret}\n.user create carl password=-\n")
    proc = shell("carl-from-stdin\n", "-f", str(script))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["User 'bob' created with role 'editor'.", "User 'carl' created with role 'viewer'."]
    # The script as stdin: the password is the line after the command, never run as a command.
    streamed = shell(".user create dave password=-\ndave-from-stdin\n.kg\n")
    assert streamed.stdout.splitlines() == ["User 'dave' created with role 'viewer'.", "Current knowledge graph: default"]
    for user, password in (("bob", "bob-from-a-file"), ("carl", "carl-from-stdin"), ("dave", "dave-from-stdin")):
        assert shell(".whoami\n", "--user", user, INPUTLAYER_PASSWORD=password).stdout.startswith(user)
    audit = shell(".audit\n").stdout
    assert "from-a-file" not in audit and "from-stdin" not in audit and str(secret) not in audit
    missing = shell(f".user create erin password=@{tmp_path}/nope\n")
    assert missing.returncode == 3
    assert missing.stderr == f"<stdin>:1: error: cannot read the password file {tmp_path}/nope: No such file or directory\n"


def test_password_file_remotely(tmp_path, config_file, server_process):  # noqa: F811
    server = server_process()
    secret = tmp_path / "bob.secret"
    secret.write_text("bob-from-a-file")
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    proc = run_cli(["--url", server.url, "-c", f".user create bob password=@{secret}"], env=env)
    assert proc.returncode == 0 and proc.stdout == b"User 'bob' created with role 'viewer'.\n", proc.stderr
    env["INPUTLAYER_PASSWORD"] = "bob-from-a-file"
    assert run_cli(["--url", server.url, "--user", "bob", "-c", ".whoami"], env=env).stdout.startswith(b"bob\t")


def test_a_remote_line_over_the_message_limit_fails_alone(tmp_path, config_file, server_process):  # noqa: F811
    server = server_process()
    program = ".whoami\n.user create " + "x" * (1 << 20) + "\n.kg\n"
    proc = run_cli(["--url", server.url, "--on-error", "continue", "--format", "json"], stdin=program,
                   env=cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    errors = proc.stderr.decode().splitlines()
    assert len(errors) == 1 and errors[0].startswith("<stdin>:2: error: Line too long: ")
    assert [json.loads(line)["ok"] for line in proc.stdout.decode().splitlines()] == [True, False, True]
    assert proc.returncode == 1


def test_url_errors_say_what_to_type(tmp_path, config_file, server_process):  # noqa: F811
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    for url, advice in (("http://127.0.0.1:9/", "use ws://127.0.0.1:9/ws"), ("127.0.0.1:9", "use ws://127.0.0.1:9/ws")):
        proc = run_cli(["--url", url, "-c", ".whoami"], env=env)
        assert proc.returncode == 2 and proc.stderr.decode() == f"error: cannot reach {url}: {advice}\n"
    server = server_process()
    secure = server.url.replace("ws://", "wss://")
    proc = run_cli(["--url", secure, "-c", ".whoami"], env=env)
    assert proc.returncode == 2
    assert proc.stderr.decode() == (f"error: cannot reach {secure}: TLS handshake failed: "
                                    f"is the server using TLS? try {server.url}\n")


def test_print_completion(config_file):
    for shell_name, marker in (("bash", "complete"), ("zsh", "#compdef")):
        proc = run_cli(["--print-completion", shell_name], env=cli_env(config_file))
        assert proc.returncode == 0 and marker in proc.stdout.decode() and "--data-dir" in proc.stdout.decode()


def test_password_file_at_the_prompt_history_keeps_the_path(tmp_path, cheap_config):
    from test_interactive import run_shell

    from backend.targets.local import LocalBackend

    backend = LocalBackend(str(tmp_path / "data"), cheap_config)
    backend.bootstrap(ADMIN_PASSWORD)
    backend.login("admin", ADMIN_PASSWORD)
    try:
        secret = tmp_path / "bob.secret"
        secret.write_text("bob-from-a-file\n")
        status, out, err, _ = run_shell(backend, tmp_path, f".user create bob password=@{secret}\r"
                                        ".user password bob password=-\r\x04", passwords=["bob-new-secret"])
        assert status == 0 and err == ""
        assert out.count("User 'bob' created") == 1 and "Password updated for 'bob'." in out
        history = (tmp_path / "history").read_text()
        assert f"password=@{secret}" in history and "from-a-file" not in history and "new-secret" not in history
        backend.login("bob", "bob-new-secret")
    finally:
        backend.close()
