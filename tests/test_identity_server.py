"""Against a real server: a re-created name and a rotated key end the live sessions that
relied on the old principal or key, at once."""

from __future__ import annotations

import pytest

from backend.config import with_values
from serverkit import Client, Servers, logged_in


@pytest.fixture
def live(tmp_path, cheap_config):
    servers = Servers()
    yield servers.start(tmp_path / "data", with_values(cheap_config, {"server.port": 0}))
    servers.stop_all()


def assert_ended(client: Client, reason: str) -> None:
    assert client.recv(timeout=5) == {"type": "error", "message": f"Session ended: {reason}"}
    assert client.closed()[0] == 1008


def test_a_live_session_of_a_dropped_and_recreated_user_ends(live):
    with logged_in(live.url) as admin:
        assert admin.execute(".user create bob bob-passphrase viewer")["type"] == "result"
        bob = logged_in(live.url, "bob", "bob-passphrase")
        token = bob.execute(".token issue")["rows"][0][0]
        reply = admin.execute(".user drop bob\n.user create bob other-passphrase admin")
        assert reply["type"] == "result", reply
        assert_ended(bob, "user dropped")
        with Client(live.url) as again:
            assert again.authenticate(token) == {"type": "auth_error", "message": "Invalid credentials"}


@pytest.mark.parametrize("ending", [".apikey rotate k grace=0s", ".apikey rotate k grace=1h"])
def test_a_live_token_session_ends_when_its_key_is_rotated(live, ending):
    with logged_in(live.url) as admin:
        key = admin.execute(".apikey create k role=admin")["rows"][0][0]
        with Client(live.url) as via_key, Client(live.url) as via_token:
            assert via_key.authenticate(key)["type"] == "authenticated"
            token = via_key.execute(".token issue")["rows"][0][0]
            assert via_token.authenticate(token)["type"] == "authenticated"
            assert admin.execute(ending)["type"] == "result"
            assert_ended(via_token, "token revoked")
