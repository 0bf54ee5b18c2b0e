"""Line numbers of the tables and keys of a TOML text, for error messages.

Neither tomllib nor tomlkit says where a value came from. The file has already been parsed by
tomlkit when this runs, so it is valid TOML: a scan that knows where strings, comments and
brackets start and end finds every table header and every key that opens a line, and tomlkit
itself decodes each header and key (quoted, dotted) into its path.
"""

from __future__ import annotations

from typing import Any

import tomlkit

Path = tuple[str, ...]


def key_lines(text: str) -> dict[Path, int]:
    """The line of every table header and key-value line, by full path."""
    found: dict[Path, int] = {}
    table: Path = ()
    for number, kind, raw in _statements(text):
        if kind == "header":
            table = _path(tomlkit.parse(raw + "\n"))
            for size in range(1, len(table) + 1):      # [a.b] opens `a` too, if nothing did before
                found.setdefault(table[:size], number)
        else:
            found.setdefault(table + _path(tomlkit.parse(raw + " = 0\n")), number)
    return found


def line_of(lines: dict[Path, int], path: Path) -> int:
    """The line of `path`, else of its nearest enclosing table or key (1 when none)."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return 1


def _path(node: Any) -> Path:
    """The one chain of keys in a document made from a single header or key."""
    path: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        key = next(iter(node))
        path.append(str(key))
        node = node[key]
        if isinstance(node, list) and node:     # [[array.of.tables]]
            node = node[-1]
    return tuple(path)


def _statements(text: str):
    """(line number, "header" or "key", the header or key text) for each statement."""
    i, n, line = 0, len(text), 1
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch in " \t\r":
            i += 1
        elif ch == "#":
            i = _line_end(text, i)
        elif ch == "[":
            end = _skip_key(text, i + 1, "]")
            if text.startswith("]]", end) and text.startswith("[[", i):
                end += 1
            yield line, "header", text[i:end + 1]
            i = end + 1
        else:
            end = _skip_key(text, i, "=")
            yield line, "key", text[i:end]
            i, line = _skip_value(text, end + 1, line)


def _line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _skip_key(text: str, i: int, stop: str) -> int:
    """The index of `stop` after a key (whose quoted parts may hold it)."""
    while text[i] != stop:
        i = _skip_string(text, i)[0] if text[i] in "\"'" else i + 1
    return i


def _skip_string(text: str, i: int) -> tuple[int, int]:
    """(index after the string starting at i, newlines inside it)."""
    quote = text[i]
    if text.startswith(quote * 3, i):
        end = i + 3
        while True:
            end = text.index(quote * 3, end)
            if quote == '"' and _escaped(text, end):
                end += 1
                continue
            break
        end += 3
        while text.startswith(quote, end):        # up to two quotes may end the content
            end += 1
        return end, text.count("\n", i, end)
    end = i + 1
    while text[end] != quote or (quote == '"' and _escaped(text, end)):
        end += 1
    return end + 1, 0


def _escaped(text: str, i: int) -> bool:
    backslashes = 0
    while text[i - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _skip_value(text: str, i: int, line: int) -> tuple[int, int]:
    """Skip a value (arrays and inline tables may span lines); return the index of the end of
    its line and the line number there."""
    depth = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            i, newlines = _skip_string(text, i)
            line += newlines
            continue
        if ch == "#":
            i = _line_end(text, i)
            continue
        if ch == "\n":
            if depth == 0:
                return i, line
            line += 1
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        i += 1
    return i, line
