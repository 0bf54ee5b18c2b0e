"""Shell-side commands: `.config list|get|set|unset` read and write the config file in use; every
other line goes to the backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.config_edit import (
    read_text,
    set_value,
    settings,
    unset_value,
    write_private,
)
from backend.errors import CommandError, ConfigError
from backend.language.parser import Invocation, parse
from backend.result import Result


def run_config(inv: Invocation, path: Path) -> Result:
    action = inv.command.words[1]
    try:
        text = read_text(path)
        if action == "list":
            return Result(["key", "value"], [list(pair) for pair in settings(text, path)])
        key = str(inv.args["key"])
        if action == "get":
            for name, value in settings(text, path):
                if name == key:
                    return Result(["key", "value"], [[name, value]])
            raise ConfigError(f"'{key}' is not set in {path}")
        if action == "set":
            write_private(path, set_value(text, key, str(inv.args["value"]), path))
            return Result.message(f"Set {key} in {path}.")
        write_private(path, unset_value(text, key, path))
        return Result.message(f"Removed {key} from {path}.")
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


class ShellSide:
    """The backend as the shell uses it: `.config` runs here, on the config file, and never
    reaches a server; everything else is the backend's."""

    def __init__(self, backend: Any, config_file: Path):
        self._backend = backend
        self.config_file = config_file

    def execute(self, line: str) -> Result:
        if line.lstrip()[:7].lower() == ".config":
            inv = parse(line.strip())
            if inv.command.words[0] == "config":
                return run_config(inv, self.config_file)
        return self._backend.execute(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)
