"""Rendering results: table, plain, csv, json. Backend text is escaped before a terminal sees it."""

from __future__ import annotations

import json

from backend.result import Result


def printable(text: str) -> str:
    """Replace control characters (escape sequences, tabs, newlines) with visible escapes, so a
    server cannot move the cursor or change colours."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def display_width(text: str) -> int:
    if text.isascii():
        return len(text)
    import unicodedata  # costs milliseconds at start-up; most tables are ASCII

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def rows_footer(count: int) -> str:
    return "1 row" if count == 1 else f"{count} rows"


def _render_message(result: Result) -> str:
    # A list, not a generator, for join(): this runs for every line of a bulk script.
    return "".join([printable(row[0]) + "\n" for row in result.rows])


def table_cells(result: Result) -> tuple[list[str], list[list[str]], list[int]]:
    """The header and rows made printable, and each column's width on screen."""
    header = [printable(c) for c in result.columns]
    body = [[printable(v) for v in row] for row in result.rows]
    widths = [max([display_width(h)] + [display_width(r[i]) for r in body]) for i, h in enumerate(header)]
    return header, body, widths


def render_table(result: Result) -> str:
    if result.is_message:
        return _render_message(result)
    return cells_table(*table_cells(result))


def cells_table(header: list[str], body: list[list[str]], widths: list[int]) -> str:
    """The table of table_cells()' output."""
    def line(cells: list[str]) -> str:
        return " | ".join(c + " " * (w - display_width(c)) for c, w in zip(cells, widths)).rstrip() + "\n"

    out = [line(header), "-+-".join("-" * w for w in widths) + "\n"]
    out += [line(r) for r in body]
    out.append(rows_footer(len(body)) + "\n")
    return "".join(out)


def render_plain(result: Result) -> str:
    if result.is_message:
        return _render_message(result)
    return "".join(["\t".join([printable(v) for v in row]) + "\n" for row in result.rows])


# Cells that a spreadsheet would run as a formula (OWASP, CSV injection): = + - @, tab, CR.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """One RFC 4180 cell: a formula-like cell is quoted with a `'` in front (OWASP), after
    which control characters become visible escapes, so no cell reaches a terminal or a
    spreadsheet as anything but text."""
    if text.startswith(FORMULA_STARTS):
        text = printable("'" + text)
        return '"' + text.replace('"', '""') + '"'
    text = printable(text)
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def render_csv(result: Result) -> str:
    lines = [",".join([csv_cell(c) for c in result.columns])]
    lines += [",".join([csv_cell(v) for v in row]) if row != [""] else '""' for row in result.rows]
    return "".join([line + "\r\n" for line in lines])


def json_text(document: object) -> str:
    """JSON with every character that is not printable written as a \\u escape: the same
    strings to a JSON reader, nothing a terminal would act on (ensure_ascii=False alone lets
    DEL, C1 controls such as CSI, and lone surrogates through)."""
    text = json.dumps(document, ensure_ascii=False)
    if text.isprintable():
        return text
    return "".join([c if c.isprintable() else _json_escape(c) for c in text])


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def render_json(result: Result) -> str:
    return json_text({"ok": True, "columns": result.columns, "rows": result.rows}) + "\n"


def render_json_error(message: str, line: int) -> str:
    return json_text({"ok": False, "error": message, "line": line}) + "\n"


RENDERERS = {"table": render_table, "plain": render_plain, "csv": render_csv, "json": render_json}


def render(result: Result, fmt: str) -> str:
    return RENDERERS[fmt](result)
