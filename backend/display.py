"""How values are shown to people: shared by the engine's results and the shell."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ts: float | None) -> str:
    """ISO 8601 UTC to the second, or empty for a missing time."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
