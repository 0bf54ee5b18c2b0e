"""What every command returns: a table of strings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Result:
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    switched_kg: str | None = None   # set when the command changed the session's KG

    @classmethod
    def message(cls, *lines: str, switched_kg: str | None = None) -> "Result":
        return cls(["message"], [[line] for line in lines], switched_kg)

    @property
    def is_message(self) -> bool:
        return self.columns == ["message"]

    def to_json(self) -> dict:
        return {"columns": self.columns, "rows": self.rows}
