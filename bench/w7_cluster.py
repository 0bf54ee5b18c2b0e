"""W7: two `inputlayer-server` nodes on one PostgreSQL store, sharing a Redis (scaleout.md).

Throw-away PostgreSQL and Redis on 127.0.0.1 (peers.py), the server secrets in a file named by
INPUTLAYER_SERVER_SECRET_FILE. Four parts, each a ratio or a count measured in this run:
W2's grants through the shell on PostgreSQL against `psql -f` into the same server; W4 at C=50
spread over both nodes against one SQLite node; how long a key revoked through node A takes to
close its session on node B; and the lockout counted across both nodes.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import time

from . import w2_provision as w2
from . import w4_remote as w4
from .common import (
    Outcome,
    Scratch,
    argon2_text,
    cheap_config,
    child_env,
    inputlayer_server,
    median,
    percentile,
    prepare_store,
    run,
)
from .peers import Peers

REVOCATIONS = 50
LOCK_ADDRESSES = 20
LOCK_AT = 21                    # security.md: 20 failures allowed, the 21st refused


class Cluster:
    """A PostgreSQL database and the environment every program on it shares."""

    def __init__(self, pg, rd, scratch: Scratch):
        self.pg, self.rd, self.scratch = pg, rd, scratch
        self.secret_file = scratch.root / "server-secret"
        if not self.secret_file.exists():
            self.secret_file.write_bytes(os.urandom(64))
            self.secret_file.chmod(0o600)
        self.redis_url = f"redis://127.0.0.1:{rd.port}/0"

    def database(self, name: str) -> str:
        """A fresh, empty database's URL (dropped first if an earlier run left it)."""
        run(self.pg.psql("-c", f"DROP DATABASE IF EXISTS {name}"))
        run(self.pg.psql("-c", f"CREATE DATABASE {name}"))
        return f"postgresql://postgres@127.0.0.1:{self.pg.port}/{name}"

    def drop(self, name: str) -> None:
        run(self.pg.psql("-c", f"DROP DATABASE IF EXISTS {name}"), check=False)

    def env(self, **extra: str) -> dict[str, str]:
        return {"INPUTLAYER_SERVER_SECRET_FILE": str(self.secret_file), **extra}

    def node(self, url: str, name: str) -> w4.Process:
        work = self.scratch.new(f"w7-{name}")
        env = child_env(INPUTLAYER_CONFIG=str(self.scratch.config(cheap=True)), HOME=str(work),
                        **self.env())
        return w4.Process([*inputlayer_server(), "--port", "0", "--host", "127.0.0.1", "--store", url,
                           "--redis", self.redis_url], work / "server.log", env)


# --- W2 on PostgreSQL ---------------------------------------------------------------------------

def grants_part(out: Outcome, cluster: Cluster, quick: bool) -> None:
    grants = 1000 if quick else 10_000
    reps_durable, reps_single, reps_peer = (1, 1, 1) if quick else (3, 3, 3)
    scripts = w2.make_scripts(grants)
    config = cluster.scratch.config(cheap=True)

    def ours(single: bool, i: int) -> float:
        name = f"w7_w2_{'s' if single else 'd'}{i}"
        url = cluster.database(name)
        try:
            times = w2._ours(cluster.scratch, scripts, single, config, url, **cluster.env())
        finally:
            cluster.drop(name)
        return grants / times["grants"]

    durable = [ours(False, i) for i in range(reps_durable)]
    single = [ours(True, i) for i in range(reps_single)]
    psql_a = [grants / w2._psql(cluster.pg, cluster.scratch, scripts["pairs"], 700 + i, False)
              for i in range(reps_peer)]
    psql_s = [grants / w2._psql(cluster.pg, cluster.scratch, scripts["pairs"], 700 + i, True)
              for i in range(reps_peer)]
    d, s, pa, ps = median(durable), median(single), median(psql_a), median(psql_s)
    out.add("pg_durable_grants_per_s", "grants/s through the shell on PostgreSQL, durable", d, "/s",
            f"{d / pa:.2f}x psql autocommit", runs=durable)
    out.add("pg_single_grants_per_s", "grants/s through the shell on PostgreSQL, -1", s, "/s",
            f"{s / ps:.2f}x psql -1", runs=single)
    out.add("psql_autocommit_grants_per_s", "psql -f GRANT USAGE ON SCHEMA (autocommit)", pa, "/s", runs=psql_a)
    out.add("psql_single_grants_per_s", "psql -1 -f GRANT USAGE ON SCHEMA", ps, "/s", runs=psql_s)
    out.target("W7.durable", "PostgreSQL durable grants >= 2x psql autocommit",
               f"{d:,.0f}/s = {d / pa:.2f}x ({pa:,.0f}/s)", d >= 2 * pa)
    out.target("W7.single", "PostgreSQL -1 grants >= 1.5x psql -1", f"{s:,.0f}/s = {s / ps:.2f}x ({ps:,.0f}/s)",
               s >= 1.5 * ps)
    if quick:
        out.notes.append(f"--quick: {grants:,} grants instead of 10,000")


# --- W4 over two nodes --------------------------------------------------------------------------

def remote_part(out: Outcome, cluster: Cluster, urls: list[str], keys: list[str], quick: bool) -> None:
    clients, reps = 50, (1 if quick else 3)
    rounds = w4.rounds_for(clients, quick)
    sqlite_node, sqlite_keys = w4.start_server(cluster.scratch, cheap=True, keys=clients)
    pair, single = [], []
    try:
        for _ in range(reps):            # interleaved, so drift hits both alike
            single.append(asyncio.run(w4.load(sqlite_node.url, sqlite_keys, clients, rounds, True)))
            pair.append(asyncio.run(w4.load(urls, keys, clients, rounds, True)))
    finally:
        sqlite_node.stop()
    p_cmd, s_cmd = median(r["commands_per_s"] for r in pair), median(r["commands_per_s"] for r in single)
    errors = sum(r["errors"] for r in pair + single)
    out.add("c50_pair_commands_per_s", "C=50 over two PostgreSQL nodes: commands/s", p_cmd, "/s",
            f"{p_cmd / s_cmd:.0%} of one SQLite node", runs=[r["commands_per_s"] for r in pair])
    out.add("c50_sqlite_commands_per_s", "C=50 on one SQLite node: commands/s", s_cmd, "/s",
            runs=[r["commands_per_s"] for r in single])
    out.add("c50_pair_p99_ms", "C=50 over two PostgreSQL nodes: p99 latency",
            median(r["p99_ms"] for r in pair), "ms", f"one SQLite node {median(r['p99_ms'] for r in single):.1f} ms")
    out.add("c50_pair_auth_p99_ms", "C=50 over two PostgreSQL nodes: connect+authenticate p99",
            median(r["auth_p99_ms"] for r in pair), "ms",
            f"one SQLite node {median(r['auth_p99_ms'] for r in single):.1f} ms")
    if errors:
        first = [e for r in pair + single for e in r["first_errors"]]
        out.notes.append(f"W4 client errors: {errors}: {first[:2]}")
    out.target("W7.c50", "C=50 over two PostgreSQL nodes >= 70% of one SQLite node",
               f"{p_cmd / s_cmd:.0%} ({p_cmd:,.0f} vs {s_cmd:,.0f} commands/s)", p_cmd >= 0.7 * s_cmd and not errors)


# --- revocation reach ---------------------------------------------------------------------------

async def _closed(ws) -> tuple[float, str]:
    """When the server closed this connection, and the last text it sent before."""
    from websockets.exceptions import ConnectionClosed

    said = ""
    try:
        while True:
            said = str(json.loads(await ws.recv()).get("message", said))
    except ConnectionClosed:
        return time.perf_counter(), said


async def _revoke_once(admin_a, url_b: str, label: str, secret: str) -> tuple[float, float, str]:
    from websockets.asyncio.client import connect

    async with connect(url_b, open_timeout=30, ping_interval=None) as victim:
        await victim.send(json.dumps({"type": "authenticate", "api_key": secret}))
        reply = json.loads(await victim.recv())
        if reply.get("type") != "authenticated":
            raise RuntimeError(f"the key to revoke did not authenticate on node B: {reply}")
        watcher = asyncio.create_task(_closed(victim))
        sent = time.perf_counter()
        await admin_a.send(json.dumps({"type": "execute", "program": f".apikey revoke {label}"}))
        reply = json.loads(await admin_a.recv())
        acked = time.perf_counter()
        if reply.get("type") != "result":
            watcher.cancel()
            raise RuntimeError(f".apikey revoke through node A: {reply}")
        closed, said = await asyncio.wait_for(watcher, 30)
    return closed - acked, closed - sent, said


async def _revocations(url_a: str, url_b: str, admin_key: str, victims: list[tuple[str, str]]) -> list:
    from websockets.asyncio.client import connect

    rng = random.Random(7)
    results = []
    async with connect(url_a, open_timeout=30, ping_interval=None) as admin_a:
        await admin_a.send(json.dumps({"type": "authenticate", "api_key": admin_key}))
        if json.loads(await admin_a.recv()).get("type") != "authenticated":
            raise RuntimeError("the admin key did not authenticate on node A")
        for label, secret in victims:
            await asyncio.sleep(rng.uniform(0, 0.3))    # no lock-step with any node's timer
            results.append(await _revoke_once(admin_a, url_b, label, secret))
    return results


def reach_part(out: Outcome, urls: list[str], admin_key: str, victims: list[tuple[str, str]]) -> None:
    results = asyncio.run(_revocations(urls[0], urls[1], admin_key, victims))
    after_ack = [r[0] * 1000 for r in results]
    after_send = [r[1] * 1000 for r in results]
    told = sum(1 for r in results if r[2].startswith("Session ended"))
    p50, p99 = percentile(after_ack, 50), percentile(after_ack, 99)
    out.add("reach_p50_ms", "revocation reach A -> B: p50 (from A's acknowledgement to B's close)", p50, "ms",
            f"from the revoke's send: {percentile(after_send, 50):.0f} ms")
    out.add("reach_p99_ms", "revocation reach A -> B: p99", p99, "ms",
            f"max {max(after_ack):.0f} ms; from the revoke's send: p99 {percentile(after_send, 99):.0f} ms")
    out.add("reach_told", "B's sessions told 'Session ended: ...' before the close", told, "", f"of {len(results)}")
    out.target("W7.reach", f"revocation reach p99 <= 250 ms (over {len(results)} revocations)",
               f"p50 {p50:.0f} ms, p99 {p99:.0f} ms", p99 <= 250)


# --- lockout across nodes -----------------------------------------------------------------------

async def _attempt(url: str, ip: str, user: str, n: int) -> str:
    from websockets.asyncio.client import connect

    async with connect(url, open_timeout=30, ping_interval=None, local_addr=(ip, 0)) as ws:
        await ws.send(json.dumps({"type": "login", "username": user, "password": f"wrong-password-{n}"}))
        return str(json.loads(await ws.recv()).get("message", ""))


async def _until_locked(urls: list[str], ip: str, user: str, last_on: int) -> int | None:
    """Attempts (1-based) until the first refusal for lockout: the first 20 alternate between
    the nodes, the 21st and later go to node `last_on`."""
    for n in range(1, LOCK_AT + 5):
        url = urls[(n - 1) % 2] if n < LOCK_AT else urls[last_on]
        if (await _attempt(url, ip, user, n)).startswith("Too many failed attempts"):
            return n
    return None


def lockout_part(out: Outcome, urls: list[str]) -> None:
    # One user per address: 20 failures each stay under the per-account limit (50).
    jobs = [_until_locked(urls, f"127.0.1.{i + 1}", f"u{i + 1}", i % 2) for i in range(LOCK_ADDRESSES)]

    async def all_jobs():
        return await asyncio.gather(*jobs)

    firsts = asyncio.run(all_jobs())
    exact = sum(1 for f in firsts if f == LOCK_AT)
    out.add("lock_exact_21", "addresses locked at exactly their 21st attempt, 20 failures spread over both nodes",
            exact, "", f"of {len(firsts)}; first refusal at: {sorted(set(firsts), key=str)}")
    out.target("W7.lock21", "lockout across nodes: every address refused at exactly attempt 21",
               f"{exact}/{len(firsts)}", exact == len(firsts))
    out.data["lock_first_refusal"] = firsts


# --- the workload -------------------------------------------------------------------------------

def _health(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        doc = json.loads(conn.getresponse().read() or b"{}")
    finally:
        conn.close()
    return f"status {doc.get('status')}, cluster {doc.get('cluster')}"


def _store_with_keys(cluster: Cluster, url: str, keys: int) -> tuple[list[str], list[tuple[str, str]]]:
    """W4's users, KGs and grants, `keys` admin keys for the clients and one spare for the
    revoking admin, and the keys to revoke."""
    victims: list[tuple[str, str]] = []

    def setup(engine, admin) -> None:
        w4.setup_store(engine, admin)
        engine.begin_batch()
        for i in range(1, REVOCATIONS + 1):
            victims.append((f"rev-{i}", engine.execute(admin, f".apikey create rev-{i}").rows[0][0]))
        engine.end_batch(True)

    secrets = prepare_store(url, cheap_config(), keys=keys + 1, setup=setup, env=cluster.env())
    return secrets, victims


def run_w7(scratch: Scratch, peers: Peers, quick: bool) -> Outcome:
    out = Outcome("W7", "two inputlayer-server nodes on one PostgreSQL store, sharing a Redis",
                  argon2_text(cheap=True))
    pg, rd = peers.postgres(), peers.redis()
    if pg is None or rd is None:
        why = peers.why_missing("postgres" if pg is None else "redis")
        for key in ("W7.durable", "W7.single", "W7.c50", "W7.reach", "W7.lock21"):
            out.target(key, "needs PostgreSQL and Redis", why, None)
        return out
    cluster = Cluster(pg, rd, scratch)
    grants_part(out, cluster, quick)
    url = cluster.database("w7_cluster")
    keys, victims = _store_with_keys(cluster, url, 50)
    admin_key, keys = keys[-1], keys[:-1]
    nodes = [cluster.node(url, "node-a"), cluster.node(url, "node-b")]
    try:
        urls = [n.url for n in nodes]
        out.notes.append("node health: " + "; ".join(_health(n.port) for n in nodes))
        remote_part(out, cluster, urls, keys, quick)
        reach_part(out, urls, admin_key, victims[:10] if quick else victims)
        lockout_part(out, urls)
    finally:
        for n in nodes:
            n.stop()
        cluster.drop("w7_cluster")
    out.notes.append(f"PostgreSQL: {pg.version()} (fsync=on, synchronous_commit=on), Redis: "
                     f"{rd.version().split(' build')[0]}; both on this machine, as are the nodes and the clients")
    out.notes.append("psql and the shell reach PostgreSQL over TCP on 127.0.0.1; every figure a median of "
                     "repeated runs; the W4 comparison interleaves the SQLite node's runs with the pair's")
    return out
