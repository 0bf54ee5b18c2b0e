"""Tab completion: derived from the registry, live names from a background refresher."""

from __future__ import annotations

import threading

import pytest
from prompt_toolkit.document import Document

from backend.errors import PermissionDenied
from backend.targets.local import LocalBackend
from backend.language.registry import COMMANDS, find_command
from backend.result import Result
from repl.completer import LIVE_SOURCES, CommandCompleter, LiveNames

from conftest import ADMIN_PASSWORD


class FakeLive:
    def __init__(self, **names):
        self.names = {kind: tuple(names.get(kind, ())) for kind in LIVE_SOURCES}


def complete(text: str, local: bool = True, **names) -> list[str]:
    completer = CommandCompleter(FakeLive(**names), local=local)
    return [c.text for c in completer.get_completions(Document(text), None)]


def test_first_word_offers_every_command_group_and_alias():
    offered = complete("")
    assert {"." + c.words[0] + " " for c in COMMANDS if not c.server_only} <= set(offered)
    assert ".q " in offered and ".exit " in offered
    assert ".session " not in offered            # server-only, and this is the local target
    assert ".session " in complete("", local=False)
    assert complete(".ap") == [".apikey "]
    assert complete(".US") == [".user "]


def test_sub_commands_come_from_the_registry():
    assert complete(".user ") == ["create ", "drop ", "list ", "password ", "role ", "show "]
    assert complete(".kg acl ") == ["check ", "grant ", "list ", "revoke "]
    assert complete(".kg acl g") == ["grant "]
    assert "acl " in complete(".kg ")


def test_grant_offers_kgs_then_users_then_kg_levels():
    names = {"users": ["alice", "bob"], "kgs": ["default", "sales"]}
    assert complete(".kg acl grant ", **names) == ["default ", "sales "]
    assert complete(".kg acl grant sales ", **names) == ["alice ", "bob "]
    assert complete(".kg acl grant sales al", **names) == ["alice "]
    assert complete(".kg acl grant sales alice ", **names) == ["owner ", "editor ", "viewer "]
    assert complete(".kg acl grant sales alice ed", **names) == ["editor "]
    assert complete(".kg acl grant sales alice editor ", **names) == []


def test_completion_replaces_the_word_being_typed():
    completer = CommandCompleter(FakeLive(users=["alice"]))
    (only,) = completer.get_completions(Document(".user show al"), None)
    assert only.start_position == -2 and only.display_text == "alice"


def test_names_are_case_sensitive_but_roles_are_not():
    assert complete(".user show A", users=["alice", "Ann"]) == ["Ann "]
    assert complete(".user role bob ED") == ["editor "]


def test_a_secret_is_never_completed_the_role_after_it_is():
    assert complete(".user create bob ") == ["admin ", "editor ", "viewer ", "password="]
    assert complete(".user create bob pw ") == ["admin ", "editor ", "viewer ", "password="]
    assert complete(".user password bob ", users=["bob"]) == ["password="]


def options_of(command: str) -> list[str]:
    return [o.name + "=" for o in find_command(command).options]


def test_options_and_their_values():
    assert complete(".apikey create etl ") == options_of(".apikey create")
    assert complete(".apikey create etl role=viewer ") == options_of(".apikey create")[1:]
    assert complete(".apikey create etl ro") == ["role="]
    assert complete(".apikey create etl role=ed") == ["editor "]
    assert complete(".apikey create etl expires=") == ["1h ", "24h ", "7d ", "30d ", "90d ", "never "]
    assert complete(".apikey create etl kg=default,s", kgs=["default", "sales"]) == ["sales"]
    assert complete(".apikey list user=b", users=["bob"]) == ["bob "]
    assert "user.create " in complete(".audit action=user.")
    assert complete(".audit ") == ["verify "] + options_of(".audit")
    assert complete(".apikey revoke ", api_keys=["etl"]) == ["etl "]


def test_help_completes_command_words():
    assert "user " in complete(".help ")
    assert complete(".help .kg a") == ["acl "]
    assert complete(".help kg acl g") == ["grant "]


def test_nothing_for_data_lines_or_unknown_commands():
    assert complete("select") == []
    assert complete(".bogus ") == []


def test_live_sources_are_registered_list_commands():
    for source in LIVE_SOURCES.values():
        assert find_command(source) is not None


def wait_refreshed(live: LiveNames) -> None:
    assert live.refreshed.wait(5)


def test_refresher_fetches_first_columns_and_skips_admin_lists_for_non_admins():
    calls = []

    def run(line: str) -> Result:
        calls.append(line)
        if line == ".whoami":
            return Result(["username", "role"], [["carol", "viewer"]])
        return Result(["name"], [["zeta"], ["alpha"]])

    live = LiveNames(run)
    live.refresh()
    wait_refreshed(live)
    assert live.names == {"users": (), "kgs": ("alpha", "zeta"), "api_keys": (), "sessions": (), "addresses": ()}
    assert calls == [".whoami", ".kg list"]      # no refused `.user list` to clutter the audit log
    live.close()


def test_a_refused_or_failing_list_is_an_empty_list():
    def run(line: str) -> Result:
        if line == ".whoami":
            return Result(["username", "role"], [["admin", "admin"]])
        raise PermissionDenied("Access denied")

    live = LiveNames(run)
    live.refresh()
    wait_refreshed(live)
    assert live.names == {"users": (), "kgs": (), "api_keys": (), "sessions": (), "addresses": ()}
    live.close()


def test_completion_never_waits_for_a_slow_backend():
    release = threading.Event()

    def run(line: str) -> Result:
        release.wait(5)
        return Result(["username", "role"], [["admin", "admin"]])

    live = LiveNames(run)
    live.refresh()
    completer = CommandCompleter(live)
    assert [c.text for c in completer.get_completions(Document(".user show "), None)] == []
    release.set()
    wait_refreshed(live)
    assert [c.text for c in completer.get_completions(Document(".user show "), None)] == ["admin "]
    live.close()


def test_refresher_on_the_real_backend(tmp_path, cheap_config):
    backend = LocalBackend(str(tmp_path / "data"), cheap_config)
    backend.bootstrap(ADMIN_PASSWORD)
    backend.login("admin", ADMIN_PASSWORD)
    backend.execute(".user create bob 'bob-password-1' viewer")
    backend.execute(".apikey create etl")
    live = LiveNames(backend.execute)
    live.refresh()
    wait_refreshed(live)
    assert live.names == {"users": ("admin", "bob"), "kgs": ("default",), "api_keys": ("etl",),
                          "sessions": (), "addresses": ()}
    backend.execute(".kg create sales")
    live.refresh()
    wait_refreshed(live)
    assert live.names["kgs"] == ("default", "sales")
    live.close()
    backend.close()


@pytest.mark.parametrize("text", ["'", '.user create "half', ".kg acl grant 'a b' ", "   ", ".user create bob a=b "])
def test_odd_input_does_not_raise(text):
    complete(text)


def test_a_quoted_equals_sign_is_a_value_not_an_option():
    # As the parser reads it: `'a=b'` is the label, so the options come next.
    assert complete(".apikey create 'a=b' ") == ["role=", "kg=", "expires=", "user=", "ips=", "rate="]
    assert complete(".apikey create etl role=editor ") == ["kg=", "expires=", "user=", "ips=", "rate="]


def test_config_offers_the_settings_it_may_write():
    assert complete(".config ") == ["get ", "list ", "set ", "unset "]
    assert complete(".config set shell.f") == ["shell.format "]
    assert "bootstrap_admin_password " not in complete(".config set ")
    assert complete(".apikey alter ", api_keys=["job"]) == ["job "]


def test_audit_filters_complete_their_names():
    assert complete(".audit action=auth.l") == ["auth.login "]
    assert complete(".audit outcome=de") == ["denied "]
