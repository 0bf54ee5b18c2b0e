"""The state a policy describes: users, knowledge graphs with their ACLs, API keys."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_KGS = "*"          # an API key that is not limited to some KGs
NEVER = "never"        # an API key that does not expire
RATE_UNITS = {1: "s", 60: "m", 3600: "h", 86400: "d"}


@dataclass(frozen=True)
class ApiKey:
    owner: str
    role: str
    kgs: tuple[str, ...] | None      # sorted; None: every KG
    expires: str                     # ISO 8601 UTC to the second, or "never"
    ips: tuple[str, ...] = ()        # normalised CIDR ranges, in the order given
    rate: str = ""                   # "100/m", or "" for no limit

    @property
    def shown_kgs(self) -> str:
        return ALL_KGS if self.kgs is None else ",".join(self.kgs)


@dataclass
class State:
    users: dict[str, str] = field(default_factory=dict)               # name -> role
    kgs: dict[str, dict[str, str]] = field(default_factory=dict)      # kg -> {user: level}
    keys: dict[str, ApiKey] = field(default_factory=dict)             # label -> live key


def rate_text(requests: int, window: int) -> str:
    """The canonical form of a rate limit: (100, 60) is `100/m`."""
    return f"{requests}/{RATE_UNITS[window]}"
