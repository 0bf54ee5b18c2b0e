"""Split a command line into words, following the quoting rules of commands.md."""

from __future__ import annotations

import re
from typing import NamedTuple

from ..errors import CommandError

BLANKS = " \t"
_PLAIN_WORD = re.compile(r"[^ \t]+")


class Token(NamedTuple):
    text: str    # the word after quotes and escapes are removed
    start: int   # offsets into the raw line, so the shell can colour or mask the span
    end: int
    quoted: bool


def tokenize(line: str, *, partial: bool = False) -> list[Token]:
    """Words of `line`. With partial=True an unclosed quote ends the last word instead of
    raising, which is what a completer or highlighter needs for a half-typed line."""
    if "'" not in line and '"' not in line:      # the common case, without the character loop
        return [Token(m.group(), m.start(), m.end(), False) for m in _PLAIN_WORD.finditer(line)]
    tokens: list[Token] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] in BLANKS:
            i += 1
            continue
        start = i
        chars: list[str] = []
        quoted = False
        while i < n and line[i] not in BLANKS:
            ch = line[i]
            if ch in "'\"":
                quoted = True
                quote = ch
                i += 1
                closed = False
                while i < n:
                    c = line[i]
                    if c == quote:
                        closed = True
                        i += 1
                        break
                    if quote == '"' and c == "\\" and i + 1 < n and line[i + 1] in '"\\':
                        chars.append(line[i + 1])
                        i += 2
                        continue
                    chars.append(c)
                    i += 1
                if not closed and not partial:
                    raise CommandError("Unclosed quote")
            else:
                chars.append(ch)
                i += 1
        tokens.append(Token("".join(chars), start, i, quoted))
    return tokens


def split_words(line: str) -> tuple[list[str], list[bool]]:
    """The words of a line and whether each was quoted, without offsets: what the parser
    needs, several times cheaper to make than tokens."""
    if "'" not in line and '"' not in line:
        # In a printable line the only blank is the space (tabs and every other kind of white
        # space are unprintable), so str.split() cuts exactly where the blank rule does.
        words = line.split() if line.isprintable() else _PLAIN_WORD.findall(line)
        return words, [False] * len(words)
    tokens = tokenize(line)
    return [t.text for t in tokens], [t.quoted for t in tokens]


def quote_word(word: str) -> str:
    """The shortest form of `word` that tokenize() reads back as `word`."""
    if word and not any(c in word for c in BLANKS + "'\"\\"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
