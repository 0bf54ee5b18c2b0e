"""W6: stores of 1k, 10k and 100k users (cheap argon2), 10 ACL entries and one API key per user.
Built in one batch through the store's API; measured in a fresh child process per size."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from .common import PY, ADMIN_PASSWORD, Outcome, Scratch, argon2_text, cheap_config, child_env, run
from .peers import Peers

N_KGS = 100
ACL_PER_USER = 10


def build(data_dir: Path, users: int) -> tuple[float, Path]:
    """A store of `users` users in one transaction; the key secrets go to keys.txt beside it."""
    from backend.engine import Engine
    from backend.engine.keys import key_digest, new_api_key
    from backend.engine.passwords import PasswordHasher
    from backend.store import SQLiteStore

    start = time.perf_counter()
    config = cheap_config()
    store = SQLiteStore(data_dir)
    engine = Engine(store, config)
    engine.bootstrap(ADMIN_PASSWORD)
    hasher = PasswordHasher(config.security)
    rng = random.Random(users)
    now = time.time()
    secrets = []
    store.begin_batch()
    try:
        for k in range(1, N_KGS + 1):
            store.add_kg(f"kg{k}", "admin", now)
        for i in range(1, users + 1):
            name = f"user{i}"
            store.add_user(name, "viewer", hasher.hash(f"bench-password-{i}"), now)
            for k in rng.sample(range(1, N_KGS + 1), ACL_PER_USER):
                store.grant(f"kg{k}", name, ("viewer", "editor")[k % 2], "admin", now)
            secret = new_api_key()
            store.add_key(f"key{i}", name, "viewer", (), key_digest(store.secret, secret), now, None)
            secrets.append(secret)
        store.end_batch(True)
    except BaseException:
        store.end_batch(False)
        raise
    finally:
        store.close()
    keys = data_dir.parent / "keys.txt"
    keys.write_text("\n".join(secrets) + "\n")
    return time.perf_counter() - start, keys


def run_w6(scratch: Scratch, peers: Peers, quick: bool) -> Outcome:
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    out = Outcome("W6", f"scale: {ACL_PER_USER} ACL entries and 1 API key per user, {N_KGS} KGs",
                  argon2_text(cheap=True))
    samples = 200 if quick else 1000
    series = {}
    for users in sizes:
        work = scratch.new(f"w6-{users}")
        build_s, keys = build(work / "d", users)
        _, proc = run([PY, "-m", "bench.w6_child", str(work / "d"), str(keys), str(samples)],
                      env=child_env(HOME=str(work)), timeout=1800)
        m = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        m["build_s"] = build_s
        m["store_mb"] = sum(p.stat().st_size for p in (work / "d").iterdir()) / 1e6
        series[users] = m
        label = f"{users // 1000}k"
        out.add(f"u{label}_open_ms", f"{label} users: open (Store + Engine)", m["open_ms"], "ms")
        out.add(f"u{label}_acl_check_us", f"{label} users: .kg acl check (median)", m["acl_check_us"], "us",
                f"p99 {m['acl_check_p99_us']:,.0f} us")
        out.add(f"u{label}_apikey_auth_us", f"{label} users: API-key authentication (median)",
                m["apikey_auth_us"], "us", f"p99 {m['apikey_auth_p99_us']:,.0f} us")
        out.add(f"u{label}_user_list_ms", f"{label} users: .user list", m["user_list_ms"], "ms")
        out.add(f"u{label}_rss_mb", f"{label} users: resident memory (peak, VmHWM)", m["rss_mb"], "MB")
        out.add(f"u{label}_build_s", f"{label} users: build (one batch, not a target)", build_s, "s",
                f"store {m['store_mb']:.0f} MB")
    out.data["series"] = {str(k): v for k, v in series.items()}
    small, large = series[sizes[0]], series[sizes[-1]]
    big = f"{sizes[-1] // 1000}k"
    acl_ratio = large["acl_check_us"] / small["acl_check_us"]
    key_ratio = large["apikey_auth_us"] / small["apikey_auth_us"]
    full = sizes[-1] == 100_000
    out.target("W6.flat", f"per-operation latency at {big} <= 1.5x at 1k",
               f"acl check {acl_ratio:.2f}x, API-key auth {key_ratio:.2f}x",
               (acl_ratio <= 1.5 and key_ratio <= 1.5) if full else None)
    out.target("W6.open", f"open <= 1 s at {big}", f"{large['open_ms']:.0f} ms",
               large["open_ms"] <= 1000 if full else None)
    out.target("W6.rss", f"RSS <= 300 MB at {big}", f"{large['rss_mb']:.0f} MB",
               large["rss_mb"] <= 300 if full else None)
    out.notes.append("latencies are in-process engine calls in a fresh child process (median of "
                     f"{samples}); API-key authentication includes its durable audit record (one commit); "
                     "RSS is the child's peak resident memory (VmHWM) after opening and running every operation")
    if quick:
        out.notes.append("--quick: the 100k store is skipped, so the W6 targets are not judged")
    return out
