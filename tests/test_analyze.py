"""analyze(): the role of every token of a line, complete or half-typed, by the parser's rules."""

from __future__ import annotations

import pytest

from backend.errors import CommandError
from backend.language.kinds import KG, KG_ROLE, ROLE, SECRET, USER
from backend.language.parser import MASK, Role, analyze, parse, redact
from backend.language.registry import COMMANDS


def roles(line: str, partial: bool = False) -> list[tuple[str, Role, str | None]]:
    """(text, role, kind name) of each part."""
    return [(p.text, p.role, p.kind.name if p.kind else None) for p in analyze(line, partial=partial).parts]


def test_command_words_and_arguments_by_kind():
    assert roles(".kg acl grant sales alice editor") == [
        (".kg", Role.COMMAND, None), ("acl", Role.SUBCOMMAND, None), ("grant", Role.SUBCOMMAND, None),
        ("sales", Role.ARGUMENT, "kg"), ("alice", Role.ARGUMENT, "user"), ("editor", Role.ARGUMENT, "kg_role")]
    parts = analyze(".kg acl grant sales alice editor").parts
    assert [(p.kind, p.name) for p in parts[3:]] == [(KG, "kg"), (USER, "user"), (KG_ROLE, "role")]
    assert analyze(".KG ACL Grant x").command is analyze(".kg acl grant x").command


def test_offsets_are_those_of_the_raw_line():
    line = '.user show  "al ice"'
    (*_, name) = analyze(line).parts
    assert (name.start, name.end, name.text) == (12, 20, "al ice")
    assert line[name.start:name.end] == '"al ice"'


def test_words_past_the_parameters_are_extra():
    assert roles(".kg acl grant a b editor d")[-1] == ("d", Role.EXTRA, None)
    assert roles(".kg foo")[-1] == ("foo", Role.EXTRA, None)
    assert roles(".whoami now") == [(".whoami", Role.COMMAND, None), ("now", Role.EXTRA, None)]


def test_a_half_typed_line():
    assert roles(".kg acl grant sal", partial=True)[-1] == ("sal", Role.ARGUMENT, "kg")
    assert roles(".user show 'ali", partial=True)[-1] == ("ali", Role.ARGUMENT, "user")
    with pytest.raises(CommandError):
        analyze(".user show 'ali")
    analysis = analyze(".kg acl grant sales ", partial=True)
    assert analysis.positional == 1 and analysis.command is not None
    assert analysis.command.words == ("kg", "acl", "grant")


def test_unknown_commands_and_groups():
    assert roles(".user") == [(".user", Role.GROUP, None)]
    assert roles(".user pasword bob") == [(".user", Role.GROUP, None), ("pasword", Role.UNKNOWN, None),
                                          ("bob", Role.UNKNOWN, None)]
    assert roles(".usr x") == [(".usr", Role.UNKNOWN, None), ("x", Role.UNKNOWN, None)]
    plain = analyze("select 1")
    assert plain.command is None and plain.group is None
    assert analyze(".User pasword").group == "user"
    assert analyze("").parts == []


def test_secrets_follow_the_binding_rule():
    assert roles(".user create bob pw editor")[3:] == [("pw", Role.ARGUMENT, "secret"),
                                                      ("editor", Role.ARGUMENT, "role")]
    # A lone role word is the role: the password is asked for.
    assert roles(".user create bob editor")[3:] == [("editor", Role.ARGUMENT, "role")]
    assert roles(".user create bob Viewer")[3][2] == "role"
    assert roles(".user create bob pw")[3:] == [("pw", Role.ARGUMENT, "secret")]
    assert [p.secret for p in analyze(".user password alice s3cret").parts] == [False, False, False, True]
    given = [p for p in analyze(".user create bob pw").parts if p.secret]
    assert [(p.kind, p.name) for p in given] == [(SECRET, "password")]


def test_an_unparseable_line_masks_every_word_from_the_secret_on():
    # An unquoted password with a blank: `pass` is no role, so both words may be the secret.
    assert analyze(".user create bob my pass").secret_spans == [(17, 19), (20, 24)]
    assert analyze(".user password alice a b c").secret_spans == [(21, 22), (23, 24), (25, 26)]
    assert analyze(".user create b@d pw").secret_spans == [(17, 19)]
    assert redact(".user create bob my pass editor") == f".user create bob {MASK} {MASK} {MASK}"
    assert analyze(".user password alice").secret_spans == []


def test_options_keys_and_values():
    parts = analyze(".apikey create etl role=editor bogus=1 x").parts
    assert [(p.text, p.role, p.name) for p in parts[2:]] == [
        ("etl", Role.ARGUMENT, "label"), ("role", Role.OPTION_KEY, "role"), ("editor", Role.OPTION_VALUE, "role"),
        ("bogus", Role.OPTION_KEY, None), ("1", Role.OPTION_VALUE, None), ("x", Role.EXTRA, None)]
    assert parts[4].kind is ROLE and parts[6].kind is None
    assert (parts[3].start, parts[3].end, parts[4].start) == (19, 23, 24)   # `=` lies between
    analysis = analyze(".apikey create etl ROLE=editor kg=a,b")
    assert analysis.options == frozenset({"role", "kg"}) and analysis.positional == 1


def test_a_quoted_equals_sign_is_a_value_as_the_parser_reads_it():
    assert roles(".apikey create 'a=b' role=viewer")[2] == ("a=b", Role.ARGUMENT, "name")
    with pytest.raises(CommandError, match="Invalid name 'a=b'"):
        parse(".apikey create 'a=b' role=viewer")
    # Without options in the command, `=` is just part of a value.
    assert roles(".user show a=b")[-1] == ("a=b", Role.ARGUMENT, "user")


def test_help_takes_every_word():
    assert roles(".help .kg acl grant")[1:] == [(".kg", Role.ARGUMENT, "topic"), ("acl", Role.ARGUMENT, "topic"),
                                               ("grant", Role.ARGUMENT, "topic")]


# `password=@FILE` and `password=-` are resolved by the shell before a line reaches parse().
@pytest.mark.parametrize("line", [e for c in COMMANDS for e in c.examples if "password=@" not in e and "password=-" not in e])
def test_analyze_binds_what_parse_binds(line):
    inv = parse(line)
    analysis = analyze(line)
    assert analysis.command is inv.command
    bound = {p.name: p.text for p in analysis.parts if p.role is Role.ARGUMENT}
    assert set(bound) == {p.name for p in inv.command.params if inv.args[p.name] is not None}
    assert {p.name for p in analysis.parts if p.role is Role.OPTION_KEY} == set(inv.options)
