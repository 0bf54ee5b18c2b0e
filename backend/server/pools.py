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


def _below_sessions() -> None:
    """Run this thread's work (argon2 for password logins, ~20 ms of CPU each) in Linux's idle
    scheduling class: the event loop, waking, takes the core from it at once, so a storm of logins
    slows logins, not the sessions already in (W5: the sessions' p99 under a storm went from about
    2.2x calm at nice +10 and 1.7-2.2x at +19 to 1.3-1.7x). It is not starved: the idle class
    still gets a small share of a busy core. Only Linux sets this per thread; elsewhere it would
    reach the whole process."""
    if sys.platform.startswith("linux"):
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass


def auth_pool(workers: int) -> ThreadPoolExecutor:
    """Logins: bounded, so a storm of wrong passwords queues there and never stalls the commands
    of clients already in, and below the sessions in CPU priority."""
    return ThreadPoolExecutor(workers, thread_name_prefix="il-auth", initializer=_below_sessions)


def run_in(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future:
    """Call `fn` in `pool` from the event loop; await the result."""
    return asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args, **kwargs))
