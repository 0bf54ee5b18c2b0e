"""Fuzzing the server's message handling with hypothesis: arbitrary JSON, text and bytes, before
and after authentication, get a clean answer or the specified close, and never change the store."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from websockets.exceptions import ConnectionClosed

from backend.config import with_values
from backend.store.sqlite import TABLES
from serverkit import Client, logged_in, running_server

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
typed = st.fixed_dictionaries(
    {"type": st.sampled_from(["execute", "ping", "login", "authenticate", "result", "", "EXECUTE"])},
    optional={"program": st.one_of(st.text(max_size=60), json_values,
                                   st.sampled_from([".user drop nobody", ".kg use ghost", ".nope", "x\n.y"])),
              "username": json_values, "password": json_values, "api_key": json_values})
frames = st.one_of(typed.map(json.dumps), json_values.map(json.dumps), st.text(max_size=80),
                   st.binary(max_size=80))
REPLY_TYPES = {"result", "error", "pong", "auth_error", "authenticated", "result_start"}
CLOSE_CODES = {1003, 1007, 1008}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from backend.config import Config
    from conftest import CHEAP_ARGON2

    with running_server(tmp_path_factory.mktemp("fuzz") / "data", with_values(Config(), CHEAP_ARGON2)) as server:
        yield server


def snapshot(store) -> dict:
    with store.read():
        return {t: store.conn.execute(f"SELECT * FROM {t}").fetchall() for t in TABLES if t not in ("audit", "meta")}


def answer(client: Client, frame):
    """The server's reply to one frame: ("reply", message) or ("closed", code)."""
    try:
        client.send(frame)
        return "reply", client.recv(timeout=10)
    except ConnectionClosed:
        frame_ = client.ws.protocol.close_rcvd
        return "closed", frame_.code if frame_ else None


@given(frames)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_after_login_any_frame_gets_a_clean_answer(live, frame):
    with logged_in(live.url) as client:
        before = snapshot(live.engine.store)      # after the login, which records last_login_at
        kind, value = answer(client, frame)
    if kind == "closed":
        assert value in CLOSE_CODES
    else:
        assert value["type"] in REPLY_TYPES, value
        if value["type"] in ("error", "auth_error"):
            assert isinstance(value["message"], str) and "Traceback" not in value["message"]
            assert snapshot(live.engine.store) == before


@given(frames)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_before_login_anything_but_a_login_is_refused_and_closed(live, frame):
    before = snapshot(live.engine.store)
    with Client(live.url) as client:
        kind, value = answer(client, frame)
        if kind == "reply" and value["type"] == "auth_error" and value["message"] == "Authentication required":
            kind, value = "closed", client.closed()[0]
    if kind == "closed":
        assert value in CLOSE_CODES
    else:
        # Only a well-formed login or authenticate gets an answer and keeps the connection.
        message = json.loads(frame) if isinstance(frame, str) else None
        assert isinstance(message, dict) and message.get("type") in ("login", "authenticate")
        assert value["type"] in ("auth_error", "authenticated")
    assert snapshot(live.engine.store) == before
    live.engine.lockout.clear("127.0.0.1")     # random logins must not lock the next examples out


def test_the_server_still_serves_after_the_fuzzing(live):
    with logged_in(live.url) as client:
        assert client.execute(".whoami")["rows"][0][0] == "admin"
