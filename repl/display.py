"""Showing a result on a terminal: tables that fit its width, a pager only when needed."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Mapping

from backend.result import Result

from .output import (
    cells_table,
    display_width,
    render,
    render_table,
    rows_footer,
    table_cells,
)

MIN_WRAP = 24   # narrower than this, a wrapped last column is harder to read than records


def fit_table(result: Result, width: int, expanded: str = "auto") -> str:
    """The table, else the same table with its last column wrapped, else one record a block
    (psql's \\x): whichever is first to fit in `width` columns. `expanded` (`.expanded`) `on`
    always shows records, `off` never does."""
    if result.is_message:
        return render_table(result)
    header, body, widths = table_cells(result)
    if expanded == "on":
        return _vertical(header, body)
    text = cells_table(header, body, widths)
    if max(map(display_width, text.splitlines())) <= width:
        return text
    room = width - sum(widths[:-1]) - 3 * (len(widths) - 1)
    if len(widths) > 1 and room >= MIN_WRAP:
        return _wrapped(header, body, widths[:-1] + [room])
    return text if expanded == "off" else _vertical(header, body)


def _wrapped(header: list[str], body: list[list[str]], widths: list[int]) -> str:
    def lines(cells: list[str]) -> list[str]:
        last = textwrap.wrap(cells[-1], widths[-1], break_on_hyphens=False) or [""]
        pad = [" " * w for w in widths[:-1]]
        out = []
        for i, part in enumerate(last):
            lead = cells[:-1] if i == 0 else pad
            out.append(" | ".join([c + " " * (w - display_width(c)) for c, w in zip(lead, widths)] + [part])
                       .rstrip() + "\n")
        return out

    out = lines(header) + ["-+-".join("-" * w for w in widths) + "\n"]
    for row in body:
        out += lines(row)
    out.append(rows_footer(len(body)) + "\n")
    return "".join(out)


def _vertical(header: list[str], body: list[list[str]]) -> str:
    key_width = max(map(display_width, header))
    out = []
    for n, row in enumerate(body, 1):
        out.append(f"-[ RECORD {n} ]" + "-" * max(0, key_width - 10) + "\n")
        out += [h + " " * (key_width - display_width(h)) + " | " + v + "\n" for h, v in zip(header, row)]
    out.append(rows_footer(len(body)) + "\n")
    return "".join(out)


def format_result(result: Result, fmt: str, width: int, expanded: str = "auto") -> str:
    return fit_table(result, width, expanded) if fmt == "table" else render(result, fmt)


def needs_pager(text: str, height: int) -> bool:
    return text.count("\n") >= height - 1


def page(text: str, env: Mapping[str, str]) -> bool:
    """Show `text` through $PAGER (default `less -R`, which keeps the screen after quitting with
    -X). False when no pager could be run, so the caller prints the text itself."""
    command = env.get("PAGER") or "less -R -X"
    try:
        done = subprocess.run(command, shell=True, input=text.encode(), env=dict(env), check=False)
    except OSError:
        return False
    return done.returncode != 127   # the shell's "command not found"
