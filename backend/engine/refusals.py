"""Refusals of a locked address (or a slowed account name), counted in memory and audited once
per lockout window with their count (security.md, Lockout): a flood of refused attempts must not
become a flood of fsynced audit records that fills the disk."""

from __future__ import annotations

import threading
from typing import NamedTuple

from .clock import Clock


class Summary(NamedTuple):
    """One audit record's worth: what was refused, from where, how often, in one window."""
    subject: str          # "address" or "account"
    source: str           # audit source of the first refusal (`ws:2001:db8::/64`)
    action: str           # `auth.login`, `auth.api_key`, ...
    target: str           # the account name for an account; "" for an address
    refused: int
    until: float          # when the lock that caused the refusals ends

    def detail(self) -> str:
        what = "address" if self.subject == "address" else "user name"
        attempts = "1 attempt" if self.refused == 1 else f"{self.refused} attempts"
        return f"{attempts} refused while the {what} was locked"


class RefusalCounter:
    """Counts refusals per locked key (an address key or an account name) and its lock window.
    `due()` hands out the windows that have ended, each once; `due(everything=True)` also the
    open ones (at shutdown). Thread-safe: logins run in a thread pool."""

    def __init__(self, clock: Clock):
        self._clock = clock
        self._open: dict[tuple[str, str], Summary] = {}
        self._ended: list[Summary] = []          # windows a newer lock of the same key replaced
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._open or self._ended)

    def count(self, subject: str, key: str, until: float, source: str, action: str, target: str) -> None:
        with self._lock:
            current = self._open.get((subject, key))
            if current is not None and current.until >= until - 1:     # the same lock window
                self._open[(subject, key)] = current._replace(refused=current.refused + 1)
                return
            if current is not None:                                    # a new window: the old one is done
                self._ended.append(current)
            self._open[(subject, key)] = Summary(subject, source, action, target, 1, until)

    def due(self, *, everything: bool = False) -> list[Summary]:
        now = self._clock()
        with self._lock:
            out, self._ended = self._ended, []
            for key, summary in list(self._open.items()):
                if everything or summary.until <= now:
                    out.append(summary)
                    del self._open[key]
            return out
