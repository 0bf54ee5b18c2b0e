"""The clock every time-dependent rule reads; tests hand in a fake one."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]   # seconds since the epoch


def system_clock() -> float:
    return time.time()
