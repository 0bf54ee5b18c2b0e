"""The interactive shell: prompt behaviour through a pipe (create_pipe_input + DummyOutput) and
end to end on a pseudo-terminal (pexpect)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.layout.processors import TransformationInput
from prompt_toolkit.output import DummyOutput

from backend.config import Config, with_values
from backend.errors import CommandError, SessionEnded, TargetUnreachable
from backend.targets.local import LocalBackend
from backend.result import Result
from repl.environment import fake_environment
from repl.highlight import CommandLexer, SecretMask
from repl.interactive import Shell

from conftest import ADMIN_PASSWORD, ROOT, cli_env
from ptyshell import Terminal, pty_env


# --- through a pipe ------------------------------------------------------------------------

@pytest.fixture
def local(tmp_path, cheap_config):
    backend = LocalBackend(str(tmp_path / "data"), cheap_config)
    backend.bootstrap(ADMIN_PASSWORD)
    backend.login("admin", ADMIN_PASSWORD)
    yield backend
    backend.close()


def run_shell(backend, tmp_path, keys: str, passwords=(), fmt="table"):
    """Type `keys` into a Shell; (exit status, stdout, stderr, the Shell)."""
    config = with_values(Config(), {"shell.history_file": str(tmp_path / "history")})
    env = fake_environment()
    answers = list(passwords)
    env.getpass = lambda prompt: answers.pop(0)
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        shell = Shell(backend, env, config, fmt=fmt, input=pipe, output=DummyOutput())
        status = shell.run()
    assert not answers, "not every password was asked for"
    return status, env.stdout.getvalue(), env.stderr.getvalue(), shell


def test_commands_run_and_the_prompt_follows_the_kg(local, tmp_path):
    status, out, err, shell = run_shell(local, tmp_path, ".kg create sales\r.kg list\r\x04")
    assert status == 0 and err == ""
    assert "Switched to knowledge graph: sales" in out
    assert "name    | access\n" in out and "2 rows" in out
    assert shell._prompt() == "admin@local:sales> "


def test_errors_are_one_line_and_the_session_goes_on(local, tmp_path):
    status, out, err, _ = run_shell(local, tmp_path, ".bogus\r.kg use nowhere\r.whoami\r.quit\r")
    assert status == 0
    assert err.splitlines() == ["error: Unknown command: .bogus. Type .help for the list.",
                                "error: Knowledge graph 'nowhere' not found"]
    assert "admin    | admin" in out


def test_ctrl_c_drops_the_line_and_keeps_the_session(local, tmp_path):
    status, out, err, _ = run_shell(local, tmp_path, ".kg create never\x03.kg list\r.exit\r")
    assert status == 0 and "never" not in out and "default" in out


def test_comments_and_blank_lines_are_skipped(local, tmp_path):
    status, out, err, _ = run_shell(local, tmp_path, "# note\r\r   \r.q\r")
    assert (status, out, err) == (0, "", "")


def test_hidden_prompt_asks_twice_and_inserts_the_password(local, tmp_path):
    pw = 'a "quoted" pass\\word'
    status, out, err, _ = run_shell(local, tmp_path, ".user create bob editor\r.q\r", passwords=[pw, pw])
    assert "User 'bob' created with role 'editor'." in out and err == ""
    local.engine.login("bob", pw, source="local")


def test_hidden_prompt_refuses_a_mismatch(local, tmp_path):
    status, out, err, _ = run_shell(local, tmp_path, ".user create bob\r.user list\r.q\r",
                                    passwords=["first-pass-1", "other-pass-2"])
    assert err == "error: Passwords do not match\n"
    assert "bob" not in out


def test_password_change_prompt_and_a_recalled_mask_asks_again(local, tmp_path):
    local.execute(".user create bob 'bob-pass-one' viewer")
    keys = ".user password bob\r.user password bob ********\r.q\r"
    status, out, err, _ = run_shell(local, tmp_path, keys, passwords=["bob-pass-two"] * 2 + ["bob-pass-3"] * 2)
    assert out.count("Password updated for 'bob'.") == 2 and err == ""
    local.engine.login("bob", "bob-pass-3", source="local")


def test_a_given_password_is_not_asked_for(local, tmp_path):
    status, out, err, _ = run_shell(local, tmp_path, ".user create bob 'S3cret pass!' viewer\r.q\r")
    assert "created" in out
    history = (tmp_path / "history").read_text()
    assert "S3cret" not in history and ".user create bob ******** viewer" in history


def test_other_formats_are_honoured(local, tmp_path):
    status, out, err, _ = run_shell(local, tmp_path, ".kg list\r.q\r", fmt="json")
    assert json.loads(out) == {"ok": True, "columns": ["name", "access"], "rows": [["default", "owner"]]}


def test_long_output_is_paged_when_asked(local, tmp_path):
    for n in range(45):
        local.execute(f".user create user-{n} pw-{n}-pw-pw-pw")
    paged = tmp_path / "paged"
    config = with_values(Config(), {"shell.history_file": str(tmp_path / "history")})
    env = fake_environment(env={"PAGER": f"cat > {paged}", "PATH": os.environ.get("PATH", "")})
    with create_pipe_input() as pipe:
        pipe.send_text(".whoami\r.user list\r.q\r")
        shell = Shell(local, env, config, input=pipe, output=DummyOutput())
        shell.paging = True
        assert shell.run() == 0
    assert "user-44" not in env.stdout.getvalue() and "admin" in env.stdout.getvalue()   # .whoami fits
    assert "user-44" in paged.read_text()


class FlakyBackend:
    """A remote-like backend whose connection drops once."""
    target = "db1.example:8080"

    def __init__(self):
        self.drop_next = False
        self.reconnects = 0
        self.end = False

    def execute(self, line: str) -> Result:
        if line == ".whoami":
            return Result(["username", "role", "auth", "knowledge_graph"], [["alice", "admin", "password", "sales"]])
        if self.end:
            raise SessionEnded("user dropped")
        if self.drop_next and line == ".status":
            self.drop_next = False
            raise TargetUnreachable("connection closed")
        if line == ".fail":
            raise CommandError("\x1b[2Jbad")
        return Result.message("ran " + line)

    def reconnect(self):
        self.reconnects += 1

    def close(self):
        pass


def test_lost_connection_is_reported_and_the_next_command_reconnects(tmp_path):
    backend = FlakyBackend()
    backend.drop_next = True
    status, out, err, shell = run_shell(backend, tmp_path, ".status\r.status\r.q\r")
    assert status == 0
    assert "error: connection closed (the next command reconnects)" in err
    assert backend.reconnects == 1 and "Reconnected." in out and "ran .status" in out
    assert shell._prompt() == "alice@db1.example:8080:sales> "


def test_an_ended_session_leaves_with_status_2(tmp_path):
    backend = FlakyBackend()
    backend.end = True
    status, out, err, _ = run_shell(backend, tmp_path, ".status\r.status\r")
    assert status == 2 and err.count("Session ended") == 1


def test_backend_text_is_escaped(tmp_path):
    status, out, err, _ = run_shell(FlakyBackend(), tmp_path, ".fail\r.q\r")
    assert err == "error: \\x1b[2Jbad\n"


# --- highlighting ----------------------------------------------------------------------------

def lexed(text: str) -> list[tuple[str, str]]:
    tokens = list(CommandLexer().get_tokens_unprocessed(text))
    assert "".join(t[2] for t in tokens) == text       # every character accounted for
    return [(str(t[1]), t[2]) for t in tokens if t[2].strip()]


def test_lexer_follows_the_grammar():
    assert lexed(".kg acl grant sales bob editor") == [
        ("Token.Keyword", ".kg"), ("Token.Keyword.Namespace", "acl"), ("Token.Keyword.Namespace", "grant"),
        ("Token.Name.Namespace", "sales"), ("Token.Name", "bob"), ("Token.Name.Builtin", "editor")]
    assert ("Token.Literal.String.Secret", "'S3cret pass!'") in lexed(".user create bob 'S3cret pass!' viewer")
    assert ("Token.Name.Builtin", "editor") in lexed(".user create bob editor")
    assert lexed(".apikey create x bogus=1")[-3:] == [("Token.Error", "bogus"), ("Token.Operator", "="),
                                                      ("Token.Text", "1")]
    assert lexed(".bogus")[0] == ("Token.Error", ".bogus")
    assert lexed("# note") == [("Token.Comment", "# note")]
    assert lexed(".kg use a b")[-1] == ("Token.Error", "b")


def test_secret_mask_shows_stars_only_over_the_secret():
    line = ".user password bob 'N3w pass'"
    fragments = [("class:a", line[:19]), ("class:b", line[19:])]
    ti = TransformationInput(None, Document(line), 0, lambda i: i, fragments, 80, 1)
    shown = "".join(f[1] for f in SecretMask().apply_transformation(ti).fragments)
    assert shown == ".user password bob **********"


# --- script mode stays light ---------------------------------------------------------------------

def test_script_mode_does_not_import_prompt_toolkit(tmp_path, config_file):
    code = ("import sys, repl.__main__ as m\n"
            f"status = m.main(['--data-dir', {str(tmp_path / 'd')!r}, '-c', '.whoami'])\n"
            "print('loaded' if 'prompt_toolkit' in sys.modules else 'not loaded', status)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env=cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    assert proc.stdout.splitlines()[-1] == "not loaded 0", proc.stderr


# --- on a pseudo-terminal ------------------------------------------------------------------------

@pytest.fixture
def term(tmp_path, config_file):
    """start(**env) -> a Terminal running the shell on tmp_path/data."""
    started = []

    def start(*args: str, **extra: str) -> Terminal:
        t = Terminal(["--data-dir", str(tmp_path / "data"), *args], pty_env(tmp_path, config_file, **extra))
        started.append(t)
        return t

    yield start
    for t in started:
        t.child.close(force=True)


def test_a_session_on_a_terminal(term, tmp_path):
    t = term()
    t.expect("admin@local:default>")
    t.type(".kg create sales<Enter>")
    t.expect("Switched to knowledge graph: sales")
    t.expect("admin@local:sales>")
    # Hidden prompt, twice; a mismatch is refused and nothing is created.
    t.type(".user create bob<Enter>")
    t.expect("Password:")
    t.type("bob-pass-1<Enter>")
    t.expect("Repeat password:")
    t.type("bob-pass-2<Enter>")
    t.expect("error: Passwords do not match")
    t.expect("admin@local:sales>")
    t.type(".user create bob editor<Enter>")
    t.expect("Password:")
    t.type("bob-pass-1<Enter>")
    t.expect("Repeat password:")
    t.type("bob-pass-1<Enter>")
    t.expect("User 'bob' created with role 'editor'.")
    t.expect("admin@local:sales>")
    # Completion: sub-command, KG, then a live user name (fetched after the create), then a level.
    t.type(".kg acl gr<Tab>")
    t.expect("grant")
    t.type("sa<Tab>")
    t.expect("sales")
    t.type("b<Tab>")
    t.expect("bob")
    t.type("ow<Tab>")
    t.expect("owner")
    t.type("<Enter>")
    t.expect("Granted 'owner' access on 'sales' to 'bob'.")
    # An error is one red line and the session goes on.
    t.expect("admin@local:sales>")
    t.type(".bogus<Enter>")
    t.expect("error: Unknown command: .bogus. Type .help for the list.")
    assert "\x1b[31merror: Unknown command" in t.raw
    # Ctrl-C drops the line and the next prompt comes.
    t.expect("admin@local:sales>")
    t.type(".user drop bob<C-c>")
    t.expect("admin@local:sales>")
    t.type(".whoami<Enter>")
    t.expect("username | role  | auth     | knowledge_graph")
    t.expect("admin@local:sales>")
    t.type(".kg acl list<Enter>")
    t.expect("bob      | owner")
    t.expect("admin@local:sales>")
    t.type("<C-d>")
    assert t.finish() == 0
    assert "User 'bob' dropped." not in t.screen


def test_ctrl_r_finds_an_earlier_command(term):
    t = term()
    t.expect("admin@local:default>")
    t.type(".kg create sales<Enter>")
    t.expect("admin@local:sales>")
    t.type(".kg use default<Enter>")
    t.expect("admin@local:default>")
    t.type("<C-r>create sa")
    t.expect("create sa")
    t.type("<Enter>")
    t.expect("admin@local:default>")
    t.type("<Enter>")
    t.expect("error: Knowledge graph 'sales' already exists")
    t.expect("admin@local:default>")
    t.type(".q<Enter>")
    assert t.finish() == 0


def test_secrets_reach_no_file(term, tmp_path):
    """THE secret test: passwords typed on a terminal are in no file afterwards."""
    t = term()
    t.expect("admin@local:default>")
    t.type(".user create bob 'S3cret pass!' viewer<Enter>")
    t.expect("User 'bob' created with role 'viewer'.")
    t.expect("admin@local:default>")
    t.type(".user password bob N3w-pass-123<Enter>")
    t.expect("Password updated for 'bob'.")
    t.expect("admin@local:default>")
    t.type("<Up><Up><Enter>")   # recalled from memory: the original line, masked on screen
    t.expect("error: User 'bob' already exists")
    t.expect("admin@local:default>")
    t.type(".user password bob<Enter>")
    t.expect("Password:")
    t.type("Hidden-pass-77<Enter>")
    t.expect("Repeat password:")
    t.type("Hidden-pass-77<Enter>")
    t.expect("Password updated for 'bob'.")
    t.expect("admin@local:default>")
    t.type(".quit<Enter>")
    assert t.finish() == 0
    assert not any(s in t.screen for s in ("S3cret", "N3w-pass", "Hidden-pass"))   # not even on screen
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    history = tmp_path / "state" / "inputlayer" / "history"
    assert history in files and any(p.suffix == ".db" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in ("S3cret pass!", "S3cret", "N3w-pass-123", "Hidden-pass-77"):
            assert secret.encode() not in data, path
            assert secret.encode("utf-16-le") not in data, path
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert stat.S_IMODE(history.parent.stat().st_mode) == 0o700
    text = history.read_text()
    assert "+.user create bob ******** viewer" in text and "+.user password bob ********" in text


def test_no_color_and_quit(term):
    t = term(NO_COLOR="1")
    t.expect("admin@local:default>")
    t.type(".bogus<Enter>")
    t.expect("error: Unknown command")
    t.expect("admin@local:default>")
    t.type(".exit<Enter>")
    assert t.finish() == 0
    assert "\x1b[31m" not in t.raw and "\x1b[0;34" not in t.raw and "\x1b[0;32" not in t.raw


def test_login_prompt_when_no_credentials_are_set(term, tmp_path, config_file):
    # The data directory exists already (bootstrapped by another run), so nobody is logged in.
    subprocess.run([sys.executable, "-m", "repl", "--data-dir", str(tmp_path / "data"), "-c", ".whoami"],
                   env=cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD), cwd=ROOT,
                   check=True, capture_output=True, timeout=60)
    t = term(INPUTLAYER_ADMIN_PASSWORD=None)
    t.expect("Username:")
    t.type("admin<Enter>")
    t.expect("Password:")
    t.type(ADMIN_PASSWORD + "<Enter>")
    t.expect("admin@local:default>")
    t.type("<C-d>")
    assert t.finish() == 0
    assert ADMIN_PASSWORD not in t.screen


def test_wrong_login_exits_2(term, tmp_path, config_file):
    subprocess.run([sys.executable, "-m", "repl", "--data-dir", str(tmp_path / "data"), "-c", ".whoami"],
                   env=cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD), cwd=ROOT,
                   check=True, capture_output=True, timeout=60)
    t = term("--user", "admin", INPUTLAYER_ADMIN_PASSWORD=None)
    t.expect("Password for admin:")
    t.type("wrong-password<Enter>")
    t.expect("authentication failed")
    assert t.finish() == 2


def test_auto_suggestion_never_shows_a_secret():
    from prompt_toolkit.buffer import Buffer
    from prompt_toolkit.history import InMemoryHistory
    from repl.prompt_session import SafeAutoSuggest

    history = InMemoryHistory()
    for line in (".user password bob N3w-pass-123", ".user list"):
        history.append_string(line)
    buffer = Buffer(history=history)
    suggest = SafeAutoSuggest()
    assert suggest.get_suggestion(buffer, Document(".user l")).text == "ist"
    assert suggest.get_suggestion(buffer, Document(".user p")) is None


def test_config_runs_in_the_shell_and_keeps_the_file_s_comments(local, tmp_path):
    from repl.settings import ShellSide

    config_file = tmp_path / "config.toml"
    config_file.write_text("# mine\n[shell]\nformat = \"table\"   # for now\n")
    status, out, err, _ = run_shell(ShellSide(local, config_file), tmp_path,
                                    ".config set shell.format json\r.config get shell.format\r.config set x 1\r\x04")
    assert status == 0 and err == "error: unknown key 'x'\n"
    assert f"Set shell.format in {config_file}." in out and "shell.format | json" in out
    assert config_file.read_text() == "# mine\n[shell]\nformat = \"json\"   # for now\n"
