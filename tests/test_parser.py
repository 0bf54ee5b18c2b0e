"""The lexer and the registry-driven parser: quoting, kinds, options, usage and unknown commands."""

from __future__ import annotations

import pytest

from backend.errors import CommandError
from backend.language.lexer import quote_word, tokenize
from backend.language.parser import parse, redact
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
    (".user frobnicate", "Usage: .user list|create|drop|password|role|show ..."),
    (".kg nonsense", "Usage: .kg [list|create|use|drop|acl list|acl grant|acl revoke|acl check] ..."),
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
