"""W3: `.user create` with the real argon2 defaults, against the hashing limit
cores / median(argon2 hash time), measured in the same run."""

from __future__ import annotations

import os
import time

from .common import ADMIN_PASSWORD, Outcome, Scratch, argon2_text, child_env, inputlayer, median, run
from .peers import Peers


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def hash_time(samples: int) -> list[float]:
    """argon2-cffi's PasswordHasher().hash with the product's default parameters, timed directly."""
    from argon2 import PasswordHasher, Type
    from backend.config import SecurityConfig

    d = SecurityConfig()
    hasher = PasswordHasher(time_cost=d.argon2_time_cost, memory_cost=d.argon2_memory_kib,
                            parallelism=d.argon2_parallelism, hash_len=32, salt_len=16, type=Type.ID)
    hasher.hash("warm-up password")
    times = []
    for i in range(samples):
        start = time.perf_counter()
        hasher.hash(f"bench-password-{i}")
        times.append(time.perf_counter() - start)
    return times


def run_w3(scratch: Scratch, peers: Peers, quick: bool) -> Outcome:
    users, reps = (20, 1) if quick else (200, 3)
    out = Outcome("W3", f"{users} x .user create", argon2_text(cheap=False))
    config = scratch.config(cheap=False)
    script = "".join(f".user create user{i} bench-password-{i} viewer\n" for i in range(1, users + 1))
    rates = []
    hashes: list[float] = []
    for _ in range(reps):
        hashes += hash_time(5 if quick else 10)
        work = scratch.new("w3")
        (work / "users.il").write_text(script)
        env = child_env(INPUTLAYER_CONFIG=str(config), INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, HOME=str(work))
        base = [*inputlayer(), "--data-dir", str(work / "d")]
        run([*base, "-c", ".whoami"], env=env)            # bootstrap outside the timed run
        t, _ = run([*base, "-f", str(work / "users.il")], env=env, timeout=1800)
        rates.append(users / t)
    hashes += hash_time(5 if quick else 10)
    h = median(hashes)
    n = cores()
    limit = n / h
    rate = median(rates)
    out.add("users_per_s", ".user create, users/s (durable, default)", rate, "/s", f"{rate / limit:.0%} of the limit",
            runs=rates)
    out.add("argon2_hash_ms", "median argon2 hash time (argon2-cffi, direct)", h * 1000, "ms", runs=hashes)
    out.add("cores", "cores", n, "")
    out.add("hash_limit_per_s", "hashing limit = cores / median hash time", limit, "/s")
    out.add("serial_limit_per_s", "one core's limit = 1 / median hash time", 1 / h, "/s",
            f"users/s = {rate * h:.2f}x one core")
    out.target("W3.users", "users/s >= 75% of the argon2 hashing limit", f"{rate:.1f}/s = {rate / limit:.0%}",
               rate >= 0.75 * limit)
    out.notes.append("hash timings are interleaved with the runs (before each and after the last)")
    return out
