"""No error message ever holds a secret: a line whose command takes a password reports what is
wrong and where, never a word of the line (security.md, Passwords)."""

from __future__ import annotations

import pytest

from backend.errors import CommandError
from backend.language.parser import parse

SECRET = "Swapped-Secret-91"


@pytest.mark.parametrize("line, problem", [
    (f".user create frank viewer {SECRET}", "Unknown role at argument 3"),
    (f".user create erin correct horse battery {SECRET}", "Too many arguments (from argument 4"),
    (f".user password bob correct horse {SECRET}", "Too many arguments (from argument 3"),
    (f".user create {SECRET}! pw viewer", "Invalid name at argument 1"),
    (f".user create frank\ud800 {SECRET} viewer", "Invalid name at argument 1"),
])
def test_errors_about_a_line_with_a_password_name_the_position_not_the_value(line, problem):
    with pytest.raises(CommandError) as caught:
        parse(line)
    assert caught.value.message.startswith(problem)
    assert SECRET not in caught.value.message and "battery" not in caught.value.message


def test_a_line_glued_by_an_unusual_blank_is_not_echoed():
    with pytest.raises(CommandError) as caught:
        parse(f".user\u00a0create\u00a0frank\u00a0{SECRET}")
    assert SECRET not in caught.value.message and caught.value.message.startswith("Unknown command")


def test_errors_of_commands_without_secrets_still_show_the_word():
    with pytest.raises(CommandError, match="Unexpected argument 'extra'"):
        parse(".kg use sales extra")
    with pytest.raises(CommandError, match="Unknown command: .nope"):
        parse(".nope")


def test_a_lone_surrogate_gives_a_clean_error_not_an_internal_one(engine, admin):
    for line, message in [(".user create frank\ud800 S3cret-pass-1 viewer", "Invalid name at argument 1"),
                          (".user create frank S3cret\ud800pass viewer", "Invalid password: it is not valid Unicode"),
                          (".user password admin N3w\udcffpass1", "Invalid password: it is not valid Unicode")]:
        with pytest.raises(CommandError) as caught:
            engine.execute(admin, line)
        assert caught.value.message.startswith(message)


def test_the_shell_never_prints_a_misplaced_password(shell):
    proc = shell(f".user create frank viewer {SECRET}\n.user create erin correct horse battery staple\n",
                 "--on-error", "continue")
    assert proc.returncode == 1
    assert SECRET not in proc.stderr + proc.stdout and "battery" not in proc.stderr + proc.stdout
    assert proc.stderr.splitlines() == [
        "<stdin>:1: error: Unknown role at argument 3. Valid roles: admin, editor, viewer",
        "<stdin>:2: error: Too many arguments (from argument 4: quote a password that holds blanks). "
        "Usage: .user create <name> [<password>] [<role>] [password=@<file>|-]"]


def test_mistyped_and_pasted_lines_never_reach_the_history_file(tmp_path, config_file):
    from ptyshell import Terminal, pty_env

    t = Terminal(["--data-dir", str(tmp_path / "data")], pty_env(tmp_path, config_file))
    try:
        t.expect("admin@local:default>")
        for line in [f".usr create bob {SECRET}-1 viewer", f"user create bob {SECRET}-2 viewer",
                     f".user\u00a0create bob {SECRET}-3 viewer", f".user create bob viewer {SECRET}-4"]:
            t.type(line + "<Enter>")
            t.expect("error: ")
            t.expect("admin@local:default>")
        # A pasted block (bracketed paste): one entry whose second line is a password.
        t.type(f"\x1b[200~.kg list\n.user password admin {SECRET}-5\x1b[201~<Enter>")
        t.expect("admin@local:default>")
        t.type(f".user create carol {SECRET}-6 viewer<Enter>")
        t.expect("User 'carol' created")
        t.type(".quit<Enter>")
        assert t.finish() == 0
    finally:
        t.child.close(force=True)
    history = (tmp_path / "state" / "inputlayer" / "history").read_text()
    assert SECRET not in history
    assert "+.user create carol ******** viewer" in history
