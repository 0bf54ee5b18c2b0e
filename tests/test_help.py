"""`.help`: readable at 80 columns and 24 rows, derived from the registry (issue 14)."""

from __future__ import annotations

import pytest

from backend.engine.handlers.apikeys import DEFAULT_GRACE
from backend.engine.handlers.tokens import DEFAULT_TOKEN_TTL
from backend.errors import CommandError
from backend.language.kinds import ROLES, parse_duration
from backend.language.registry import COMMANDS, audit_actions, find_command


def lines(engine, session, line):
    result = engine.execute(session, line)
    assert result.columns == ["message"]
    return [row[0] for row in result.rows]


def test_overview_fits_80_by_24_without_a_pager(engine, admin):
    text = lines(engine, admin, ".help")
    assert len(text) <= 22 and max(map(len, text)) <= 79
    assert "  .kg acl list|grant|revoke|check    Who may read, write or own a KG" in text
    every_group = {"." + c.words[0] for c in COMMANDS if not c.server_only}     # a local target
    assert every_group <= {word for line in text for word in line.split()}


@pytest.mark.parametrize("topic, first, count", [
    (".user", ".user list", 6), (".kg acl", ".kg acl list", 4), ("kg", ".kg", 9), (".token", ".token issue", 2),
])
def test_a_group_lists_its_whole_group(engine, admin, topic, first, count):
    text = lines(engine, admin, f".help {topic}")
    listed = [line.split()[0:len(first.split())] for line in text if line.startswith("  .")]
    assert listed[0] == first.split()
    assert len([line for line in text if line.startswith("  .")]) == count


def test_one_command_shows_values_defaults_and_examples(engine, admin):
    rotate = lines(engine, admin, ".help .apikey rotate")
    assert rotate[0] == "Usage: .apikey rotate <label> [grace=<d>]"
    assert any("grace=<d>" in line and "30s, 15m, 24h, 90d" in line for line in rotate)
    assert "(default: 24h)" in " ".join(rotate)
    assert "  .apikey rotate etl-job grace=1h" in rotate
    create = " ".join(lines(engine, admin, ".help .user create"))
    assert "a global role: " + ", ".join(ROLES) + " (default: viewer)" in create
    assert "password=@<file>|-" in create


def test_audit_help_lists_the_action_names(engine, admin):
    text = " ".join(lines(engine, admin, ".help .audit"))
    assert all(action in text for action in audit_actions())
    assert "auth.login" in text and "action=!auth" in text


def test_unknown_help_topic(engine, admin):
    with pytest.raises(CommandError, match="Unknown command: .nothing. Type .help for the list."):
        engine.execute(admin, ".help .nothing")
    with pytest.raises(CommandError, match="^Unknown sub-command 'list' for .token. Valid: issue, revoke$"):
        engine.execute(admin, ".help .token list")


def test_every_line_of_every_help_fits_80_columns(engine, admin):
    for cmd in COMMANDS:
        assert max(map(len, lines(engine, admin, f".help {cmd.name}"))) <= 79, cmd.name


def test_declared_defaults_are_the_handlers_defaults():
    assert parse_duration(next(o for o in find_command(".apikey rotate").options if o.name == "grace").default) \
        == DEFAULT_GRACE
    ttl = next(o for o in find_command(".token issue").options if o.name == "ttl").default
    assert parse_duration(ttl.split(";")[0]) == DEFAULT_TOKEN_TTL


@pytest.mark.parametrize("rows, columns", [(24, 80), (40, 120)])
def test_help_on_a_terminal_needs_no_pager(tmp_path, config_file, rows, columns):
    from ptyshell import Terminal, pty_env

    marker = tmp_path / "paged"
    term = Terminal(["--data-dir", str(tmp_path / "d")], pty_env(tmp_path, config_file, PAGER=f"touch {marker}; cat"),
                    rows=rows, columns=columns)
    term.expect("admin@local:default>")
    term.type(".help<Enter>")
    term.expect("Type .help .kg for a group's commands")
    term.expect("admin@local:default>")
    term.type(".quit<Enter>")
    assert term.finish() == 0
    assert not marker.exists()
    shown = term.screen[term.screen.index("  .help "):term.screen.index("for one command.")]
    assert "-[ RECORD" not in shown and all(len(line) < columns for line in shown.splitlines())
