"""Colours and masking of the line being typed, from the roles analyze() gives its words."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from prompt_toolkit.layout.processors import (
    Processor,
    Transformation,
    TransformationInput,
)
from prompt_toolkit.styles import Style
from pygments.lexer import Lexer  # type: ignore[import-untyped]
from pygments.token import (  # type: ignore[import-untyped]
    Comment,
    Error,
    Keyword,
    Name,
    Operator,
    String,
    Text,
    _TokenType,
)

from backend.language.parser import Part, Role, analyze, secret_spans

Secret = String.Secret
# Pygments token -> how a kind of argument looks; unlisted kinds are plain names.
KIND_TOKENS = {"roles": Name.Builtin, "kg_roles": Name.Builtin, "kgs": Name.Namespace,
               "durations": Name.Constant, "actions": Name.Constant}

STYLE = Style.from_dict({
    "pygments.keyword": "bold ansiblue",
    "pygments.keyword.namespace": "ansiblue",
    "pygments.name": "ansigreen",
    "pygments.name.namespace": "ansicyan",
    "pygments.name.builtin": "ansimagenta",
    "pygments.name.constant": "ansiyellow",
    "pygments.name.attribute": "ansiyellow",
    "pygments.operator": "",
    "pygments.string.secret": "ansired",
    "pygments.error": "ansired underline",
    "pygments.comment": "italic ansibrightblack",
    "bottom-toolbar": "noreverse bg:ansibrightblack fg:ansiwhite",
})


class CommandLexer(Lexer):
    """Pygments lexer for one dot-command line: command and sub-command words, arguments by
    their registry kind, `key=value` options, secrets (masked on screen by SecretMask)."""
    name = "InputLayer admin"
    aliases: ClassVar[list[str]] = ["inputlayer"]

    def get_tokens_unprocessed(self, text: str) -> Iterator[tuple[int, _TokenType, str]]:
        for start, end, token in sorted(self._spans(text)):
            yield start, token, text[start:end]

    def _spans(self, text: str) -> list[tuple[int, int, _TokenType]]:
        if text.lstrip().startswith(("#", "//")):
            return [(0, len(text), Comment)]
        parts = analyze(text, partial=True).parts
        spans = _gaps(text, parts)
        spans += [(p.start, p.end, _token(p, first=i == 0, alone=len(parts) == 1)) for i, p in enumerate(parts)]
        return spans


def _token(part: Part, *, first: bool, alone: bool) -> _TokenType:
    """How a word looks, by its role."""
    role = part.role
    if part.secret:
        return Secret
    if role is Role.ARGUMENT or role is Role.OPTION_VALUE:
        return KIND_TOKENS.get(part.kind.completes or "", Name) if part.kind else Text
    if role is Role.OPTION_KEY:
        return Name.Attribute if part.name else Error
    if role is Role.COMMAND or role is Role.GROUP and alone:   # a group's word alone: still typing
        return Keyword
    if role is Role.SUBCOMMAND:
        return Keyword.Namespace
    return Error if first or role is Role.EXTRA else Text


def _gaps(text: str, parts: list[Part]) -> list[tuple[int, int, _TokenType]]:
    """What lies between words: blanks, and the `=` of an option (Pygments wants every
    character accounted for)."""
    spans: list[tuple[int, int, _TokenType]] = []
    at = 0
    after: Role | None = None
    for part in parts:
        if part.start > at:
            spans.append((at, part.start, Operator if after is Role.OPTION_KEY else Text))
        at, after = part.end, part.role
    if at < len(text):
        spans.append((at, len(text), Text))
    return spans


class SecretMask(Processor):
    """Shows each character of a secret argument as `*`; the buffer keeps the real text."""

    def apply_transformation(self, ti: TransformationInput) -> Transformation:
        line = ti.document.lines[ti.lineno]
        spans = secret_spans(line)
        if not spans:
            return Transformation(ti.fragments)
        masked = {ti.source_to_display(i) for start, end in spans for i in range(start, end)}
        fragments, at = [], 0
        for fragment in ti.fragments:
            style, text = fragment[0], fragment[1]
            if "[ZeroWidthEscape]" not in style:
                text = "".join("*" if at + i in masked else ch for i, ch in enumerate(text))
                at += len(text)
            fragments.append((style, text, *fragment[2:]))
        return Transformation(fragments)
