"""The WebSocket protocol of protocol.md, against a real server on 127.0.0.1 (in this process)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from websockets.exceptions import ConnectionClosed

from backend.config import with_values
from backend.server import ServerOptions
from serverkit import ADMIN_PASSWORD, Client, Servers, logged_in


@pytest.fixture
def serve(tmp_path, cheap_config):
    """serve(**config_values, options=...) -> a running ServerThread, stopped after the test."""
    servers = Servers()

    def start(options: ServerOptions | None = None, **values):
        values.setdefault("port", 0)
        config = with_values(cheap_config, {f"server.{k}": v for k, v in values.items()})
        return servers.start(tmp_path / "data", config, options=options)

    yield start
    servers.stop_all()


@pytest.fixture
def live(serve):
    return serve()


def create_user(admin: Client, name: str, role: str = "viewer", password: str = "pw-123456") -> None:
    reply = admin.execute(f".user create {name} {password} {role}")
    assert reply["type"] == "result", reply


# --- authentication ----------------------------------------------------------------------------

def test_login_answers_authenticated_with_session_details(live):
    with Client(live.url) as c:
        reply = c.login()
    assert reply["type"] == "authenticated"
    assert uuid.UUID(reply["session_id"]).version == 4
    assert reply["knowledge_graph"] == "default"
    assert reply["role"] == "admin" and reply["username"] == "admin"
    assert reply["version"]


def test_failures_are_indistinguishable_and_cost_one_verification_each(live):
    hasher = live.engine.hasher
    with Client(live.url) as c:
        for message in ({"type": "login", "username": "admin", "password": "wrong-password"},
                        {"type": "login", "username": "nobody", "password": "whatever-1"},
                        {"type": "authenticate", "api_key": "il_bogus"},
                        {"type": "authenticate", "api_key": "il_" + "A" * 43 + "_AAAAAA"}):
            before = hasher.verifications
            assert c.request(message) == {"type": "auth_error", "message": "Invalid credentials"}
            assert hasher.verifications - before == 1
        # The client may try again on the same connection.
        assert c.login()["type"] == "authenticated"


def test_api_key_authentication(live):
    with logged_in(live.url) as admin:
        key = admin.execute(".apikey create ci role=viewer")["rows"][0][0]
    with Client(live.url) as c:
        reply = c.authenticate(key)
        assert reply["type"] == "authenticated" and reply["role"] == "viewer"
        assert c.execute(".whoami")["rows"] == [["admin", "viewer", "api_key:ci", "default"]]


def test_authentication_deadline(serve):
    server = serve(auth_timeout_secs=1)
    with Client(server.url) as c:
        started = time.monotonic()
        assert c.recv(timeout=5) == {"type": "auth_error", "message": "Authentication timeout (1s)"}
        assert c.closed() == (1008, "Authentication timeout")
        assert 0.9 < time.monotonic() - started < 4


@pytest.mark.parametrize("first", [
    {"type": "execute", "program": ".user create mallory pw-123456 admin"},
    {"type": "ping"},
    {"type": "bogus"},
    "not json at all",
    "[1, 2, 3]",
    b"\x00binary\xff",
])
def test_anything_before_authentication_closes_the_connection(live, first):
    with Client(live.url) as c:
        c.send(first)
        assert c.recv() == {"type": "auth_error", "message": "Authentication required"}
        assert c.closed()[0] == 1008
    with logged_in(live.url) as admin:
        assert [r[0] for r in admin.execute(".user list")["rows"]] == ["admin"]   # nothing ran


def test_second_login_is_refused(live):
    with logged_in(live.url) as c:
        assert c.login() == {"type": "error", "message": "Already authenticated"}
        assert c.execute(".whoami")["type"] == "result"


def test_kg_query_parameter(live):
    with logged_in(live.url) as admin:
        admin.execute(".kg create sales")
        create_user(admin, "carol")
        admin.execute(".kg acl grant sales carol viewer")
        create_user(admin, "dave")
    with Client(live.url + "?kg=sales") as c:
        assert c.login("carol", "pw-123456")["knowledge_graph"] == "sales"
    with Client(live.url + "?kg=sales") as c:
        assert c.login("dave", "pw-123456") == {"type": "error", "message": "Access denied"}
        assert c.closed()[0] == 1008
    with Client(live.url + "?kg=nope") as c:
        assert c.login() == {"type": "error", "message": "Access denied"}
    with Client(live.url) as c:      # no ?kg= and no access to default: bound to no KG
        assert c.login("dave", "pw-123456")["knowledge_graph"] == ""


# --- after authentication ----------------------------------------------------------------------

def test_execute_result_error_and_switched_kg(live):
    with logged_in(live.url) as c:
        reply = c.execute(".user list")
        assert reply["type"] == "result"
        assert reply["columns"] == ["username", "role", "created_at", "last_login_at"]
        assert reply["row_count"] == reply["total_count"] == 1 and reply["truncated"] is False
        assert isinstance(reply["execution_time_ms"], int)
        assert "switched_kg" not in reply
        assert c.execute(".user drop bob") == {"type": "error", "message": "User 'bob' not found"}
        created = c.execute(".kg create sales")
        assert created["switched_kg"] == "sales"
        assert created["rows"] == [["Knowledge graph 'sales' created."], ["Switched to knowledge graph: sales"]]
        assert c.execute(".kg use default")["switched_kg"] == "default"
        assert c.request({"type": "ping"}) == {"type": "pong"}


def test_a_quick_refusal_is_audited_before_its_reply(live):
    """Quick commands run on the event loop; their refusal's audit record is written off it,
    but always before the client hears of the refusal."""
    with logged_in(live.url) as admin:
        create_user(admin, "wes")
        admin.execute(".kg create private")
    with logged_in(live.url, "wes", "pw-123456") as wes:
        for _ in range(3):
            assert wes.execute(".kg acl check private admin") == {"type": "error", "message": "Access denied"}
            with live.engine.store.read():
                latest = live.engine.store.audit_records(limit=1, actor="wes", action=None, since=None)[0]
            assert (latest["action"], latest["outcome"]) == ("acl.check", "denied")
    with logged_in(live.url) as admin:
        denied = [r for r in admin.execute(".audit user=wes action=acl.check")["rows"] if r[6] == "denied"]
        assert len(denied) == 3


def test_multi_line_program_is_authorized_line_by_line(live):
    with logged_in(live.url) as admin:
        create_user(admin, "vic", "editor")
    with logged_in(live.url, "vic", "pw-123456") as vic:
        reply = vic.execute(".kg create mine\n.user create eve pw-123456 admin\n.kg create other")
        assert reply == {"type": "error",
                         "message": "line 2: Permission denied: only admins can manage users"}
        names = [r[0] for r in vic.execute(".kg list")["rows"]]
        assert "mine" in names and "other" not in names       # line 1 stays done, line 3 never ran
    with logged_in(live.url) as admin:
        reply = admin.execute(".user create eve pw-123456\n.user role eve editor")
        assert reply["rows"] == [["User 'eve' created with role 'viewer'."], ["Role updated to 'editor' for 'eve'."]]


def test_large_results_are_streamed(serve):
    server = serve(options=ServerOptions(stream_threshold=600, chunk_rows=7))
    with logged_in(server.url) as c:
        c.send({"type": "execute", "program": ".help"})
        start = c.recv()
        assert start["type"] == "result_start"
        assert start["columns"] == ["message"] and start["truncated"] is False
        rows, index = [], 0
        while True:
            message = c.recv()
            if message["type"] == "result_end":
                break
            assert message["type"] == "result_chunk" and message["chunk_index"] == index
            assert 0 < len(message["rows"]) <= 7
            rows += message["rows"]
            index += 1
        assert message == {"type": "result_end", "row_count": len(rows), "chunk_count": index}
        assert start["total_count"] == len(rows)
        assert c.execute(".whoami")["type"] == "result"      # small replies still come whole


def test_message_over_the_size_limit_closes_with_1009(serve):
    server = serve(max_message_bytes=4096)
    with logged_in(server.url) as c:
        c.send({"type": "execute", "program": ".help " + "x" * 5000})
        assert c.closed()[0] == 1009
    with logged_in(server.url) as other:
        assert other.execute(".whoami")["type"] == "result"


def test_rate_limit(live):
    with logged_in(live.url) as c:
        for _ in range(150):
            c.send({"type": "ping"})
        replies = [c.recv() for _ in range(150)]
        limited = [r for r in replies if r.get("message") == "Rate limit exceeded"]
        assert sum(r["type"] == "pong" for r in replies) + len(limited) == 150
        assert len(limited) >= 40
        time.sleep(1.05)        # the window is one second of wall time: nothing to await
        assert c.request({"type": "ping"}) == {"type": "pong"}


def test_after_login_bad_messages_are_answered_and_binary_closes(live):
    with logged_in(live.url) as c:
        assert c.request("{not json")["type"] == "error"
        assert c.request({"type": "launch"})["message"] == "Unknown message type 'launch': use execute or ping"
        assert c.request({"type": "execute", "program": 5})["type"] == "error"
        assert c.execute(".whoami")["type"] == "result"
        c.send(b"\x01\x02")
        assert c.recv()["type"] == "error"
        assert c.closed()[0] == 1003


# --- live revocation ---------------------------------------------------------------------------

def assert_ended(client: Client, reason: str, within: float = 2.0) -> None:
    started = time.monotonic()
    assert client.recv(timeout=within) == {"type": "error", "message": f"Session ended: {reason}"}
    assert client.closed()[0] == 1008
    assert time.monotonic() - started < within


def test_dropping_a_user_ends_their_sessions_at_once(live):
    with logged_in(live.url) as admin:
        create_user(admin, "bob", "editor")
        bob = logged_in(live.url, "bob", "pw-123456")
        assert admin.execute(".user drop bob")["type"] == "result"
        assert_ended(bob, "user dropped")


def test_revoking_a_key_ends_its_sessions_and_only_those(live):
    with logged_in(live.url) as admin:
        key = admin.execute(".apikey create etl role=editor")["rows"][0][0]
        other = admin.execute(".apikey create other")["rows"][0][0]
        with Client(live.url) as keyed, Client(live.url) as untouched:
            assert keyed.authenticate(key)["type"] == "authenticated"
            assert untouched.authenticate(other)["type"] == "authenticated"
            admin.execute(".apikey revoke etl")
            assert_ended(keyed, "API key revoked")
            assert untouched.execute(".whoami")["type"] == "result"
        with Client(live.url) as again:
            assert again.authenticate(key) == {"type": "auth_error", "message": "Invalid credentials"}


def test_session_list_and_kill(live):
    with logged_in(live.url) as admin:
        create_user(admin, "bob")
        bob = logged_in(live.url, "bob", "pw-123456")
        listed = admin.execute(".session list")
        assert listed["columns"] == ["session_id", "username", "auth", "address", "knowledge_graph", "connected_at",
                                     "node", "current"]
        assert sorted(r[1] for r in listed["rows"]) == ["admin", "bob"]
        assert all(r[3] == "127.0.0.1" for r in listed["rows"])
        own = bob.execute(".session list")["rows"]
        assert [r[1] for r in own] == ["bob"]
        assert bob.execute(f".session kill {own[0][0]}")["message"] == \
            "Permission denied: only admins can kill sessions"
        sid = own[0][0]
        assert admin.execute(f".session kill {sid}")["rows"] == [[f"Session '{sid}' closed."]]
        assert_ended(bob, "killed by an administrator")
        assert [r[1] for r in admin.execute(".session list")["rows"]] == ["admin"]
        assert admin.execute(f".session kill {sid}") == {"type": "error", "message": f"Session '{sid}' not found"}


def test_password_change_ends_the_users_other_password_sessions(live):
    with logged_in(live.url) as admin:
        create_user(admin, "bob")
        key = admin.execute(".apikey create bobs user=bob")["rows"][0][0]
        first = logged_in(live.url, "bob", "pw-123456")
        second = logged_in(live.url, "bob", "pw-123456")
        keyed = Client(live.url)
        keyed.authenticate(key)
        assert first.execute(".user password bob new-pass-789")["type"] == "result"
        assert_ended(second, "password changed")
        assert first.execute(".whoami")["rows"][0][0] == "bob"       # the session that changed it stays
        assert keyed.execute(".whoami")["type"] == "result"           # key sessions are not password sessions
        first.close()
        keyed.close()


def test_role_and_acl_changes_apply_to_the_next_command(live):
    with logged_in(live.url) as admin:
        create_user(admin, "bob", "admin")
        with logged_in(live.url, "bob", "pw-123456") as bob:
            assert bob.execute(".user list")["type"] == "result"
            admin.execute(".user role bob viewer")
            assert bob.execute(".user list")["message"] == "Permission denied: only admins can manage users"
            admin.execute(".kg create sales")
            assert bob.execute(".kg acl list sales")["message"] == "Access denied"
            admin.execute(".kg acl grant sales bob viewer")
            assert bob.execute(".kg acl list sales")["type"] == "result"


def test_a_change_by_another_process_reaches_the_server_within_a_second(live, tmp_path, config_file):
    from conftest import cli_env, run_cli
    with logged_in(live.url) as admin:
        create_user(admin, "bob")
    bob = logged_in(live.url, "bob", "pw-123456")
    proc = run_cli(["--data-dir", str(tmp_path / "data"), "-c", ".user drop bob"],
                   env=cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    assert proc.returncode == 0, proc.stderr
    assert_ended(bob, "user dropped", within=1.0)


def test_expired_key_session_ends(live):
    with logged_in(live.url) as admin:
        key = admin.execute(".apikey create brief expires=1s")["rows"][0][0]
    with Client(live.url) as c:
        assert c.authenticate(key)["type"] == "authenticated"
        assert_ended(c, "API key expired", within=3.5)


def test_revoking_your_own_key_answers_then_ends(live):
    with logged_in(live.url) as admin:
        key = admin.execute(".apikey create self-destruct")["rows"][0][0]
    with Client(live.url) as c:
        c.authenticate(key)
        assert c.execute(".apikey revoke self-destruct")["rows"] == [["API key 'self-destruct' revoked."]]
        assert_ended(c, "API key revoked")


def test_lockout_commands_over_the_wire(live):
    with Client(live.url) as c:
        for _ in range(3):
            c.request({"type": "login", "username": "admin", "password": "nope-nope"})
    with logged_in(live.url) as admin:
        assert admin.execute(".lockout list")["rows"] == [["127.0.0.1", "3", ""]]
        assert admin.execute(".lockout clear 127.0.0.1")["rows"] == [["Lockout cleared for 127.0.0.1."]]
        assert admin.execute(".lockout list")["rows"] == []


def test_status_reports_target_and_sessions(live):
    with logged_in(live.url) as c:
        rows = dict(c.execute(".status")["rows"])
        assert rows["target"] == f"127.0.0.1:{live.port}"
        assert rows["sessions"] == "1"
