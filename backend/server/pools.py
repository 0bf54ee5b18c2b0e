"""The thread pools the event loop hands blocking work to (SQLite, argon2): the loop only moves
messages."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

AUTH_NICENESS = 10       # W5, a storm's p99 on the sessions: ~20 ms at +0, ~17 ms at +10


def _below_sessions() -> None:
    """Run this thread's work (argon2 for password logins, ~20 ms of CPU each) at a lower CPU
    priority than the event loop, so a storm of logins slows logins, not the sessions already
    in. Only Linux sets a nice value per thread; elsewhere it would reach the whole process."""
    if sys.platform.startswith("linux"):
        thread = threading.get_native_id()
        try:
            niceness = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness + AUTH_NICENESS))
        except OSError:
            pass


def auth_pool(workers: int) -> ThreadPoolExecutor:
    """Logins: bounded, so a storm of wrong passwords queues there and never stalls the commands
    of clients already in, and below the sessions in CPU priority."""
    return ThreadPoolExecutor(workers, thread_name_prefix="il-auth", initializer=_below_sessions)


def run_in(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future:
    """Call `fn` in `pool` from the event loop; await the result."""
    return asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args, **kwargs))
