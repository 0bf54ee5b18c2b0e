"""`password=@FILE` and `password=-`: the shell reads the password and sends the command with
the password itself in its place, so a remote server works the same and never gets the path
(vault's `@file` convention). The line the user typed, with its reference, is what history keeps.
"""

from __future__ import annotations

from collections.abc import Callable

from backend.errors import CommandError
from backend.language.kinds import ROLE, ROLES, is_secret_reference
from backend.language.lexer import quote_word
from backend.language.parser import Role, analyze

MAX_FILE_BYTES = 64 * 1024     # a password file, not a disk image read by mistake


def resolve_password_source(line: str, read_line: Callable[[], str | None]) -> str:
    """`line` with its `password=@FILE` or `password=-` replaced by the password read from the
    file or from `read_line()`; any other line unchanged. Raises CommandError."""
    if "password=" not in line.lower():
        return line
    try:
        analysis = analyze(line)
    except CommandError:
        return line                           # the backend words the error
    parts = analysis.parts
    value = next((p for p in parts if p.role is Role.OPTION_VALUE and p.name == "password"), None)
    cmd = analysis.command
    if cmd is None or value is None or not is_secret_reference(value.text):
        return line
    secret = _read_line(read_line) if value.text == "-" else _read_file(value.text[1:])
    key = next(p for p in parts if p.role is Role.OPTION_KEY and p.end + 1 == value.start)
    line = line[:key.start].rstrip() + line[value.end:]
    # The password goes where its parameter is: after the arguments bound before it.
    param = next(p for p in cmd.params if p.kind.secret)
    index = cmd.params.index(param)
    before = {p.name for p in cmd.params[:index]}
    at = max(p.end for p in parts if p.role in (Role.COMMAND, Role.SUBCOMMAND)
             or p.role is Role.ARGUMENT and p.name in before)
    word = quote_word(secret)
    later = cmd.params[index + 1:]
    if later and later[0].kind is ROLE and secret.lower() in ROLES and \
            not any(p.role is Role.ARGUMENT and p.name == later[0].name for p in parts):
        word += " " + later[0].default     # else a lone password `editor` would bind as the role
    return line[:at] + " " + word + line[at:]


def _read_file(path: str) -> str:
    if not path:
        raise CommandError("password=@FILE needs a file name")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CommandError(f"cannot read the password file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise CommandError(f"the password file {path} is too large")
    text = data.decode("utf-8", errors="replace")
    secret = text[:-1] if text.endswith("\n") else text
    secret = secret[:-1] if secret.endswith("\r") else secret
    if not secret:
        raise CommandError(f"the password file {path} is empty")
    return secret


def _read_line(read_line: Callable[[], str | None]) -> str:
    secret = read_line()
    if not secret:
        raise CommandError("password=- found no password on the next line of stdin")
    return secret
