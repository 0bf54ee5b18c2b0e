"""Over the wire: comment lines in programs, `.session kill` by prefix, the caller's own session
marked in `.session list` (issue 14)."""

from __future__ import annotations

from serverkit import logged_in
from test_protocol import assert_ended, create_user, live, serve  # noqa: F401 -- fixtures


def test_programs_skip_comment_lines(live):  # noqa: F811
    with logged_in(live.url) as admin:
        reply = admin.execute("# provisioning\n.user create eve pw-123456\n  // then her role\n.user role eve editor")
        assert reply["rows"] == [["User 'eve' created with role 'viewer'."], ["Role updated to 'editor' for 'eve'."]]
        assert admin.execute("# only a comment\n.whoami")["columns"][0] == "username"


def test_session_kill_by_unique_prefix_and_list_marks_the_caller(live):  # noqa: F811
    with logged_in(live.url) as admin:
        create_user(admin, "bob")
        bob = logged_in(live.url, "bob", "pw-123456")
        listed = admin.execute(".session list")
        mine = [r for r in listed["rows"] if r[-1] == "yes"]
        assert listed["columns"][-1] == "current" and [r[1] for r in mine] == ["admin"]
        sid = next(r[0] for r in listed["rows"] if r[1] == "bob")
        assert admin.execute(f".session kill {sid[:7]}")["message"].startswith(f"Session id '{sid[:7]}' too short")
        assert admin.execute(f".session kill {sid[:8].upper()}")["rows"] == [[f"Session '{sid}' closed."]]
        assert_ended(bob, "killed by an administrator")


def test_an_ambiguous_prefix_lists_the_matches(live, monkeypatch):  # noqa: F811
    ids = iter(["abcdef12-0000-4000-8000-000000000001", "abcdef12-0000-4000-8000-000000000002",
                "99999999-0000-4000-8000-000000000003"])
    monkeypatch.setattr("backend.engine.policy.new_session_id", lambda: next(ids))
    with logged_in(live.url) as admin, logged_in(live.url):
        reply = admin.execute(".session kill abcdef12")
        assert reply["message"] == ("Session id 'abcdef12' is ambiguous: it starts "
                                    "abcdef12-0000-4000-8000-000000000001, abcdef12-0000-4000-8000-000000000002")
        assert admin.execute(".session kill abcdef12-0000-4000-8000-000000000002")["type"] == "result"


def test_the_server_announces_its_message_limit_and_the_shell_keeps_to_it(serve):  # noqa: F811
    import pytest

    from backend.errors import CommandError
    from backend.targets.remote import RemoteBackend
    from serverkit import ADMIN_PASSWORD, Client

    server = serve(max_message_bytes=4096)
    with Client(server.url) as c:
        assert c.login()["max_message_bytes"] == 4096
    backend = RemoteBackend(server.url)
    try:
        backend.login("admin", ADMIN_PASSWORD)
        with pytest.raises(CommandError, match="^Line too long: 5006 bytes; a message to this server holds at most 4096"):
            backend.execute(".help " + "x" * 5000)
        assert backend.execute(".whoami").rows[0][0] == "admin"       # the session lives on
    finally:
        backend.close()
