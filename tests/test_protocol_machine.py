"""The wire protocol's state machines (backend/protocol/), fed messages with no socket."""

from __future__ import annotations

import json

import pytest

from backend import protocol
from backend.protocol import (
    Authenticate,
    Authenticated,
    ClientProtocol,
    Close,
    ErrorKind,
    Execute,
    Login,
    Phase,
    ProtocolViolation,
    Refused,
    Reply,
    Respond,
    Send,
    ServerProtocol,
)
from backend.result import Result


def sent(actions) -> list[dict]:
    return [json.loads(a.frame) for a in actions if isinstance(a, Send)]


def closes(actions) -> list[Close]:
    return [a for a in actions if isinstance(a, Close)]


def logged_in_server() -> ServerProtocol:
    server = ServerProtocol()
    server.authenticated("sid", "default", "1.0", "admin", "admin")
    return server


# --- server: the authentication phase ------------------------------------------------------------

def test_login_and_authenticate_are_requests_for_the_application():
    server = ServerProtocol()
    assert server.receive(protocol.login("alice", "pw")) == Login("alice", "pw")
    assert server.receive(protocol.authenticate("il_x")) == Authenticate("il_x")
    assert server.phase is Phase.AUTH


def test_credentials_that_are_not_strings_become_empty():
    assert ServerProtocol().receive('{"type": "login", "username": 1, "password": null}') == Login("", "")


@pytest.mark.parametrize("raw", [protocol.execute(".user list"), '{"type": "ping"}', "not json", "[1]",
                                 '{"type": "nope"}', b"\x00binary"])
def test_anything_else_first_is_refused_and_closed_without_executing(raw):
    server = ServerProtocol()
    event = server.receive(raw)
    assert isinstance(event, Respond)
    assert sent(event.actions) == [{"type": "auth_error", "message": "Authentication required"}]
    assert closes(event.actions) == [Close(1008, "Authentication required")]
    assert server.phase is Phase.CLOSED
    assert server.receive(protocol.login("a", "b")) == Respond(())      # nothing more is heard


def test_a_refused_login_may_try_again():
    server = ServerProtocol()
    actions = server.refused("Invalid credentials")
    assert sent(actions) == [{"type": "auth_error", "message": "Invalid credentials"}] and not closes(actions)
    assert server.receive(protocol.login("a", "b")) == Login("a", "b")


def test_timeout_and_access_denied_close_with_1008():
    actions = ServerProtocol().timed_out(30)
    assert sent(actions) == [{"type": "auth_error", "message": "Authentication timeout (30s)"}]
    assert closes(actions) == [Close(1008, "Authentication timeout")]
    actions = ServerProtocol().access_denied()
    assert sent(actions) == [{"type": "error", "message": "Access denied"}]
    assert closes(actions) == [Close(1008, "Access denied")]


def test_authenticated_opens_the_session_phase():
    server = ServerProtocol()
    actions = server.authenticated("sid", "", "1.0", "viewer", "bob")
    assert sent(actions) == [{"type": "authenticated", "session_id": "sid", "knowledge_graph": "",
                              "version": "1.0", "role": "viewer", "username": "bob", "features": ["atomic"]}]
    assert server.phase is Phase.SESSION
    assert server.receive(protocol.execute(".whoami")) == Execute(".whoami")


# --- server: the session phase -------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "message"), [
    (protocol.login("a", "b"), "Already authenticated"),
    ("{", 'Invalid message: expected a JSON object with a "type"'),
    ('{"type": "execute", "program": 3}', 'Invalid message: "program" must be a string'),
    ('{"type": "frob"}', "Unknown message type 'frob': use execute or ping"),
    ('{"type": 5}', "Unknown message type: use execute or ping"),
])
def test_session_phase_answers_bad_messages_and_stays_open(raw, message):
    server = logged_in_server()
    event = server.receive(raw)
    assert isinstance(event, Respond)
    assert sent(event.actions) == [{"type": "error", "message": message}] and not closes(event.actions)
    assert server.phase is Phase.SESSION


def test_ping_gets_pong():
    event = logged_in_server().receive('{"type": "ping"}')
    assert isinstance(event, Respond) and sent(event.actions) == [{"type": "pong"}]


def test_a_binary_frame_closes_with_1003():
    server = logged_in_server()
    event = server.receive(b"{}")
    assert isinstance(event, Respond)
    assert closes(event.actions) == [Close(1003, "Binary frames are not supported")]
    assert server.phase is Phase.CLOSED


def test_session_ended_tells_why_and_closes():
    actions = logged_in_server().session_ended("user dropped")
    assert sent(actions) == [{"type": "error", "message": "Session ended: user dropped"}]
    assert closes(actions) == [Close(1008, "Session ended: user dropped")]


def test_rate_limit_is_per_one_second_window():
    server = ServerProtocol(phase=Phase.SESSION, rate_limit=3)   # after login (before: auth_rate_limit)
    assert [server.allow(10.0), server.allow(10.1), server.allow(10.2), server.allow(10.5)] == [True] * 3 + [False]
    assert server.allow(11.05)                  # the first one left the window
    assert sent(server.rate_limited()) == [{"type": "error", "message": "Rate limit exceeded"}]


def test_reply_frames_stream_large_results():
    result = Result(["n"], [[str(i)] for i in range(10)], "kg2")
    [single] = protocol.reply_frames(result, 3)
    assert json.loads(single)["switched_kg"] == "kg2"
    frames = [json.loads(f) for f in protocol.reply_frames(result, 3, threshold=10, chunk_rows=4)]
    assert [f["type"] for f in frames] == ["result_start"] + ["result_chunk"] * 3 + ["result_end"]
    assert frames[-1] == {"type": "result_end", "row_count": 10, "chunk_count": 3}


# --- client --------------------------------------------------------------------------------------

def test_client_reads_authenticated_then_results():
    client = ClientProtocol()
    client.login("admin", "pw")
    event = client.receive(protocol.authenticated("sid", "", "1.0", "admin", "admin"))
    assert event == Authenticated("sid", "admin", "admin", None, frozenset({"atomic"}))
    assert client.receive('{"type": "pong"}') is None
    event = client.receive(protocol.reply_frames(Result(["a"], [[None, 1]]), 5)[0])
    assert isinstance(event, Reply) and event.result.rows == [["", "1"]] and event.elapsed_ms == 5


def test_client_assembles_a_stream():
    client = ClientProtocol()
    client.receive(protocol.authenticated("sid", "default", "1.0", "admin", "admin"))
    rows = [[str(i)] for i in range(7)]
    frames = protocol.reply_frames(Result(["n"], rows, "x"), 12, threshold=10, chunk_rows=3)
    events = [client.receive(f) for f in frames]
    assert events[:-1] == [None] * (len(frames) - 1)
    assert events[-1] == Reply(Result(["n"], rows, "x"), elapsed_ms=12)   # the server's time, for .timing


def test_client_error_kinds():
    client = ClientProtocol()
    locked = client.receive(protocol.auth_error("Too many failed attempts. Try again in 5s"))
    assert locked == Refused(ErrorKind.LOCKED_OUT, "Too many failed attempts. Try again in 5s")
    assert client.receive(protocol.auth_error("Invalid credentials")).kind is ErrorKind.INVALID_CREDENTIALS
    denied = client.receive(protocol.error("Access denied"))
    assert denied == Refused(ErrorKind.ACCESS_DENIED, "Access denied", closing=True)
    client = ClientProtocol()
    client.receive(protocol.authenticated("sid", "", "1.0", "admin", "admin"))
    assert client.receive(protocol.error("User 'bob' not found")) == Refused(ErrorKind.COMMAND, "User 'bob' not found")
    ended = client.receive(protocol.error("Session ended: key revoked"))
    assert ended == Refused(ErrorKind.SESSION_ENDED, "key revoked", closing=True)


def test_the_server_texts_read_back_as_their_kinds():
    server = logged_in_server()
    for actions, kind in ((server.rate_limited(), ErrorKind.RATE_LIMITED),
                          (ServerProtocol().access_denied(), ErrorKind.ACCESS_DENIED),
                          (server.session_ended("x"), ErrorKind.SESSION_ENDED)):
        assert ErrorKind.of(sent(actions)[0]["message"]) is kind


@pytest.mark.parametrize("raw", ["[]", "nope", b"{}"])
def test_client_rejects_what_is_not_the_protocol(raw):
    with pytest.raises(ProtocolViolation):
        ClientProtocol().receive(raw)


def test_a_program_spends_the_rate_budget_one_line_at_a_time():
    server = logged_in_server()
    server.rate_limit = 100
    assert server.allow(10.0, cost=150)                 # overdraws the budget...
    assert not server.allow(10.5) and not server.allow(11.4)
    assert server.allow(11.6)                           # ...for as long as 150 lines take at 100 a second
    assert server.allow(11.7, cost=99) and not server.allow(11.8)


def test_before_login_the_budget_is_ten_messages_a_second():
    server = ServerProtocol()
    assert all(server.allow(5.0) for _ in range(10)) and not server.allow(5.5)
    assert closes(server.auth_rate_limited()) == [Close(1008, "Rate limit exceeded")]
    assert server.phase is Phase.CLOSED


def test_a_program_over_max_program_lines_is_answered_by_the_protocol():
    server = logged_in_server()
    server.max_program_lines = 3
    [action] = server.receive(protocol.execute(".whoami\n" * 4)).actions
    assert json.loads(action.frame)["message"].startswith("Program too long: 4 lines; at most 3")
    assert server.receive(protocol.execute(".whoami\n" * 3)) == Execute(".whoami\n" * 3, 3, 3)
    assert server.receive(protocol.execute(".help " + "x" * 9000)) == Execute(".help " + "x" * 9000, 1, 3)
    [action] = server.receive(protocol.execute(".whoami\n.help " + "x" * 70_000)).actions
    assert json.loads(action.frame)["message"].startswith("Line too long: at most 65536 characters")


def test_a_lone_surrogate_in_a_login_becomes_text_that_can_be_encoded():
    request = ServerProtocol().receive('{"type": "login", "username": "a\\ud800", "password": "\\udfff"}')
    assert request == Login("a\\ud800", "\\udfff")
    request.username.encode()


# --- atomic programs (policy apply) --------------------------------------------------------------

def test_an_atomic_execute_carries_its_note_and_a_bad_note_is_refused():
    server = ServerProtocol()
    server.authenticated("sid", "", "1.0", "admin", "admin")
    assert server.receive(protocol.execute(".kg create a", atomic=True, note="apply p.toml")) == \
        Execute(".kg create a", atomic=True, note="apply p.toml")
    assert server.receive('{"type": "execute", "program": ".whoami", "atomic": "yes"}') == Execute(".whoami")
    refused = server.receive('{"type": "execute", "program": ".whoami", "atomic": true, "note": "\\u001b[2J"}')
    assert isinstance(refused, Respond) and "note" in sent(refused.actions)[0]["message"]


def test_the_client_reads_each_result_of_an_atomic_reply():
    client = ClientProtocol()
    client.receive(protocol.authenticated("sid", "", "1.0", "admin", "admin"))
    each = [Result(["message"], [["a"]]), Result(["x", "y"], [["1", "2"]])]
    event = client.receive(protocol.atomic_reply(each, each[-1], 3))
    assert isinstance(event, Reply) and event.result == each[-1] and event.results == tuple(each)
