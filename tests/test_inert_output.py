"""Text from outside (a user name as given at a failed login) is inert in every output format:
no control character reaches the terminal, and no csv cell is a spreadsheet formula."""

from __future__ import annotations

import csv
import io
import json

import pytest

from backend.result import Result
from repl.output import render

HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31m\x7f"
FORMULAS = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)"]


@pytest.mark.parametrize("fmt", ["table", "plain", "csv", "json"])
def test_control_characters_from_outside_are_escaped_in_every_format(fmt):
    text = render(Result(["target", "detail"], [[HOSTILE, "bad\ud800surrogate"]]), fmt)
    assert not any(c in text for c in "\x1b\x07\x9b\x7f\ud800"), repr(text)
    assert "\\x1b]0;owned\\x07" in text or "\\u001b]0;owned\\u0007" in text


def test_json_keeps_the_exact_text_for_a_json_reader():
    text = render(Result(["target"], [[HOSTILE + "\U000e0001"]]), "json")
    assert text.isascii() or text.isprintable()
    assert json.loads(text)["rows"] == [[HOSTILE + "\U000e0001"]]


def test_csv_cells_that_start_like_a_formula_are_quoted_with_an_apostrophe():
    text = render(Result(["target", "n"], [[f, "1"] for f in FORMULAS] + [["plain, name", "x"]]), "csv")
    for formula in FORMULAS:
        assert '"\'' + formula.replace('"', '""') + '"' in text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1:] == [["'" + f, "1"] for f in FORMULAS] + [["plain, name", "x"]]


def test_a_failed_login_with_a_hostile_name_is_inert_in_audit_output(shell):
    assert shell(".whoami\n").returncode == 0
    for name in [HOSTILE + "user", *FORMULAS]:
        failed = shell(".whoami\n", INPUTLAYER_ADMIN_PASSWORD=None, INPUTLAYER_USER=name,
                       INPUTLAYER_PASSWORD="wrong-password")
        assert failed.returncode == 2
    for fmt in ("csv", "json", "plain", "table"):
        out = shell(".audit limit=10\n", "--format", fmt)
        assert out.returncode == 0, out.stderr
        assert not any(c in out.stdout for c in "\x1b\x07\x9b\x7f"), fmt
        assert "owned" in out.stdout
    csv_out = shell(".audit limit=10\n", "--format", "csv").stdout
    cells = [cell for row in csv.reader(io.StringIO(csv_out)) for cell in row]
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)
    assert "'" + FORMULAS[0] in cells
