"""The policy core (backend/policy): parsing with line numbers, rendering, planning. No store."""

from __future__ import annotations

import pytest

from backend.policy import ApiKey, PolicyError, State, make_plan, parse_policy, render_policy
from backend.policy.positions import key_lines

NOW = "2026-11-30T12:00:00Z"
BASE = State(users={"admin": "admin", "alice": "editor", "carol": "viewer"},
             kgs={"default": {}, "sales": {"alice": "owner", "carol": "viewer"}},
             keys={"old-job": ApiKey("admin", "admin", ("sales",), "never")})


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policy.toml")
    return caught.value.lines


def plan(text: str, state: State = BASE, *, prune: bool = False, env: dict | None = None, caller: str = "admin",
         current_kg: str | None = "default"):
    return make_plan(parse_policy(text, "policy.toml"), state, prune=prune, caller=caller,
                     current_kg=current_kg, env=env or {}, now_text=NOW)


def test_secrets_are_refused_naming_their_line():
    assert errors('[users.bob]\nrole = "viewer"\n\n# bob\npassword = "hunter2"\n') == [
        "policy.toml:5: passwords do not belong in a policy file; use password_env"]
    assert "policy.toml:3: secrets do not belong in a policy file: remove 'api_key'" in \
        errors('[api_keys.x]\nowner = "admin"\napi_key = "il_abc"\n')


def test_every_problem_is_reported_in_one_run_in_line_order():
    text = """\
[users.alice]
role = "boss"
colour = "blue"

[users."bad name"]
role = "viewer"

[kgs._system]

[kgs.sales]
acl = { alice = "writer" }

[api_keys.etl]
owner = "admin"
role = "editor"
kgs = []
expires = "tomorrow"
rate = "fast"

[groups.x]
"""
    assert errors(text) == [
        "policy.toml:2: Unknown role 'boss'. Valid roles: admin, editor, viewer",
        "policy.toml:3: unknown key 'colour' in [users.alice]; allowed: role, password_env",
        "policy.toml:5: Invalid name 'bad name': use letters, digits, '_', '.', '-' (at most 64)",
        "policy.toml:8: Invalid name '_system': names starting with '_' are reserved for the system",
        "policy.toml:11: Invalid KG role 'writer'. Valid: owner, editor, viewer",
        "policy.toml:16: kgs must name at least one knowledge graph, or be [\"*\"] for all of them",
        "policy.toml:17: bad expires 'tomorrow': use \"never\" or a UTC time like \"2027-02-28T00:00:00Z\"",
        "policy.toml:18: Invalid rate 'fast': use <n>/<s|m|h|d>, e.g. 100/m",
        "policy.toml:20: unknown table 'groups'; allowed: users, kgs, api_keys",
    ]


def test_missing_fields_name_the_table_line():
    assert errors('\n[api_keys.etl]\nowner = "admin"\n') == [
        "policy.toml:2: [api_keys.etl] needs 'role'",
        "policy.toml:2: [api_keys.etl] needs 'kgs'",
        "policy.toml:2: [api_keys.etl] needs 'expires'",
    ]


def test_bad_toml_names_its_line():
    [only] = errors('[users.a]\nrole = "viewer"\nrole = \n')
    assert only.startswith("policy.toml:3: not valid TOML: ")


def test_positions_survive_multiline_values_and_quotes():
    text = ('a = """x\n[not.a.table]\n"""\n[t."x.y"]  # c\nk = [\n  "]", # ]\n  "z"]\n'
            "m = 'it''s'\n[u]\nv = { p = 1 }\n")
    lines = key_lines(text)
    assert lines[("a",)] == 1
    assert ("not", "a", "table") not in lines
    assert lines[("t", "x.y")] == 4 and lines[("t", "x.y", "k")] == 5
    assert lines[("t", "x.y", "m")] == 8 and lines[("u", "v")] == 10


def test_export_is_sorted_and_reads_back_to_the_same_state():
    state = State(users={"zed": "viewer", "admin": "admin", "a.b": "editor"},
                  kgs={"sales": {"zed": "viewer", "a.b": "owner"}, "hr": {}},
                  keys={"z": ApiKey("admin", "viewer", None, "2027-01-01T00:00:00Z"),
                        "etl": ApiKey("a.b", "editor", ("hr", "sales"), "never", ("10.0.0.0/8",), "100/m")})
    text = render_policy(state)
    assert text == render_policy(parse_policy(text, "x").state)
    assert parse_policy(text, "x").state == state
    assert text.index("[users.\"a.b\"]") < text.index("[users.admin]") < text.index("[users.zed]")
    assert 'acl = {"a.b" = "owner", zed = "viewer"}' in text
    assert "[kgs.hr]\n" in text and 'kgs = ["*"]' in text and 'rate = "100/m"' in text
    assert "password" not in text.replace("password_env", "")


SPEC_POLICY = """\
[users.admin]
role = "admin"

[users.alice]
role = "viewer"

[users.bob]
role = "viewer"
password_env = "BOB_PASSWORD"

[kgs.default]

[kgs.sales]
acl = { alice = "editor", bob = "viewer" }

[kgs.hr]

[api_keys.etl-job]
owner = "admin"
role = "editor"
kgs = ["sales"]
expires = "2027-02-28T00:00:00Z"

[api_keys.old-job]
owner = "admin"
role = "admin"
kgs = ["sales"]
expires = "never"
"""


def test_plan_lines_summary_and_kept_note():
    result = plan(SPEC_POLICY, env={"BOB_PASSWORD": "bob-secret-1"})
    assert result.report() == """\
+ user bob (viewer)
~ user alice: role editor -> viewer
+ kg hr
+ grant sales bob viewer
~ grant sales alice: owner -> editor
+ api_key etl-job (owner admin, role editor, kgs sales, expires 2027-02-28T00:00:00Z)
Plan: 4 to add, 2 to change, 0 to remove.
Not in the file, kept: user carol, grant sales carol
"""
    commands = [command for command, _ in result.program()]
    assert commands[0] == ".user create bob bob-secret-1 viewer"
    assert ".apikey create etl-job role=editor expires=2027-02-28T00:00:00Z user=admin kg=sales" in commands
    assert "bob-secret-1" not in result.report()


def test_prune_removes_what_the_file_lacks_in_an_order_that_runs():
    text = SPEC_POLICY.replace("[kgs.default]\n", "").split("[api_keys.old-job]")[0]
    result = plan(text, prune=True, env={"BOB_PASSWORD": "bob-secret-1"})
    assert [c.line for c in result.changes if c.sign == "-"] == [
        "- api_key old-job (revoked)", "- kg default", "- user carol"]    # carol's grant goes with her
    assert result.summary() == "Plan: 4 to add, 2 to change, 3 to remove."
    assert [c.commands for c in result.changes if c.text == "kg default"] == [(".kg drop default",)]
    assert result.kept == []


def test_prune_switches_away_from_the_current_kg_before_dropping_it():
    text = '[users.admin]\nrole = "admin"\n[kgs.sales]\n'
    state = State(users={"admin": "admin"}, kgs={"default": {}, "sales": {}})
    result = plan(text, state, prune=True)
    assert result.changes[0].commands == (".kg use sales", ".kg drop default")


def test_prune_never_drops_the_caller_nor_leaves_no_admin():
    state = State(users={"admin": "admin", "root": "admin"}, kgs={"default": {}})
    result = plan('[users.root]\nrole = "admin"\n[kgs.default]\n', state, prune=True)
    assert [c.line for c in result.changes] == []
    assert result.kept == ["user admin (the caller)"]
    with pytest.raises(PolicyError) as caught:
        plan('[users.admin]\nrole = "viewer"\n[kgs.default]\n', State(users={"admin": "admin"}), prune=True)
    assert caught.value.lines == ['policy.toml:2: no admin would be left: keep at least one user with role "admin"']


def test_the_callers_own_demotion_comes_last():
    state = State(users={"admin": "admin", "root": "admin"}, kgs={"default": {}})
    text = '[users.admin]\nrole = "editor"\n[users.root]\nrole = "admin"\n[kgs.default]\n[kgs.new]\n'
    assert [c.line for c in plan(text, state).changes] == ["+ kg new", "~ user admin: role admin -> editor"]


def test_state_dependent_problems_name_their_lines():
    text = """\
[users.dave]
role = "viewer"

[kgs.sales]
acl = { ghost = "viewer" }

[api_keys.old-job]
owner = "alice"
role = "admin"
kgs = ["nowhere"]
expires = "2020-01-01T00:00:00Z"

[api_keys.new-job]
owner = "carol"
role = "editor"
kgs = ["*"]
expires = "2020-01-01T00:00:00Z"
"""
    with pytest.raises(PolicyError) as caught:
        plan(text)
    assert caught.value.lines == [
        "policy.toml:1: user 'dave' does not exist yet: give it password_env to create it",
        "policy.toml:5: user 'ghost' is neither in the file nor in the store",
        "policy.toml:8: api_key 'old-job' belongs to 'admin': an owner is not changed in place; "
        "revoke the key, or give the new one another label",
        "policy.toml:10: knowledge graph 'nowhere' is neither in the file nor in the store",
        "policy.toml:15: Role 'editor' exceeds the owner's role 'viewer'",
        "policy.toml:17: expires 2020-01-01T00:00:00Z is in the past",
    ]


def test_password_env_must_be_set_and_a_single_line():
    text = '[users.admin]\nrole = "admin"\n[users.bob]\nrole = "viewer"\npassword_env = "BOB_PW"\n'
    with pytest.raises(PolicyError) as caught:
        plan(text)
    assert caught.value.lines == ["policy.toml:5: BOB_PW is not set: it holds the password of new user 'bob'"]
    with pytest.raises(PolicyError) as caught:
        plan(text, env={"BOB_PW": "two\nlines"})
    assert caught.value.lines == ["policy.toml:5: BOB_PW holds a control character or line break"]


def test_with_prune_a_reference_to_a_dropped_user_is_an_error():
    text = '[users.admin]\nrole = "admin"\n[kgs.sales]\nacl = { carol = "viewer" }\n'
    with pytest.raises(PolicyError) as caught:
        plan(text, prune=True)
    assert caught.value.lines == ["policy.toml:4: user 'carol' is not in the file, and --prune drops it"]


def test_a_changed_key_is_altered_in_place():
    text = ('[api_keys.old-job]\nowner = "admin"\nrole = "viewer"\nkgs = ["*"]\nexpires = "2030-01-01T00:00:00Z"\n'
            'ips = ["10.1.0.0/16"]\nrate = "5/s"\n')
    result = plan(text)
    assert [c.line for c in result.changes] == [
        "~ api_key old-job: role admin -> viewer, kgs sales -> *, expires never -> 2030-01-01T00:00:00Z, "
        "ips * -> 10.1.0.0/16, rate none -> 5/s"]
    assert result.changes[0].commands == (
        ".apikey alter old-job role=viewer kg=* expires=2030-01-01T00:00:00Z ips=10.1.0.0/16 rate=5/s",)


def test_the_same_state_plans_nothing():
    assert plan(render_policy(BASE)).report() == "No changes.\n"
    assert plan(render_policy(BASE), prune=True).report() == "No changes.\n"


def test_the_files_problems_and_the_stores_come_out_together():
    from backend.policy import read_policy

    text = ('[users.admin]\nrole = "admin"\n[users.dan]\nrole = "boss"\n'
            '[kgs.sales]\nacl = { dan = "viewer", ghost = "viewer" }\n[users.eve]\nrole = "viewer"\n')
    policy = read_policy(text, "policy.toml")
    with pytest.raises(PolicyError) as caught:
        make_plan(policy, BASE, prune=False, caller="admin", current_kg=None, env={}, now_text=NOW)
    assert caught.value.lines == [
        "policy.toml:4: Unknown role 'boss'. Valid roles: admin, editor, viewer",
        "policy.toml:6: user 'ghost' is neither in the file nor in the store",    # not dan: he is declared
        "policy.toml:7: user 'eve' does not exist yet: give it password_env to create it",
    ]


def test_reading_a_state_refuses_what_no_store_would_hold():
    from backend.errors import CommandError
    from backend.policy.read import Caller, read_state
    from backend.result import Result

    def target(evil: str):
        answers = {".user list": Result(["username", "role", "created_at", "last_login_at"],
                                        [["admin", "admin", "", ""], [evil, "viewer", "", ""]]),
                   ".kg list": Result(["name", "access"], []), ".apikey list": Result(["label"], [])}
        return answers.__getitem__

    caller = Caller("admin", "admin", "password", None)
    assert read_state(target("bob"), caller).users == {"admin": "admin", "bob": "viewer"}
    with pytest.raises(CommandError, match="Invalid name"):
        read_state(target("\x1b]0;owned\x07"), caller)
