"""Change one setting of the TOML config file with tomlkit, keeping the user's comments, order and
layout byte for byte outside the changed value; checked against the schema the reader uses, so a
bad key or value leaves the file untouched; written 0600; never holding a secret."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from .config import PROFILE_SCHEMA, SCHEMA, holds_secret, parse_config
from .errors import ConfigError


def validator(key: str) -> Callable[[Any], Any]:
    """The schema's check for a dotted key (`shell.format`, `profiles.prod.url`); refuses
    unknown keys and keys that hold secrets."""
    if holds_secret(key):
        raise ConfigError(f"secrets do not belong in the config file: '{key}' cannot be set here "
                          "(use an environment variable: see docs/configuration.md)")
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "profiles" and parts[2] in PROFILE_SCHEMA:
        return PROFILE_SCHEMA[parts[2]]
    if key in SCHEMA:
        return SCHEMA[key]
    raise ConfigError(f"unknown key '{key}'")


def typed(key: str, text: str) -> Any:
    """The value `text` stands for: as TOML (8080, true, ["10.0.0.0/8"]) if the schema takes
    that, else as a plain string (json, ~/history)."""
    check = validator(key)
    candidates: list[Any] = []
    try:
        candidates.append(tomlkit.parse(f"v = {text}\n")["v"].unwrap())
    except (TOMLKitError, ValueError):
        pass
    candidates.append(text)
    problem = None
    for value in candidates:
        try:
            check(value)
            return value
        except ValueError as exc:
            problem = problem or str(exc)
    raise ConfigError(f"bad value for '{key}': {problem}")


def _document(text: str, path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _parent(doc: tomlkit.TOMLDocument, parts: list[str], create: bool) -> Any:
    node: Any = doc
    for depth, part in enumerate(parts):
        if part not in node:
            if not create:
                return None
            node[part] = tomlkit.table(is_super_table=depth < len(parts) - 1)
        node = node[part]
    return node


def set_value(text: str, key: str, value_text: str, path: Path) -> str:
    """The file's text with `key` set to the value `value_text` stands for."""
    value = typed(key, value_text)
    doc = _document(text, path)
    *parents, name = key.split(".")
    _parent(doc, parents, create=True)[name] = value
    return _checked(tomlkit.dumps(doc), path)


def unset_value(text: str, key: str, path: Path) -> str:
    validator(key)
    doc = _document(text, path)
    *parents, name = key.split(".")
    table = _parent(doc, parents, create=False)
    if table is None or name not in table:
        raise ConfigError(f"'{key}' is not set in {path}")
    del table[name]
    return _checked(tomlkit.dumps(doc), path)


def _checked(text: str, path: Path) -> str:
    parse_config(text, str(path))       # the reader's own rules: what it refuses is never written
    return text


def settings(text: str, path: Path) -> list[tuple[str, str]]:
    """(dotted key, value as TOML) for every setting in the file; secrets shown masked."""
    out: list[tuple[str, str]] = []

    def walk(table: Any, prefix: str) -> None:
        for key, item in table.items():
            dotted = prefix + key
            if isinstance(item, dict):
                walk(item, dotted + ".")
            else:
                out.append((dotted, "********" if holds_secret(key) else shown(item)))
    walk(_document(text, path), "")
    return out


def shown(item: Any) -> str:
    value = item.unwrap() if hasattr(item, "unwrap") else item
    return value if isinstance(value, str) else tomlkit.item(value).as_string()


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {getattr(exc, 'strerror', None) or exc}") from None


def write_private(path: Path, text: str) -> None:
    """Replace the file at once (never half written), readable by its owner only."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)    # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial, path)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write config file {path}: {exc.strerror or exc}") from None
