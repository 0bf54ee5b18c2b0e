"""The shell as psql users expect it (issue 14): pasted blocks, bare `exit`/`help`, Ctrl-C,
lost and ended connections, password prompts after the checks, `| tee`, role-aware help and
completion, display settings, `.read`. Each interactive behaviour runs on a pseudo-terminal at
80x24 and at a wide size; the finer cases go through a pipe (create_pipe_input)."""

from __future__ import annotations

import json
import shlex
import socket
import sys
import threading

import pexpect
import pytest
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from websockets.sync.server import serve

from backend.config import Config, with_values
from backend.language.registry import COMMANDS
from backend.result import Result
from backend.targets.local import LocalBackend
from repl.completer import LIVE_SOURCES, CommandCompleter
from repl.environment import fake_environment
from repl.interactive import Shell

from conftest import ADMIN_PASSWORD, ROOT, run_cli, cli_env
from ptyshell import Terminal, plain, pty_env
from serverkit import Client, ServerProcess, server_env
from test_interactive import run_shell

SIZES = {"80x24": (24, 80), "160x40": (40, 160)}
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


@pytest.fixture
def local(tmp_path, cheap_config):
    backend = LocalBackend(str(tmp_path / "data"), cheap_config)
    backend.bootstrap(ADMIN_PASSWORD)
    backend.login("admin", ADMIN_PASSWORD)
    yield backend
    backend.close()


@pytest.fixture(params=SIZES.values(), ids=SIZES.keys())
def size(request):
    return request.param


@pytest.fixture
def start(tmp_path, config_file, size):
    """start(*args, **env) -> a Terminal running the shell (on tmp_path/data unless --url)."""
    started: list[Terminal] = []

    def run(*args: str, **extra: str) -> Terminal:
        target = [] if "--url" in args else ["--data-dir", str(tmp_path / "data")]
        rows, columns = size
        t = Terminal([*target, *args], pty_env(tmp_path, config_file, **extra), rows=rows, columns=columns)
        started.append(t)
        return t

    yield run
    for t in started:
        t.child.close(force=True)


@pytest.fixture
def server(tmp_path, config_file):
    """start(port=0) -> a `python -m backend` on tmp_path/srv; all stopped at the end."""
    started: list[ServerProcess] = []

    def run(port: int = 0) -> ServerProcess:
        s = ServerProcess(["--data-dir", str(tmp_path / "srv"), "--port", str(port)],
                          server_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
        started.append(s)
        return s

    yield run
    for s in started:
        s.kill()


# --- 1. a pasted block runs line by line -------------------------------------------------------------

def test_a_pasted_block_runs_each_line_in_order(start):
    t = start()
    t.expect("admin@local:default>")
    t.type(PASTE_START + ".kg create sales\r.kg list\r.whoami\r" + PASTE_END)
    t.expect("Switched to knowledge graph: sales")
    t.expect("sales   | owner")
    t.expect("admin    | admin | password | sales")
    t.expect("admin@local:sales>")
    t.type(".q<Enter>")
    assert t.finish() == 0
    assert "Usage" not in t.screen and "error" not in t.screen


def test_a_paste_without_a_final_newline_waits_for_enter_and_history_keeps_no_secret(local, tmp_path):
    keys = PASTE_START + ".kg list\r.user create bob 'Pasted-Secret-1' viewer" + PASTE_END + "\r.q\r"
    status, out, err, _ = run_shell(local, tmp_path, keys)
    assert (status, err) == (0, "")
    assert out.index("default | owner") < out.index("User 'bob' created with role 'viewer'.")
    history = (tmp_path / "history").read_text()
    assert "Pasted-Secret-1" not in history and "+.user create bob ******** viewer" in history


# --- 2. exit, quit, \q, help, \? ---------------------------------------------------------------------

@pytest.mark.parametrize("word", ["exit", "quit", "\\q"])
def test_bare_quit_words_leave_at_the_prompt(start, word):
    t = start()
    t.expect("admin@local:default>")
    t.type(word + "<Enter>")
    assert t.finish() == 0
    assert "error" not in t.screen


def test_help_and_backslash_question_mark_show_the_help(start):
    t = start()
    t.expect("admin@local:default>")
    for word in ("help", "\\?"):
        t.type(word + "<Enter>")
        t.expect(".kg acl list|grant|revoke|check")
        t.expect("admin@local:default>")
    t.type("<C-d>")
    assert t.finish() == 0
    assert "error:" not in t.screen


@pytest.mark.parametrize("word", ["exit", "quit", "\\q", "help", "\\?"])
def test_bare_words_stay_errors_in_script_mode_with_a_hint(shell, word):
    proc = shell(word + "\n.whoami\n")
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.startswith("<stdin>:1: error: ") and proc.stderr.endswith("(use .quit / .help)\n")


# --- 3. Ctrl-C while connecting, and during a slow command ---------------------------------------------

def test_ctrl_c_during_a_hanging_handshake_says_interrupted(start):
    with socket.create_server(("127.0.0.1", 0)) as listener:   # accepts TCP, never answers
        listener.settimeout(20)
        t = start("--url", f"ws://127.0.0.1:{listener.getsockname()[1]}/ws")
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:   # the shell now waits for the handshake's answer
                request += conn.recv(4096)
            t.type("<C-c>")
            t.expect("interrupted")
            assert t.finish() == 2
    assert "Traceback" not in t.screen


class SilentServer:
    """Speaks just enough protocol to log in and answer, but never answers `.slow`."""

    def __init__(self):
        self.got_slow = threading.Event()
        self.logins = 0
        self.server = serve(self._handle, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/ws"

    def _handle(self, ws):
        for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "login":
                self.logins += 1
                ws.send(json.dumps({"type": "authenticated", "session_id": "s1", "knowledge_graph": "default",
                                    "version": "0", "role": "admin", "username": "admin"}))
            elif msg["program"] == ".slow":
                self.got_slow.set()
            else:
                rows = [["admin", "admin", "password", "default"]] if msg["program"] == ".whoami" else []
                ws.send(json.dumps({"type": "result", "columns": ["username", "role", "auth", "knowledge_graph"],
                                    "rows": rows, "execution_time_ms": 7}))

    def close(self):
        self.server.shutdown()


def test_ctrl_c_during_a_slow_remote_command_keeps_the_shell(start):
    fake = SilentServer()
    try:
        t = start("--url", fake.url)
        t.expect("admin@127.0.0.1:")
        t.type(".slow<Enter>")
        assert fake.got_slow.wait(10)
        t.type("<C-c>")
        t.expect("interrupted")
        t.expect("admin@127.0.0.1:")
        t.type(".timing on<Enter>")
        t.expect("Timing is on.")
        t.type(".whoami<Enter>")       # the interrupted request's connection was dropped: a fresh one
        t.expect("Reconnected.")
        t.expect("admin    | admin | password | default")
        t.expect("Time: 7 ms (server)")
        t.type("<C-d>")
        assert t.finish() == 0
        assert fake.logins == 2 and "Traceback" not in t.screen
    finally:
        fake.close()


# --- 4. a lost connection, an ended session ------------------------------------------------------------

def test_a_server_restart_is_reported_while_idle_and_the_next_command_runs(start, server):
    first = server()
    t = start("--url", first.url)
    t.expect("admin@127.0.0.1:")
    first.stop()
    t.expect("lost: Server shutting down")          # said at once, nothing typed
    t.expect("(the next command reconnects)")
    server(first.port)
    t.type(".kg list<Enter>")
    t.expect("Reconnected.")
    t.expect("default | owner")                     # the command ran, it was not thrown away
    t.type("<C-d>")
    assert t.finish() == 0


def test_a_killed_session_is_reported_while_idle_and_the_shell_exits_2(start, server):
    srv = server()
    t = start("--url", srv.url)
    t.expect("admin@127.0.0.1:")
    with Client(srv.url) as admin:
        mine = admin.login()["session_id"]
        rows = admin.execute(".session list")["rows"]
        (shell_session,) = [r[0] for r in rows if r[0] != mine]
        assert admin.execute(f".session kill {shell_session}")["type"] == "result"
        t.expect("error: Session ended: killed by an administrator")
        assert t.finish() == 2
        assert [r[0] for r in admin.execute(".session list")["rows"]] == [mine]   # no new login
    assert "Reconnected" not in t.screen


# --- 5. hidden password prompts come after the checks ------------------------------------------------

def test_checks_that_need_no_password_fail_before_the_prompt(local, tmp_path):
    keys = ".user create admin\r.user password nobody\r.user create editor\r.user create bob editor\r.q\r"
    status, out, err, _ = run_shell(local, tmp_path, keys, passwords=["bob-pass-1", "bob-pass-1"])
    assert err.splitlines() == [
        "error: User 'admin' already exists",
        "error: User 'nobody' not found",
        "error: 'editor' is a role, not a user name. "
        "Usage: .user create <name> [<password>] [<role>] [password=@<file>|-]"]
    assert "User 'bob' created with role 'editor'." in out   # and the prompt comes when it may


def test_an_existing_user_fails_before_the_hidden_prompt_on_a_terminal(start):
    t = start()
    t.expect("admin@local:default>")
    t.type(".user create admin<Enter>")
    t.expect("error: User 'admin' already exists")
    t.expect("admin@local:default>")
    t.type("<C-d>")
    assert t.finish() == 0
    assert "Password:" not in t.screen


# --- 6. stdin decides ------------------------------------------------------------------------------

def test_output_piped_to_tee_keeps_the_prompt(tmp_path, config_file, size):
    log = tmp_path / "log"
    command = (f"{shlex.quote(sys.executable)} -m repl --data-dir {shlex.quote(str(tmp_path / 'data'))}"
               f" | tee {shlex.quote(str(log))}")
    rows, columns = size
    child = pexpect.spawn("/bin/sh", ["-c", command], env=pty_env(tmp_path, config_file), cwd=str(ROOT),
                          dimensions=(rows, columns), encoding="utf-8", timeout=20)
    child.expect("admin@local:default>")
    child.send(".whoami\r")
    child.expect("admin    \\| admin \\| password \\| default")
    child.send(".q\r")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "admin    | admin | password | default" in log.read_text()


# --- 7. completion and help follow the caller's role and target ------------------------------------------

class Live:
    def __init__(self, role: str, **names):
        self.identity = {"role": role}
        self.names = {kind: tuple(names.get(kind, ())) for kind in LIVE_SOURCES}


def offered(text: str, role: str, local: bool = False, **names) -> list[str]:
    completer = CommandCompleter(Live(role, **names), local=local)
    return [c.text for c in completer.get_completions(Document(text), None)]


def test_completion_follows_the_role_and_the_target():
    editor = offered("", "editor")
    assert ".apikey " not in editor and ".audit " not in editor and ".lockout " not in editor
    assert ".user " in editor and ".kg " in editor and ".session " in editor
    assert offered(".user ", "editor") == ["password ", "show "]
    assert "create " in offered(".user ", "admin")
    assert ".session " not in offered("", "admin", local=True)
    assert ".apikey " in offered("", "admin")


def test_session_ids_and_locked_addresses_are_completed():
    names = {"sessions": ["3f2a9c1e-aaaa", "7b00d4e2-bbbb"], "addresses": ["10.0.0.7", "2001:db8::1"]}
    assert offered(".session kill ", "admin", **names) == ["3f2a9c1e-aaaa ", "7b00d4e2-bbbb "]
    assert offered(".session kill 7b", "admin", **names) == ["7b00d4e2-bbbb "]
    assert offered(".lockout clear 2", "admin", **names) == ["2001:db8::1 "]


def test_a_locked_user_name_from_outside_is_completed_quoted_and_shown_escaped():
    names = {"addresses": ["10.0.0.7", "user:bob smith", "user:\x1b[2Jx"]}
    completer = CommandCompleter(Live("admin", **names))
    offers = list(completer.get_completions(Document(".lockout clear user:"), None))
    assert [c.text for c in offers] == ['"user:bob smith" ', 'user:\x1b[2Jx ']   # one word as the lexer reads it
    assert [c.display_text for c in offers] == ["user:bob smith", "user:\\x1b[2Jx"]


def test_help_lists_what_the_caller_may_run_on_this_target(local):
    local.execute(".user create ed 'ed-password-1' editor")
    assert ".session" not in str(local.execute(".help").rows)       # local: no sessions
    local.login("ed", "ed-password-1")
    listed = "\n".join(row[0] for row in local.execute(".help").rows)
    for hidden in (".apikey", ".audit", ".user list", "user create", ".lockout"):
        assert hidden not in listed
    assert ".user password|show " in listed and ".kg [list|create|use|drop]" in listed and ".whoami" in listed
    assert [r[0].split()[:2] for r in local.execute(".help .user").rows] == [[".user", "password"],
                                                                            [".user", "show"]]


def test_an_editor_is_not_offered_admin_commands_on_a_terminal(start, tmp_path, config_file):
    run_cli(["--data-dir", str(tmp_path / "data"), "-c", ".user create ed 'ed-password-1' editor"],
            env=cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    t = start("--user", "ed", INPUTLAYER_PASSWORD="ed-password-1")
    t.expect("ed@local>")          # no KG: an editor without grants reaches none
    t.type(".help<Enter>")
    t.expect(".whoami")
    t.expect("ed@local>")
    t.type(".a<Tab>")             # nothing starts with .a for an editor: the line stays
    t.type("<C-c>")
    t.expect("ed@local>")
    t.type(".us<Tab>")
    t.expect(".user")
    t.type("<Tab>")
    t.expect("password")
    t.type("<C-c>")
    t.expect("ed@local>")
    t.type("<C-d>")
    assert t.finish() == 0
    for hidden in (".apikey", ".audit", ".user create", ".session"):
        assert hidden not in t.screen


# --- 8. display settings, the start-up line ----------------------------------------------------------

def test_display_settings_in_a_session(local, tmp_path):
    keys = ".format json\r.kg list\r.format table\r.expanded on\r.kg list\r.expanded off\r" \
           ".timing on\r.whoami\r.timing off\r.format yaml\r.q\r"
    status, out, err, shell = run_shell(local, tmp_path, keys)
    assert status == 0
    assert '{"ok": true, "columns": ["name", "access"], "rows": [["default", "owner"]]}' in out
    assert "-[ RECORD 1 ]\nname   | default\naccess | owner\n1 row\n" in out
    assert out.count("Time: ") == 1 and "Time: " in out.split("admin    | admin")[1]
    assert err == "error: Invalid format 'yaml': use table, plain, json or csv\n"
    assert (shell.settings.fmt, shell.settings.expanded, shell.settings.timing) == ("table", "off", False)


def test_pager_off_prints_long_output(local, tmp_path):
    for n in range(45):
        local.execute(f".user create user-{n} pw-{n}-pw-pw-pw")
    paged = tmp_path / "paged"
    env = fake_environment(env={"PAGER": f"cat > {paged}"})
    with create_pipe_input() as pipe:
        pipe.send_text(".pager on\r.user list\r.pager off\r.user list\r.q\r")
        shell = Shell(local, env, with_values(Config(), {"shell.history_file": str(tmp_path / "h")}),
                      input=pipe, output=DummyOutput())
        assert shell.run() == 0
    out = env.stdout.getvalue()
    assert "Pager is on. It runs $PAGER" in out and "Pager is off." in out
    assert "user-44" in paged.read_text() and "user-44" in out


def test_settings_are_declared_in_the_registry_as_shell_commands():
    shell_side = {c.name for c in COMMANDS if c.shell_only}
    assert {".quit", ".format", ".expanded", ".timing", ".pager", ".read"} <= shell_side
    assert "$PAGER" in next(c for c in COMMANDS if c.name == ".pager").summary


def test_start_up_line_and_settings_on_a_terminal(start):
    t = start()
    t.expect("Type .help for help.")
    t.expect("admin@local:default>")
    t.type(".expanded on<Enter>")
    t.expect("Expanded display is on.")
    t.type(".timing on<Enter>")
    t.expect("Timing is on.")
    t.type(".whoami<Enter>")
    t.expect("-[ RECORD 1 ]")
    t.expect("username        | admin")
    t.expect("Time: ")
    t.expect("admin@local:default>")
    t.type("<C-d>")
    assert t.finish() == 0


def test_no_start_up_line_in_script_mode(shell):
    assert "Type .help" not in shell(".whoami\n").stdout


# --- 9. .read FILE -------------------------------------------------------------------------------

def test_read_runs_a_file_as_a_script(local, tmp_path):
    script = tmp_path / "setup.il"
    script.write_text("# setup\n.kg create hr\n.kg use nowhere\n.kg create never\n")
    keys = f".read {script}\r.kg list\r.read {tmp_path / 'missing'}\r.q\r"
    status, out, err, shell = run_shell(local, tmp_path, keys)
    assert status == 0
    assert err.splitlines() == [f"{script}:3: error: Knowledge graph 'nowhere' not found",
                                f"error: cannot read {tmp_path / 'missing'}: No such file or directory"]
    assert "hr      | owner" in out and "never" not in out
    assert shell._prompt() == "admin@local:hr> "


def test_read_on_a_terminal(start, tmp_path):
    script = tmp_path / "s.il"
    script.write_text(".kg create hr\n.bogus\n")
    t = start()
    t.expect("admin@local:default>")
    t.type(f".read {script}<Enter>")
    t.expect("Switched to knowledge graph: hr")
    t.expect(f"{script}:2: error: Unknown command: .bogus")
    t.expect("admin@local:hr>")
    t.type("<C-d>")
    assert t.finish() == 0
    assert plain(t.raw).count("Switched to knowledge graph: hr") == 1


class WatchedBackend:
    """A remote-like backend whose watch() listener the test calls, as a reader thread would."""
    target = "db1.example:8080"

    def __init__(self):
        self.listener = None
        self.reconnects = 0
        self.ran: list[str] = []

    def watch(self, listener):
        self.listener = listener

    def execute(self, line: str) -> Result:
        if line == ".whoami":
            return Result(["username", "role", "auth", "knowledge_graph"], [["alice", "admin", "password", "sales"]])
        self.ran.append(line)
        return Result.message("ran " + line)

    def reconnect(self):
        self.reconnects += 1

    def close(self):
        pass


def test_a_lost_connection_told_while_idle_shows_in_the_toolbar_and_the_command_runs(tmp_path):
    backend = WatchedBackend()
    config = with_values(Config(), {"shell.history_file": str(tmp_path / "history")})
    env = fake_environment()
    with create_pipe_input() as pipe:
        shell = Shell(backend, env, config, input=pipe, output=DummyOutput())
        backend.listener("connection to ws://db1/ws lost: Server shutting down", False)
        shell._take_notices()
        assert "disconnected" in shell._toolbar()
        pipe.send_text(".status\r.q\r")
        assert shell.run() == 0
    assert env.stderr.getvalue().count("lost: Server shutting down (the next command reconnects)") == 1
    assert backend.reconnects == 1 and backend.ran.count(".status") == 1
    assert "Reconnected.\nran .status\n" in env.stdout.getvalue()


def test_an_ended_session_told_while_idle_leaves_with_2_and_never_logs_in_again(tmp_path):
    backend = WatchedBackend()
    config = with_values(Config(), {"shell.history_file": str(tmp_path / "history")})
    env = fake_environment()
    with create_pipe_input() as pipe:
        shell = Shell(backend, env, config, input=pipe, output=DummyOutput())
        backend.listener("Session ended: killed by an administrator", True)
        pipe.send_text(".status\r")
        assert shell.run() == 2
    assert env.stderr.getvalue() == "error: Session ended: killed by an administrator\n"
    assert backend.reconnects == 0 and ".status" not in backend.ran
