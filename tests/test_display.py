"""Results on a terminal: fitting the width, vertical records, paging only when needed."""

from __future__ import annotations

from backend.result import Result
from repl.display import fit_table, needs_pager, page
from repl.output import render_table

WIDE = Result(["username", "role", "created_at", "last_login_at"],
              [["alice", "admin", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]])


def test_a_table_that_fits_is_unchanged():
    assert fit_table(WIDE, 200) == render_table(WIDE)


def test_a_long_last_column_is_wrapped():
    result = Result(["command", "description"], [[".user create", "word " * 20]])
    text = fit_table(result, 50)
    assert max(len(line) for line in text.splitlines()) <= 50
    assert text.splitlines()[0].startswith("command      | description")
    assert text.rstrip().endswith("1 row")
    assert text.count("word") == 20


def test_too_narrow_for_wrapping_shows_records():
    text = fit_table(WIDE, 40)
    assert text.splitlines()[:5] == ["-[ RECORD 1 ]---", "username      | alice", "role          | admin",
                                     "created_at    | 2026-01-01T00:00:00Z", "last_login_at | 2026-01-02T00:00:00Z"]
    assert text.endswith("1 row\n")


def test_backend_text_is_escaped_in_every_layout():
    evil = Result(["a", "b"], [["\x1b[2J", "\x1b]0;x\x07" * 30]])
    for width in (400, 60, 5):
        assert "\x1b" not in fit_table(evil, width)


def test_messages_are_never_reshaped():
    message = Result.message("x" * 300)
    assert fit_table(message, 40) == "x" * 300 + "\n"


def test_pager_only_when_the_screen_is_too_short():
    assert not needs_pager("a\n" * 10, 24)
    assert needs_pager("a\n" * 30, 24)


def test_page_pipes_through_pager_command(tmp_path):
    out = tmp_path / "paged"
    assert page("hello\n", {"PAGER": f"cat > {out}", "PATH": "/usr/bin:/bin"})
    assert out.read_text() == "hello\n"
    assert not page("hello\n", {"PAGER": "no-such-pager-here", "PATH": "/usr/bin:/bin"})
