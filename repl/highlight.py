"""Colours and masking of the line being typed, derived from the command registry."""

from __future__ import annotations

from typing import Iterator

from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput
from prompt_toolkit.styles import Style
from pygments.lexer import Lexer
from pygments.token import Comment, Error, Keyword, Name, Operator, String, Text, _TokenType

from backend.language.lexer import tokenize
from backend.language.registry import GROUPS, match_command, secret_spans

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
    aliases = ["inputlayer"]

    def get_tokens_unprocessed(self, text: str) -> Iterator[tuple[int, _TokenType, str]]:
        for start, end, token in sorted(self._spans(text)):
            yield start, token, text[start:end]

    def _spans(self, text: str) -> list[tuple[int, int, _TokenType]]:
        stripped = text.lstrip()
        if stripped.startswith(("#", "//")):
            return [(0, len(text), Comment)]
        tokens = tokenize(text, partial=True)
        spans = self._gaps(text, tokens)
        if not tokens:
            return spans
        words = [tokens[0].text[1:]] + [t.text for t in tokens[1:]]
        cmd, used = match_command(words) if tokens[0].text.startswith(".") else (None, 0)
        if cmd is None:
            # A group's first word alone is fine while typing; anything else is wrong.
            known = tokens[0].text.startswith(".") and words[0].lower() in GROUPS and len(tokens) == 1
            first = Keyword if known else Error
            spans.append((tokens[0].start, tokens[0].end, first))
            spans += [(t.start, t.end, Text) for t in tokens[1:]]
            return spans
        spans += [(t.start, t.end, Keyword if i == 0 else Keyword.Namespace)
                  for i, t in enumerate(tokens[:used])]
        secrets = set(secret_spans(text))
        options = {o.name: o for o in cmd.options}
        params = list(cmd.params)
        position = 0
        for tok in tokens[used:]:
            if (tok.start, tok.end) in secrets:
                spans.append((tok.start, tok.end, Secret))
                position += 1
                continue
            key, eq, _ = text[tok.start:tok.end].partition("=")
            if eq and options:
                split = tok.start + len(key)
                known = key.lower() in options
                spans.append((tok.start, split, Name.Attribute if known else Error))
                spans.append((split, split + 1, Operator))
                kind = options[key.lower()].kind if known else None
                spans.append((split + 1, tok.end, KIND_TOKENS.get(kind.completes, Name) if kind else Text))
                continue
            # Skip an optional secret that was left out (`.user create bob editor`).
            while position < len(params) and params[position].kind.secret and params[position].optional:
                position += 1
            if position < len(params):
                spans.append((tok.start, tok.end, KIND_TOKENS.get(params[position].kind.completes, Name)))
                if not params[position].rest:
                    position += 1
            else:
                spans.append((tok.start, tok.end, Error))
        return spans

    @staticmethod
    def _gaps(text: str, tokens) -> list[tuple[int, int, _TokenType]]:
        """The blanks between words (Pygments wants every character accounted for)."""
        spans, at = [], 0
        for tok in tokens:
            if tok.start > at:
                spans.append((at, tok.start, Text))
            at = tok.end
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
