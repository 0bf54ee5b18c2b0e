"""The lexer and the registry-driven parser: quoting, kinds, options, usage and unknown commands."""

from __future__ import annotations

import pytest

from backend.errors import CommandError
from backend.language.lexer import quote_word, tokenize
from backend.language.parser import parse, parse_program, redact
from backend.language.registry import COMMANDS


def words(line):
    return [t.text for t in tokenize(line)]


def test_quotes_group_and_escape():
    assert words('.user create bob "correct horse battery"') == [".user", "create", "bob", "correct horse battery"]
    assert words(r'.x "say \"hi\" \\ ok"') == [".x", 'say "hi" \\ ok']
    assert words(".x 'single \\ quoted'") == [".x", "single \\ quoted"]
    assert words(".x a//b #c") == [".x", "a//b", "#c"]


def test_unclosed_quote():
    with pytest.raises(CommandError, match="^Unclosed quote$"):
        tokenize('.user create bob "oops')
    assert [t.text for t in tokenize('.x "half', partial=True)] == [".x", "half"]


@pytest.mark.parametrize("word", ["plain", "with space", 'qu"ote', "back\\slash", "", "it's"])
def test_quote_word_round_trips(word):
    assert words(".x " + quote_word(word))[1] == word


def test_commands_and_roles_are_case_insensitive_names_are_not():
    inv = parse(".USER Create Bob pass-word-1 EDITOR")
    assert inv.command.name == ".user create"
    assert inv.args == {"name": "Bob", "password": "pass-word-1", "role": "editor"}
    assert parse(".kg ACL Grant sales bob VIEWER").command.name == ".kg acl grant"
    assert parse(".Kg").command.name == ".kg"


def test_lone_role_word_is_the_role_not_the_password():
    inv = parse(".user create bob editor")
    assert inv.args["password"] is None and inv.args["role"] == "editor"
    assert parse(".user create bob 'pw long enough'").args["role"] is None


def test_options():
    inv = parse(".apikey create etl role=Editor kg=sales,hr,sales expires=90d user=alice")
    assert inv.options == {"role": "editor", "kg": ("sales", "hr"), "expires": 90 * 86400, "user": "alice"}
    assert parse(".apikey create etl expires=never").options["expires"] is None


@pytest.mark.parametrize("line, message", [
    (".apikey create etl colour=red", "Unknown option 'colour'"),
    (".apikey create etl role=viewer role=editor", "Option 'role' given twice"),
    (".kg use sales extra", "Unexpected argument 'extra'"),
    (".user create", "Usage: .user create <name> [<password>] [<role>]"),
    (".user frobnicate", "Unknown sub-command 'frobnicate' for .user. Valid: list, create, drop, password, role, show"),
    (".kg nonsense", "Unknown sub-command 'nonsense' for .kg. Valid: list, create, use, drop, acl"),
    (".token list", "Unknown sub-command 'list' for .token. Valid: issue, revoke"),
    (".kg acl show", "Unknown sub-command 'show' for .kg acl. Valid: list, grant, revoke, check"),
    (".kg acl", "Usage: .kg acl list|grant|revoke|check ..."),
    (".user", "Usage: .user list|create|drop|password|role|show ..."),
    (".session kill 1234567", "too short: give the id or a unique prefix of at least 8 characters"),
    (".audit action=frobnicate", "Unknown audit action 'frobnicate'. Valid: acl.check, "),
    (".audit outcome=maybe", "Unknown outcome 'maybe'. Valid: ok, denied, failed, locked"),
    (".user create bob password=@/run/secrets/bob", "password=@FILE and password=- are read by the shell"),
    (".user password bob password=-", "password=@FILE and password=- are read by the shell"),
    (".user create bob pw-pw-pw-pw password=pw-pw-pw-pw", "Password given twice"),
    (".nope", "Unknown command: .nope. Type .help for the list."),
    (".user create bad/name pw-pw-pw-pw", "Invalid name at argument 1: use letters, digits, '_', '.', '-' (at most 64)"),
    (".user create " + "a" * 65 + " pw-pw-pw-pw", "Invalid name"),
    (".user create -dash pw-pw-pw-pw", "Invalid name at argument 1"),
    (".user create bob pw-pw-pw-pw root", "Unknown role at argument 3. Valid roles: admin, editor, viewer"),
    (".kg acl grant sales bob boss", "Invalid KG role 'boss'. Valid: owner, editor, viewer"),
    (".apikey create k expires=soon", "Invalid duration 'soon'"),
    (".audit limit=0", "Invalid number '0'"),
    ("select * from users", "Only administration commands are supported by this server."),
])
def test_errors_name_what_is_wrong(line, message):
    with pytest.raises(CommandError) as err:
        parse(line)
    assert message in err.value.message


def test_redaction_masks_only_secrets():
    assert redact(".user create bob 'S3cret pass!' viewer") == ".user create bob ******** viewer"
    assert redact(".user password bob N3w-pass-123") == ".user password bob ********"
    assert redact(".user create bob editor") == ".user create bob editor"
    assert redact(".kg acl grant sales bob editor") == ".kg acl grant sales bob editor"
    # An unquoted password with blanks does not parse: every word from the secret on is masked.
    assert redact(".user create bob my secret words viewer") == ".user create bob ******** ******** ******** ********"


def test_registry_is_complete():
    usages = [c.usage for c in COMMANDS]
    assert len(usages) == len(set(usages))


def test_password_option_and_plain_passwords_with_equals():
    inv = parse(".user create bob editor password=pw-pw-pw-pw")
    assert inv.args == {"name": "bob", "password": "pw-pw-pw-pw", "role": "editor"} and inv.options == {}
    # Only declared keys make an option in a command with a password: `a=b=c` is a password.
    assert parse(".user create bob a=b=c-long").args["password"] == "a=b=c-long"
    assert parse(".user password bob password=x-y-z-w-v").args["password"] == "x-y-z-w-v"


def test_history_keeps_the_password_reference_not_a_password():
    assert redact(".user create bob password=@/run/secrets/bob") == ".user create bob password=@/run/secrets/bob"
    assert redact(".user create bob password=-") == ".user create bob password=-"
    assert redact(".user create bob password=hunter22") == ".user create bob password=********"


def test_audit_filters_parse():
    inv = parse(".audit action=!auth outcome=DENIED")
    assert inv.options == {"action": (True, "auth"), "outcome": "denied"}
    assert parse(".audit action=user.create").options["action"] == (False, "user.create")
    assert parse(".audit action=apikey").options["action"] == (False, "apikey")


def test_session_kill_takes_a_prefix():
    assert parse(".session kill 3F2A9C1D").args["session_id"] == "3f2a9c1d"


@pytest.mark.parametrize("program, planned", [
    ("# provisioning\n.whoami\n  // note\n\n.kg", [2, 5]),
    ("#.user drop admin\n.whoami", [2]),
])
def test_programs_skip_comment_lines(program, planned):
    assert [n for n, _, _ in parse_program(program)] == planned
