"""What every command returns: a table of strings."""

from __future__ import annotations


class Result:
    __slots__ = ("columns", "rows", "switched_kg")

    def __init__(self, columns: list[str], rows: list[list[str]] | None = None, switched_kg: str | None = None):
        self.columns = columns
        self.rows = rows if rows is not None else []
        self.switched_kg = switched_kg   # set when the command changed the session's KG

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and (self.columns, self.rows, self.switched_kg) == \
            (other.columns, other.rows, other.switched_kg)

    def __repr__(self) -> str:
        return f"Result(columns={self.columns!r}, rows={self.rows!r}, switched_kg={self.switched_kg!r})"

    @classmethod
    def message(cls, *lines: str, switched_kg: str | None = None) -> Result:
        return cls(["message"], [[line] for line in lines], switched_kg)

    @property
    def is_message(self) -> bool:
        return self.columns == ["message"]
