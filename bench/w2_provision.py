"""W2: a generated provisioning script, durable per command and with -1, against psql (and
redis-cli, for information), the fsync floor (SQLite commits per second, WAL + synchronous=FULL,
on the same disk) and, for -1, the fsync-free floor (the same rows in one transaction)."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from .common import ADMIN_PASSWORD, Outcome, Scratch, argon2_text, child_env, inputlayer, median, run
from .peers import Peers

USERS, KGS, KEYS = 100, 100, 100


def make_scripts(grants: int, seed: int = 6) -> dict[str, list[tuple[int, int]] | str]:
    rng = random.Random(seed)
    pairs = [(rng.randint(1, USERS), rng.randint(1, KGS)) for _ in range(grants)]
    setup = [f".user create u{i} bench-password-{i} viewer" for i in range(1, USERS + 1)]
    setup += [f".kg create kg{i}" for i in range(1, KGS + 1)]
    grant_lines = [f".kg acl grant kg{k} u{u} {('viewer', 'editor')[(u + k) % 2]}" for u, k in pairs]
    keys = [f".apikey create key{i} user=u{i}" for i in range(1, KEYS + 1)]
    return {"pairs": pairs, "setup": "\n".join(setup) + "\n", "grants": "\n".join(grant_lines) + "\n",
            "keys": "\n".join(keys) + "\n"}


def fsync_floor(directory: Path, seconds: float = 2.0) -> float:
    """Commits per second of a one-row INSERT per transaction, WAL + synchronous=FULL."""
    path = directory / "floor.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    n = 0
    start = time.perf_counter()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (?)", (f"row {n}",))
        conn.execute("COMMIT")
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 50:
            break
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return n / elapsed


def fsync_free_floor(directory: Path, rows: int) -> float:
    """Rows per second of one-row INSERTs in a single transaction (WAL, synchronous=FULL, one
    commit): what a -1 run could reach if a grant cost no more than writing its row."""
    path = directory / "floor-1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    for n in range(rows):
        conn.execute("INSERT INTO t (v) VALUES (?)", (f"row {n}",))
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return rows / elapsed


def _ours(scratch: Scratch, scripts: dict, single: bool, config: Path, store: str | None = None,
          **env_extra: str) -> dict:
    """The script's parts through the shell, on a fresh data directory, or on `store` (a
    postgresql:// URL of an empty database)."""
    work = scratch.new("w2-1" if single else "w2-durable")
    for name in ("setup", "grants", "keys"):
        (work / f"{name}.il").write_text(scripts[name])
    (work / "empty.il").write_text("# nothing\n")
    env = child_env(INPUTLAYER_CONFIG=str(config), INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD, HOME=str(work),
                    **env_extra)
    where = ["--store", store] if store else ["--data-dir", str(work / "d")]
    base = [*inputlayer(), *where] + (["-1"] if single else [])
    times = {}
    for name in ("setup", "grants", "keys", "empty"):
        times[name], _ = run([*base, "-f", str(work / f"{name}.il")], env=env, timeout=1800)
    return times


def _psql(pg, scratch: Scratch, pairs, run_no: int, single: bool) -> float:
    db = f"bench{run_no}{'s' if single else 'a'}"
    work = scratch.new(f"w2-psql-{db}")
    setup = [f"CREATE SCHEMA kg{i};" for i in range(1, KGS + 1)]
    (work / "setup.sql").write_text("\n".join(setup) + "\n")
    (work / "grants.sql").write_text("".join(f"GRANT USAGE ON SCHEMA kg{k} TO u{u};\n" for u, k in pairs))
    if not getattr(pg, "bench_roles", False):
        (work / "roles.sql").write_text("".join(f"CREATE ROLE u{i};\n" for i in range(1, USERS + 1)))
        run(pg.psql("-1", "-f", str(work / "roles.sql")))
        pg.bench_roles = True
    run(pg.psql("-c", f"CREATE DATABASE {db}"))
    run(pg.psql("-1", "-f", str(work / "setup.sql"), db=db))
    t, _ = run(pg.psql(*(["-1"] if single else []), "-f", str(work / "grants.sql"), db=db), timeout=1800)
    run(pg.psql("-c", f"DROP DATABASE {db}"))
    return t


def _redis(rd, scratch: Scratch, pairs, run_no: int) -> float:
    work = scratch.new(f"w2-redis-{run_no}")
    lines = []
    for u, k in pairs:
        parts = ["ACL", "SETUSER", f"r{run_no}u{u}", f"~kg{k}:*"]
        lines.append(f"*{len(parts)}\r\n" + "".join(f"${len(p.encode())}\r\n{p}\r\n" for p in parts))
    path = work / "acl.resp"
    path.write_text("".join(lines))
    t, proc = run(rd.redis_cli("--pipe"), stdin=path.read_bytes())
    text = proc.stdout.decode(errors="replace")
    if "errors: 0," not in text:
        raise RuntimeError(f"redis-cli --pipe reported errors: {text[-300:]}")
    return t


def run_w2(scratch: Scratch, peers: Peers, quick: bool) -> Outcome:
    grants = 1000 if quick else 10_000
    reps_durable, reps_single, reps_peer = (1, 2, 2) if quick else (3, 5, 3)
    out = Outcome("W2", f"provisioning script: {USERS} users, {KGS} KGs, {grants:,} grants, {KEYS} API keys",
                  argon2_text(cheap=True))
    scripts = make_scripts(grants)
    config = scratch.config(cheap=True)

    durable = [_ours(scratch, scripts, False, config) for _ in range(reps_durable)]
    single = [_ours(scratch, scripts, True, config) for _ in range(reps_single)]
    floor = [fsync_floor(scratch.new("w2-floor"), 1.0 if quick else 2.0) for _ in range(3)]
    free = median(fsync_free_floor(scratch.new("w2-floor-1"), grants) for _ in range(3))

    def rate(results, part, count):
        return median(count / r[part] for r in results)

    def net_rate(results, part, count):
        return median(count / max(1e-6, r[part] - r["empty"]) for r in results)

    d_rate, s_rate, f_rate = rate(durable, "grants", grants), rate(single, "grants", grants), median(floor)
    out.add("durable_grants_per_s", "grants/s, durable per command (default)", d_rate, "/s",
            f"net of start-up {net_rate(durable, 'grants', grants):,.0f}/s",
            runs=[grants / r["grants"] for r in durable])
    out.add("single_grants_per_s", "grants/s, --single-transaction (-1)", s_rate, "/s",
            f"net of start-up {net_rate(single, 'grants', grants):,.0f}/s",
            runs=[grants / r["grants"] for r in single])
    out.add("fsync_floor_commits_per_s", "fsync floor: SQLite commits/s (WAL, synchronous=FULL)", f_rate, "/s",
            f"durable grants = {d_rate / f_rate:.2f}x floor", runs=floor)
    out.add("fsync_free_floor_rows_per_s", "fsync-free floor: SQLite rows/s in one transaction", free, "/s",
            f"-1 grants = {s_rate / free:.2f}x floor")
    out.add("durable_setup_s", "setup: 100 users + 100 KGs, durable", median(r["setup"] for r in durable), "s")
    out.add("durable_keys_per_s", "API keys/s, durable", rate(durable, "keys", KEYS), "/s")
    out.add("single_keys_per_s", "API keys/s, -1", rate(single, "keys", KEYS), "/s")
    out.add("startup_s", "start-up of the same run on an empty script", median(r["empty"] for r in durable), "s")

    psql_a = psql_s = redis = None
    pg = peers.postgres()
    if pg:
        psql_a = median(grants / _psql(pg, scratch, scripts["pairs"], i, False) for i in range(reps_peer))
        psql_s = median(grants / _psql(pg, scratch, scripts["pairs"], i, True) for i in range(reps_peer))
        out.add("psql_autocommit_grants_per_s", "psql -f GRANT USAGE ON SCHEMA (autocommit)", psql_a, "/s",
                f"ours durable = {d_rate / psql_a:.2f}x")
        out.add("psql_single_grants_per_s", "psql -1 -f GRANT USAGE ON SCHEMA", psql_s, "/s",
                f"ours -1 = {s_rate / psql_s:.2f}x")
    else:
        for key, label in (("psql_autocommit_grants_per_s", "psql -f GRANT (autocommit)"),
                           ("psql_single_grants_per_s", "psql -1 -f GRANT")):
            out.add(key, label, None, "/s", peers.why_missing("postgres"))
    rd = peers.redis()
    if rd:
        redis = median(grants / _redis(rd, scratch, scripts["pairs"], i) for i in range(reps_peer))
        out.add("redis_grants_per_s", "redis-cli --pipe ACL SETUSER uM ~kgN:*", redis, "/s",
                f"ours -1 = {s_rate / redis:.2f}x")
    else:
        out.add("redis_grants_per_s", "redis-cli ACL SETUSER", None, "/s", peers.why_missing("redis"))

    ok = d_rate > f_rate and (psql_a is not None and d_rate >= 2 * psql_a)
    out.target("W2.durable", "durable grants >= 2x psql autocommit, and above the fsync floor",
               f"{d_rate:,.0f}/s = {d_rate / psql_a:.2f}x psql, {d_rate / f_rate:.2f}x floor" if psql_a
               else f"{d_rate:,.0f}/s, {d_rate / f_rate:.2f}x floor (psql skipped)",
               ok if psql_a is not None else (False if d_rate <= f_rate else None))
    out.target("W2.single", "-1 grants >= 2.5x psql -1 (and shown against the fsync-free floor)",
               f"{s_rate:,.0f}/s" + (f" = {s_rate / psql_s:.2f}x psql -1" if psql_s else " (psql skipped)")
               + f", {s_rate / free:.2f}x fsync-free floor",
               s_rate >= 2.5 * psql_s if psql_s else None)
    out.notes.append("grants/s = grants / wall time of the process that runs them (start-up included, as "
                     "for psql -f); 'net of start-up' subtracts the same run on an empty script")
    if quick:
        out.notes.append(f"--quick: {grants:,} grants instead of 10,000")
    return out
