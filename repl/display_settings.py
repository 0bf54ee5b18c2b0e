"""The shell-side commands (`.format`, `.expanded`, `.timing`, `.pager`): display settings of
one interactive session. They are declared in the registry like every command; the shell, not the
backend, runs them."""

from __future__ import annotations

from dataclasses import dataclass

from backend.language.parser import Invocation


@dataclass
class Settings:
    fmt: str = "table"
    expanded: str = "auto"        # on | off | auto (psql's \x)
    timing: bool = False
    pager: bool = True

    def apply(self, inv: Invocation) -> str:
        """Change the setting `inv` names; the line that says what it is now."""
        name = inv.command.words[0]
        value = str(inv.args[inv.command.params[0].name])
        if name == "format":
            self.fmt = value
            return f"Output format is {value}."
        if name == "expanded":
            self.expanded = value
            return f"Expanded display is {value}."
        if name == "timing":
            self.timing = value == "on"
            return f"Timing is {value}."
        if name == "pager":
            self.pager = value == "on"
            return f"Pager is {value}." + (" It runs $PAGER (default: less -R -X)." if self.pager else "")
        raise LookupError(f"not a setting: {name}")


SETTINGS = frozenset({"format", "expanded", "timing", "pager"})


def is_setting(inv: Invocation) -> bool:
    return inv.command.shell_only and inv.command.words[0] in SETTINGS
