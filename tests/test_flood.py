"""No client freezes the server or fills its disk (security.md, Transport and Lockout): long
programs leave the event loop and pay per line, the pre-login phase is rate-limited, and what an
unauthenticated client sends cannot reach the audit log in bulk."""

from __future__ import annotations

import asyncio
import json

import pytest

from backend.config import with_values
from fakes import FakeClock
from serverkit import Client, Servers, logged_in


@pytest.fixture
def serve(tmp_path, cheap_config):
    servers = Servers()

    def start(clock=None, **values):
        values.setdefault("server.port", 0)
        return servers.start(tmp_path / "data", with_values(cheap_config, values), clock=clock)

    yield start
    servers.stop_all()


def audit_rows(server, **filters) -> list[dict]:
    store = server.engine.store
    with store.read():
        return store.audit_records(limit=100_000, actor=filters.get("actor"), action=filters.get("action"),
                                   since=None)


def test_a_long_program_lets_other_clients_in_while_it_runs(serve):
    """The flood's first lines schedule a callback on the event loop, standing for any other
    client's work: it must run while the flood is still running, not after all its lines."""
    server = serve()
    with logged_in(server.url) as admin:
        assert admin.execute(".user create flood pw-123456 viewer")["type"] == "result"
    engine = server.engine
    original = engine.execute_program
    done: list[int] = []                  # flood lines run so far
    others_ran_at: list[int] = []         # ... when the other work got the loop

    def counting(session, program, **kwargs):
        if session.username == "flood":
            if not done:
                asyncio.get_running_loop().call_soon(lambda: others_ran_at.append(len(done)))
            done.extend(program)
        return original(session, program, **kwargs)

    engine.execute_program = counting
    with logged_in(server.url, "flood", "pw-123456") as flood, logged_in(server.url) as other:
        reply = flood.execute("\n".join([".whoami", ".kg"] * 5_000), timeout=60)
        assert reply["type"] == "result" and len(done) == 10_000
        assert others_ran_at and others_ran_at[0] < 10_000
        assert other.request({"type": "ping"}) == {"type": "pong"}


def test_each_line_of_a_program_counts_toward_the_rate_limit(serve):
    server = serve(clock=FakeClock())         # time stands still: the budget cannot refill
    with logged_in(server.url) as c:
        assert c.execute("\n".join([".whoami"] * 150))["type"] == "result"
        assert c.request({"type": "ping"}) == {"type": "error", "message": "Rate limit exceeded"}


def test_a_program_over_max_program_lines_is_refused_and_nothing_runs(serve):
    server = serve(**{"server.max_program_lines": 100})
    with logged_in(server.url) as c:
        program = "\n".join([".kg create toolong"] + [".whoami"] * 100)
        reply = c.execute(program)
        assert reply == {"type": "error",
                         "message": "Program too long: 101 lines; at most 100 in one execute. Nothing was run."}
    with logged_in(server.url) as c:
        assert "toolong" not in json.dumps(c.execute(".kg list")["rows"])
        assert c.execute("\n".join([".whoami"] * 100) + "\n")["type"] == "result"     # the limit itself is fine


def test_before_login_an_eleventh_message_within_a_second_is_refused_and_closed(serve):
    server = serve(clock=FakeClock())
    with Client(server.url) as c:
        for _ in range(11):
            c.send({"type": "authenticate", "api_key": "il_wrong"})
        replies = [c.recv() for _ in range(11)]
        assert [r["message"] for r in replies[:10]] == ["Invalid credentials"] * 10
        assert replies[10] == {"type": "auth_error", "message": "Rate limit exceeded"}
        assert c.closed()[0] == 1008


def test_a_user_name_over_64_characters_is_refused_and_its_name_never_stored(serve, tmp_path):
    server = serve(**{"server.max_message_bytes": 2 << 20})
    huge = "N" * (1 << 20)
    with Client(server.url) as c:
        assert c.login(huge, "whatever") == {"type": "auth_error", "message": "Invalid credentials"}
        assert c.login("L" * 65, "whatever")["message"] == "Invalid credentials"
        assert c.login()["type"] == "authenticated"
    rows = audit_rows(server, action="auth.login")
    assert not any("NNNN" in json.dumps(r) or "L" * 65 in json.dumps(r) for r in rows)
    refused = [r for r in rows if r["outcome"] == "failed"]
    assert [r["detail"] for r in refused] == ["user name too long (65 characters)",
                                              f"user name too long ({1 << 20} characters)"]
    assert server.engine.lockout.entries()[0][:2] == ("127.0.0.1", 2)     # still counted as failures
    for path in (tmp_path / "data").iterdir():
        assert b"NNNNNNNN" not in path.read_bytes()


def test_a_lone_surrogate_in_a_user_name_is_a_clean_auth_error_audited_and_counted(serve):
    server = serve()
    with Client(server.url) as c:
        c.send('{"type": "login", "username": "bob\\ud800", "password": "x\\udfff"}')
        assert c.recv() == {"type": "auth_error", "message": "Invalid credentials"}
        c.send('{"type": "authenticate", "api_key": "eyJ\\ud800.a.b"}')
        assert c.recv() == {"type": "auth_error", "message": "Invalid credentials"}
        assert c.login()["type"] == "authenticated"           # the connection survived
    [record] = [r for r in audit_rows(server, action="auth.login") if r["outcome"] == "failed"]
    assert record["target"] == "bob\\ud800"
    assert server.engine.lockout.entries()[0][:2] == ("127.0.0.1", 2)


def test_a_locked_addresses_refusals_are_audited_once_with_their_count(serve):
    clock = FakeClock()
    server = serve(clock=clock)
    for _ in range(2):
        with Client(server.url) as c:
            for _ in range(10):
                assert c.login("admin", "wrong-password")["message"] == "Invalid credentials"
    for _ in range(3):                                   # connections of 10: each within its rate
        with Client(server.url) as c:
            for _ in range(10):
                assert c.login("x" * 60, "wrong")["message"].startswith("Too many failed attempts")
    assert [r for r in audit_rows(server) if r["outcome"] == "locked"] == []
    clock.advance(61)
    with logged_in(server.url):                          # the window has ended: its count is audited
        pass
    [record] = [r for r in audit_rows(server) if r["outcome"] == "locked"]
    assert record["detail"] == "30 attempts refused while the address was locked"
    assert record["source"] == "ws:127.0.0.1" and "x" * 60 not in json.dumps(record)


def test_server_stop_audits_the_refusals_still_counted(serve):
    server = serve(clock=FakeClock())
    for _ in range(2):
        with Client(server.url) as c:
            for _ in range(10):
                c.login("admin", "wrong-password")
    with Client(server.url) as c:
        assert c.login()["message"].startswith("Too many failed attempts")
    server.stop()
    [record] = [r for r in audit_rows(server) if r["outcome"] == "locked"]
    assert record["detail"] == "1 attempt refused while the address was locked"
