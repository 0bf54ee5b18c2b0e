"""What a line means: parse() to run it, analyze() for the shell while it is typed.

Both follow the rules stated once here: which command the first words name (`match_line`),
which words are `key=value` options (`_is_option`) and which parameter each remaining word binds
to (`_choose`). parse() works on plain words and converts the values, since it runs for every
line of a bulk script; analyze() works on tokens with their offsets and gives every one a role,
also for a half-typed line, which is what the completer, the highlighter, the history redaction
and the password prompt need.
"""

# No `from __future__ import annotations`, as in the registry: NamedTuple would compile each
# field's annotation string at start-up.
import re
from enum import Enum
from typing import NamedTuple

from ..errors import CommandError
from .kinds import ROLE, ROLES, Kind, clip, is_secret_reference
from .lexer import Token, split_words, tokenize
from .registry import COMMANDS, GROUPS, Command, Param, group_usage, match_command

MASK = "********"   # what a secret becomes in the history file

# Commands whose every parameter is required: binding them is a zip over (name, converter)
# pairs made here once, which matters in bulk scripts.
_FIXED_ARITY = {c.words: tuple((p.name, p.kind.convert) for p in c.params)
                for c in COMMANDS if not any(p.optional or p.rest for p in c.params)}
_REQUIRED = {c.words: sum(not p.optional for p in c.params) for c in COMMANDS}
# In a command with a secret parameter only its declared keys make a word an option, so a
# password such as `a=b` typed without quotes stays a password.
_SECRET_OPTION_KEYS = {c.words: frozenset(o.name for o in c.options) for c in COMMANDS
                       if any(p.kind.secret for p in c.params)}
COMMENT_PREFIXES = ("#", "//")
# Commands that take a secret: an error about their line never echoes a word of it, since a
# misplaced or unquoted password may sit in any position (security.md, Passwords).
_HOLDS_SECRET = frozenset(c.words for c in COMMANDS
                          if any(p.kind.secret for p in c.params) or any(o.kind.secret for o in c.options))
# A first word worth echoing in "Unknown command": one that looks like a command name, not a
# whole line glued by an unusual blank (`.user\u00a0create bob S3cret`).
_COMMAND_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")


class Role(Enum):
    COMMAND = "command"            # the first word of a command, dot included (`.kg`)
    SUBCOMMAND = "subcommand"      # its further words (`acl`, `grant`)
    GROUP = "group"                # the first word of a group that is no command by itself (`.user`)
    UNKNOWN = "unknown"            # a first word that names no command, and every word after it
    ARGUMENT = "argument"          # a value for a parameter: `kind` and `name` say which
    OPTION_KEY = "option_key"      # `key` of `key=value`; `name` is None when the command has no such option
    OPTION_VALUE = "option_value"  # its value; `kind` is None when the key is unknown
    EXTRA = "extra"                # a word the command has no place for


class Part(NamedTuple):
    role: Role
    start: int          # offsets into the line
    end: int
    text: str           # the word after quotes are removed
    kind: Kind | None = None
    name: str | None = None   # the parameter's or option's name

    @property
    def secret(self) -> bool:
        # `password=@FILE` or `password=-` names where the secret is, which history may keep.
        return self.kind is not None and self.kind.secret and not (
            self.role is Role.OPTION_VALUE and is_secret_reference(self.text))


class Analysis(NamedTuple):
    tokens: list[Token]
    command: Command | None
    group: str | None            # the first word without its dot, lower case, if it has a dot
    parts: list[Part]            # in line order; a `key=value` token gives two parts
    positional: int              # how many values were given for parameters
    options: frozenset[str]      # the option keys given

    @property
    def secret_spans(self) -> list[tuple[int, int]]:
        return [(p.start, p.end) for p in self.parts if p.secret]


class Invocation:
    """A parsed line: its command, converted arguments and options, and the line it came from."""
    __slots__ = ("args", "command", "line", "options")

    def __init__(self, command: Command, line: str = ""):
        self.command = command
        self.args: dict[str, object] = {}
        self.options: dict[str, object] = {}
        self.line = line


# --- the rules --------------------------------------------------------------------------------

def match_line(words: list[str]) -> tuple[Command | None, int]:
    """The command a line's words name (the first word with its dot), and how many it took."""
    if not words or not words[0].startswith("."):
        return None, 0
    return match_command([words[0][1:], *words[1:3]])


def _is_option(cmd: Command, text: str, quoted: bool) -> bool:
    if quoted or "=" not in text:
        return False
    keys = _SECRET_OPTION_KEYS.get(cmd.words)
    return keys is None or text.split("=", 1)[0].lower() in keys


def is_comment(text: str) -> bool:
    """A blank line, or one whose first non-blank characters are `#` or `//` (commands.md)."""
    stripped = text.strip()
    return not stripped or stripped.startswith(COMMENT_PREFIXES)


def subcommand_error(words: list[str]) -> CommandError | None:
    """For words that start like a group's commands but name none of them: the usage of the
    group (no further word) or `Unknown sub-command` with the valid ones."""
    lowered = [w.lower() for w in words]
    for size in range(min(len(lowered), 3), 0, -1):
        prefix = tuple(lowered[:size])
        longer = [c.words for c in COMMANDS if c.words[:size] == prefix and len(c.words) > size]
        if not longer:
            continue
        if size == len(lowered):
            return CommandError(f"Usage: {group_usage(prefix[0])}") if size == 1 else \
                CommandError(f"Usage: .{' '.join(prefix)} {'|'.join(dict.fromkeys(w[size] for w in longer))} ...")
        following = lowered[size]
        if "=" in following or any(w[size] == following for w in longer):
            return None
        valid = ", ".join(dict.fromkeys(w[size] for w in longer))
        shown = f"'{words[size]}' " if _COMMAND_WORD.fullmatch(words[size]) else ""   # never a password
        return CommandError(f"Unknown sub-command {shown}for .{' '.join(prefix)}. Valid: {valid}")
    return None


def _choose(cmd: Command, values: list[str]) -> list[Param]:
    """The parameter each value binds to, in order: every required one, and optional ones while
    values are spare. An optional secret followed by an optional role gives way when the one
    spare value is a role word: `.user create bob editor` asks for bob's password."""
    params = cmd.params
    spare = len(values) - _REQUIRED[cmd.words]
    chosen: list[Param] = []
    for i, p in enumerate(params):
        if not p.optional:
            chosen.append(p)
        elif spare > 0:
            if (p.kind.secret and spare == 1 and i + 1 < len(params) and params[i + 1].kind is ROLE
                    and values[len(chosen)].lower() in ROLES):
                continue
            chosen.append(p)
            spare -= 1
    return chosen


# --- parse: run a line ------------------------------------------------------------------------

def parse(line: str) -> Invocation:
    """Parse one dot-command line; raise CommandError with the user-facing message."""
    texts, quoted = split_words(line)
    cmd, used = match_line(texts)
    if cmd is None:
        if not texts or not texts[0].startswith("."):
            raise CommandError("Only administration commands are supported by this server.")
        group = texts[0][1:].lower()
        if group in GROUPS:
            raise subcommand_error([group, *texts[1:]]) or CommandError(f"Usage: {group_usage(group)}")
        if not _COMMAND_WORD.fullmatch(texts[0][1:]):
            raise CommandError("Unknown command: the first word is no command name. Type .help for the list.")
        raise CommandError(f"Unknown command: .{clip(texts[0][1:], 40)}. Type .help for the list.")
    # `.kg foo` or `.kg acl foo` names no sub-command, and `.kg` takes no arguments.
    if not cmd.params and len(texts) > used and len(GROUPS[cmd.words[0]]) > 1:
        error = subcommand_error([texts[0][1:], *texts[1:]])
        if error is not None:
            raise error
    inv = Invocation(cmd, line)
    if cmd.words not in _HOLDS_SECRET:
        _bind(cmd, texts[used:], quoted[used:], inv)
        return inv
    try:
        _bind(cmd, texts[used:], quoted[used:], inv)
    except CommandError as exc:
        raise CommandError(_without_values(exc.message, texts[used:])) from None
    return inv


def _bind(cmd: Command, texts: list[str], quoted: list[bool], inv: Invocation) -> None:
    """Bind the words after the command's own to its parameters and options."""
    if not cmd.options:
        _bind_params(cmd, texts, inv)
        return
    positional: list[str] = []
    options: list[str] = []
    for text, was_quoted in zip(texts, quoted):
        if _is_option(cmd, text, was_quoted):
            options.append(text)
        elif options:
            raise CommandError(f"Unexpected argument '{clip(text)}' after options. Usage: {cmd.usage}")
        else:
            positional.append(text)
    _bind_params(cmd, positional, inv)
    _bind_options(cmd, options, inv)
    if "password" in inv.options:       # `password=` is the positional password, named
        if inv.args.get("password") is not None:
            raise CommandError("Password given twice")
        inv.args["password"] = inv.options.pop("password")


def _without_values(message: str, words: list[str]) -> str:
    """`message` with each quoted word of the line replaced by its position."""
    for n, word in enumerate(words, 1):
        key = word.split("=", 1)[0].lower()
        for shown in dict.fromkeys((clip(word), clip(word, 40), clip(key, 40), key)):
            message = message.replace(f"Unexpected argument '{shown}' after options", f"Argument {n} comes after the options")
            message = message.replace(f"Unexpected argument '{shown}'",
                                      f"Too many arguments (from argument {n}: quote a password that holds blanks)")
            message = message.replace(f" '{shown}'", f" at argument {n}")
    if any(f"'{clip(word)}'" in message for word in words):     # worded some other way: say less
        return "Invalid arguments (a password with blanks must be quoted)"
    return message


def parse_program(program: str) -> list[tuple[int, str, Invocation | CommandError]]:
    """Each line of a program that is neither blank nor a comment: its number, its text, and
    what parse() made of it (or the error, for the line to report when its turn comes)."""
    planned: list[tuple[int, str, Invocation | CommandError]] = []
    for n, text in enumerate(program.split("\n"), 1):
        if not is_comment(text):
            try:
                planned.append((n, text, parse(text.strip())))
            except CommandError as exc:
                planned.append((n, text, exc))
    return planned


def _bind_params(cmd: Command, values: list[str], inv: Invocation) -> None:
    fixed = _FIXED_ARITY.get(cmd.words)
    if fixed is not None:       # the fast path of _choose: every parameter is required
        if len(values) != len(fixed):
            _arity_error(cmd, values)
        args = inv.args
        for (name, convert), value in zip(fixed, values):
            args[name] = convert(value)
        return
    params = cmd.params
    if params and params[-1].rest:
        inv.args[params[-1].name] = " ".join(values) if values else None
        return
    if not _REQUIRED[cmd.words] <= len(values) <= len(params):
        _arity_error(cmd, values)
    for p, value in zip(_choose(cmd, values), values):
        inv.args[p.name] = p.kind.convert(value)
    for p in params:
        inv.args.setdefault(p.name, None)


def _arity_error(cmd: Command, values: list[str]) -> None:
    if len(values) > len(cmd.params):
        raise CommandError(f"Unexpected argument '{clip(values[len(cmd.params)])}'. Usage: {cmd.usage}")
    raise CommandError(f"Usage: {cmd.usage}")


def _bind_options(cmd: Command, options: list[str], inv: Invocation) -> None:
    if not options:
        return
    known = {o.name: o for o in cmd.options}
    for text in options:
        key, value = text.split("=", 1)
        key = key.lower()
        opt = known.get(key)
        if opt is None:
            raise CommandError(f"Unknown option '{clip(key, 40)}'. Usage: {cmd.usage}")
        if key in inv.options:
            raise CommandError(f"Option '{key}' given twice")
        if value == "":
            raise CommandError(f"Option '{key}' needs a value. Usage: {cmd.usage}")
        inv.options[key] = opt.kind.convert(value)


# --- analyze: every token's role --------------------------------------------------------------

def analyze(line: str, *, partial: bool = False) -> Analysis:
    """Every token of `line` with its role, by the rules parse() applies; values are not
    converted. With partial=True (a line being typed) an unclosed quote ends the last word
    instead of raising CommandError."""
    tokens = tokenize(line, partial=partial)
    texts = [t.text for t in tokens]
    cmd, used = match_line(texts)
    group = texts[0][1:].lower() if texts and texts[0].startswith(".") else None
    if cmd is None:
        first = Role.GROUP if group in GROUPS else Role.UNKNOWN
        parts = [Part(first if i == 0 else Role.UNKNOWN, t.start, t.end, t.text) for i, t in enumerate(tokens)]
        return Analysis(tokens, None, group, parts, 0, frozenset())
    parts = [Part(Role.COMMAND if i == 0 else Role.SUBCOMMAND, t.start, t.end, t.text)
             for i, t in enumerate(tokens[:used])]
    values: list[Token] = []
    options: list[Token] = []
    for tok in tokens[used:]:
        if cmd.options and _is_option(cmd, tok.text, tok.quoted):
            options.append(tok)
            parts += _option_parts(cmd, tok)
        elif options:
            parts.append(Part(Role.EXTRA, tok.start, tok.end, tok.text))
        else:
            values.append(tok)
    parts += _value_parts(cmd, values)
    parts.sort(key=lambda p: p.start)
    given = frozenset(t.text.split("=", 1)[0].lower() for t in options)
    return Analysis(tokens, cmd, group, parts, len(values), given)


def _value_parts(cmd: Command, values: list[Token]) -> list[Part]:
    params = cmd.params
    if params and params[-1].rest:
        return [_argument(t, params[-1]) for t in values]
    texts = [t.text for t in values]
    chosen = _choose(cmd, texts)
    secret = next((i for i, p in enumerate(params) if p.kind.secret), None)
    if secret is not None and not _binds(chosen, texts):
        # Unparseable as a whole (an unquoted password with blanks, say): every word from the
        # secret's position on may be part of the secret.
        return [_argument(t, params[min(i, secret)]) for i, t in enumerate(values)]
    parts = [_argument(t, p) for p, t in zip(chosen, values)]
    return parts + [Part(Role.EXTRA, t.start, t.end, t.text) for t in values[len(chosen):]]


def _binds(chosen: list[Param], values: list[str]) -> bool:
    """Whether parse() would accept these values: one for each parameter chosen, each of its kind."""
    if len(chosen) != len(values):
        return False
    try:
        for p, value in zip(chosen, values):
            p.kind.convert(value)
    except CommandError:
        return False
    return True


def _argument(tok: Token, param: Param) -> Part:
    return Part(Role.ARGUMENT, tok.start, tok.end, tok.text, param.kind, param.name)


def _option_parts(cmd: Command, tok: Token) -> list[Part]:
    key, _, value = tok.text.partition("=")
    opt = next((o for o in cmd.options if o.name == key.lower()), None)
    split = tok.start + len(key)
    name = opt.name if opt else None
    return [Part(Role.OPTION_KEY, tok.start, split, key, None, name),
            Part(Role.OPTION_VALUE, split + 1, tok.end, value, opt.kind if opt else None, name)]


def secret_spans(line: str) -> list[tuple[int, int]]:
    """Offsets of the secret arguments in a (possibly half-typed) line, for masking."""
    return analyze(line, partial=True).secret_spans


def redact(line: str, mask: str = MASK, *, analysis: Analysis | None = None) -> str:
    """The line with every secret argument replaced by `mask` (what the history file keeps);
    `analysis` is analyze(line, partial=True) when the caller has it already."""
    spans = (analysis or analyze(line, partial=True)).secret_spans
    for start, end in reversed(spans):
        line = line[:start] + mask + line[end:]
    return line
