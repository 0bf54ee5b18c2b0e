"""`inputlayer export | plan | apply` end to end, as a user runs them, on a data directory and
on a PostgreSQL store;
and examples/policies: a small company's policy applied to a fresh store, then a change planned,
with the output compared like examples/sessions (UPDATE_EXAMPLES=1 rewrites the .out files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import ADMIN_PASSWORD, ROOT, StoreTarget, cli_env, run_cli, without_new_store_line
from test_examples import KEY_PLACEHOLDER, KEY_RE

POLICIES = ROOT / "examples" / "policies"
PASSWORDS = {f"{name.upper()}_PASSWORD": f"{name}-first-password"
             for name in ("maria", "tom", "priya", "jonas", "lee", "amara", "ken", "bob")}


@pytest.fixture
def il(store_target: StoreTarget, config_file: Path):
    """il(*args, stdin="", **env) -> (exit status, stdout, stderr) of the shell on one store
    (a data directory, or a PostgreSQL database: the same output is expected of both)."""

    def run(*args: str, stdin: str = "", **extra: str):
        env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, **PASSWORDS, **store_target.cli_env())
        env.update(extra)
        proc = run_cli([*store_target.cli_args(), *args], stdin=stdin, env=env)
        return proc.returncode, proc.stdout.decode(), without_new_store_line(proc.stderr.decode())

    run.target = store_target
    return run


def store_snapshot(target: StoreTarget) -> tuple:
    """Everything apply could write: the audit chain's length and every user row."""
    store = target.open()
    with store.read():
        return store.verify_audit()[0], [dict(u) for u in store.users()]


def write(tmp_path: Path, text: str, name: str = "policy.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_export_then_apply_on_the_same_store_writes_nothing(il, tmp_path):
    assert il("-c", ".user create carol 'carol-pass-1' editor", "-c", ".kg create sales",
              "-c", ".kg acl grant sales carol owner", "-c", ".apikey create etl kg=sales expires=30d rate=5/s")[0] == 0
    status, first, _ = il("export")
    assert status == 0 and "[kgs.sales]" in first and 'rate = "5/s"' in first
    assert il("export")[1] == first                     # byte-identical
    exported = write(tmp_path, first)
    before = store_snapshot(il.target)
    status, out, err = il("apply", exported, "--prune", "--yes")
    assert (status, out, err) == (0, "No changes.\n", "")
    assert store_snapshot(il.target) == before        # no audit record, no last_login_at
    assert il("export", "-o", str(tmp_path / "again.toml"))[0] == 0
    assert (tmp_path / "again.toml").read_text() == first


def test_apply_is_audited_per_change_naming_the_file_and_shows_a_new_secret_once(il, tmp_path):
    policy = write(tmp_path, '[users.admin]\nrole = "admin"\n[users.bob]\nrole = "viewer"\n'
                             'password_env = "BOB_PASSWORD"\n[kgs.default]\n[kgs.hr]\nacl = { bob = "viewer" }\n'
                             '[api_keys.hr-sync]\nowner = "admin"\nrole = "viewer"\nkgs = ["hr"]\nexpires = "never"\n')
    status, out, err = il("apply", policy, "--yes", "--format", "plain")
    assert status == 0, err
    assert out.count("il_") == 1 and "Plan: 4 to add, 0 to change, 0 to remove." in out
    secret = next(word for word in out.split() if word.startswith("il_"))
    assert il("-c", ".whoami", INPUTLAYER_API_KEY=secret)[1].startswith("admin\tviewer\tapi_key:hr-sync")
    audit = il("-c", ".audit limit=20")[1]
    assert "bob-first-password" not in audit and secret not in audit
    applied = [line for line in audit.splitlines() if "(apply policy.toml)" in line]
    assert {line.split("\t")[4] for line in applied} == {"user.create", "kg.create", "acl.grant", "apikey.create"}
    assert il("apply", policy, "--yes")[1] == "No changes.\n"


def test_apply_is_all_or_nothing(il, tmp_path):
    # The fourth change fails in the engine (the password policy): nothing before it stays.
    policy = write(tmp_path, '[users.admin]\nrole = "admin"\n[kgs.aaa]\n[kgs.bbb]\n'
                             '[users.zed]\nrole = "viewer"\npassword_env = "SHORT"\n')
    il("-c", ".whoami")                                  # the store exists, bootstrapped
    before = store_snapshot(il.target)
    status, out, err = il("apply", policy, "--yes", SHORT="abc")
    assert status == 3
    assert err == ("error: + user zed (viewer): Password too short: at least 8 characters\n"
                   "error: the apply was rolled back; nothing was changed\n")
    assert "[kgs.aaa]" not in il("export")[1]
    assert [u["name"] for u in store_snapshot(il.target)[1]] == [u["name"] for u in before[1]]   # no zed


def test_script_mode_needs_yes_and_file_errors_name_their_lines(il, tmp_path):
    policy = write(tmp_path, '[users.admin]\nrole = "admin"\n[kgs.new]\n')
    status, out, err = il("apply", policy)
    assert status == 2 and "needs --yes" in err and "+ kg new" in out
    assert "[kgs.new]" not in il("export")[1]
    bad = write(tmp_path, '[users.admin]\nrole = "admin"\npassword = "x"\n[kgs.z]\nacl = { nobody = "viewer" }\n',
                "bad.toml")
    status, out, err = il("plan", bad)
    assert (status, out) == (2, "")
    assert err == ("bad.toml:3: passwords do not belong in a policy file; use password_env\n"
                   "bad.toml:5: user 'nobody' is neither in the file nor in the store\n")   # one run: all of them
    assert il("plan", str(tmp_path / "missing.toml"))[0] == 2


def test_options_go_before_or_after_the_verb_and_usage_errors_exit_2(il, tmp_path, config_file):
    policy = write(tmp_path, '[users.admin]\nrole = "admin"\n[kgs.default]\n')
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    env.update(il.target.cli_env())
    proc = run_cli(["plan", policy, *il.target.cli_args()], env=env)
    assert (proc.returncode, proc.stdout) == (0, b"No changes.\n")
    assert il("plan")[0] == 2                            # FILE is required
    assert il("export", "--prune")[0] == 2


def test_a_caller_without_the_rights_is_refused_before_anything_changes(il, tmp_path):
    il("-c", ".user create vic 'vic-pass-12' viewer")
    policy = write(tmp_path, '[users.admin]\nrole = "admin"\n[kgs.new]\n')
    status, out, err = il("apply", policy, "--yes", INPUTLAYER_USER="vic", INPUTLAYER_PASSWORD="vic-pass-12")
    assert status == 3 and err == "error: Permission denied: only admins can manage users\n"


def run_example(il, *args: str) -> str:
    status, out, err = il(*args)
    # Every time in these files comes from the policy; only the secrets differ from run to run.
    return KEY_RE.sub(KEY_PLACEHOLDER, out + err) + f"[exit status {status}]\n"


def check_example(name: str, actual: str) -> None:
    expected = POLICIES / name
    if os.environ.get("UPDATE_EXAMPLES"):
        expected.write_text(actual)
    assert actual == expected.read_text()


def test_company_policy_applies_to_a_fresh_store_and_its_change_plans_as_recorded(il):
    check_example("acme.apply.out", run_example(il, "apply", str(POLICIES / "acme.toml"), "--yes",
                                                      "--format", "table"))
    assert run_example(il, "plan", str(POLICIES / "acme.toml")) == "No changes.\n[exit status 0]\n"
    check_example("acme-next.plan.out", run_example(il, "plan", str(POLICIES / "acme-next.toml")))
    check_example("acme-next.prune.out", run_example(il, "plan", str(POLICIES / "acme-next.toml"), "--prune"))
    assert il("apply", str(POLICIES / "acme-next.toml"), "--prune", "--yes")[0] == 0
    assert run_example(il, "plan", str(POLICIES / "acme-next.toml"), "--prune") == "No changes.\n[exit status 0]\n"


def test_at_a_terminal_apply_asks_first(tmp_path, config_file):
    from repl.__main__ import main
    from repl.environment import fake_environment

    policy = write(tmp_path, '[users.admin]\nrole = "admin"\n[kgs.default]\n[kgs.new]\n')
    args = ["--data-dir", str(tmp_path / "data"), "apply", policy]
    variables = {"INPUTLAYER_CONFIG": str(config_file), "INPUTLAYER_ADMIN_PASSWORD": ADMIN_PASSWORD}
    declined = fake_environment(b"n\n", variables, tty=True)
    assert main(args, declined) == 0
    assert declined.stdout.getvalue() == ("+ kg new\nPlan: 1 to add, 0 to change, 0 to remove.\n"
                                          "Apply these changes? [y/N] Nothing was changed.\n")
    accepted = fake_environment(b"y\n", variables, tty=True)
    assert main(args, accepted) == 0
    assert accepted.stdout.getvalue().endswith("Apply these changes? [y/N] Knowledge graph 'new' created.\n"
                                               "Switched to knowledge graph: new\n")
    unasked = fake_environment(b"", variables, tty=True)
    assert main(args, unasked) == 0 and unasked.stdout.getvalue() == "No changes.\n"


def test_a_key_limited_to_some_kgs_cannot_read_the_whole_store(il):
    secret = il("-c", ".apikey create ops role=admin kg=default", "--format", "plain")[1].split("\t")[0]
    status, out, err = il("export", INPUTLAYER_API_KEY=secret)
    assert (status, out) == (3, "")
    assert err == ("error: Permission denied: this API key is limited to some knowledge graphs; "
                   "export, plan and apply need the whole store\n")


def test_a_file_saved_with_a_bom_and_crlf_reads_as_any_other(il, tmp_path):
    path = tmp_path / "win.toml"
    path.write_bytes(b'\xef\xbb\xbf[users.admin]\r\nrole = "admin"\r\n\r\n[kgs.default]\r\nbad = 1\r\n')
    assert il("plan", str(path))[2] == "win.toml:5: unknown key 'bad' in [kgs.default]; allowed: acl\n"


def test_a_named_store_wins_over_a_server_url_in_the_environment(il):
    # --data-dir or --store names the target; INPUTLAYER_URL applies only when neither is given.
    status, out, err = il("export", INPUTLAYER_URL="ws://127.0.0.1:9/ws")
    assert (status, err) == (0, "") and "[users.admin]" in out
