"""W4 (remote round trips) and W5 (login storm): a real `inputlayer-server` on 127.0.0.1 driven by
asyncio `websockets` clients; the limit is a bare websockets echo server driven by the same code."""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import random
import re
import subprocess
import time
from pathlib import Path

from .common import PY, ROOT, Outcome, Scratch, argon2_text, cheap_config, child_env, default_config, \
    inputlayer_server, median, percentile, prepare_store
from .peers import Peers

COMMANDS_PER_SESSION = 20
N_USERS, N_KGS = 50, 20
LISTENING = re.compile(r"listening on (wss?://\S+)")


# --- processes ----------------------------------------------------------------------------------

class Process:
    """A server subprocess that prints `listening on ws://HOST:PORT/ws`; stopped with SIGTERM."""

    def __init__(self, cmd: list[str], log: Path, env: dict):
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=env, cwd=ROOT)
        deadline = time.monotonic() + 30
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = LISTENING.search(line.decode(errors="replace"))
            if m:
                self.url = m.group(1)
                return
        self.stop()
        raise RuntimeError(f"{cmd[0]} did not print its address: {line!r}; log {log.read_text()[-500:]}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def setup_store(engine, admin) -> None:
    engine.begin_batch()
    for i in range(1, N_USERS + 1):
        engine.execute(admin, f".user create u{i} bench-password-{i} viewer")
    for k in range(1, N_KGS + 1):
        engine.execute(admin, f".kg create kg{k}")
    rng = random.Random(4)
    for i in range(1, N_USERS + 1):
        for k in rng.sample(range(1, N_KGS + 1), 5):
            engine.execute(admin, f".kg acl grant kg{k} u{i} viewer")
    engine.end_batch(True)


def start_server(scratch: Scratch, cheap: bool, keys: int) -> tuple[Process, list[str]]:
    work = scratch.new("server-cheap" if cheap else "server-real")
    secrets = prepare_store(work / "d", cheap_config() if cheap else default_config(), keys=keys,
                            setup=setup_store)
    env = child_env(INPUTLAYER_CONFIG=str(scratch.config(cheap)), HOME=str(work))
    server = Process([*inputlayer_server(), "--port", "0", "--host", "127.0.0.1", "--data-dir", str(work / "d")],
                     work / "server.log", env)
    return server, secrets


def start_echo(scratch: Scratch) -> Process:
    work = scratch.new("echo")
    return Process([PY, str(ROOT / "bench" / "echo_server.py")], work / "echo.log", child_env())


# --- the client ---------------------------------------------------------------------------------

class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []      # per command round trip
        self.auth: list[float] = []           # connect + authenticate
        self.sessions = 0
        self.errors: list[str] = []


async def one_session(url: str, key: str, commands: list[str], tally: Tally, validate: bool) -> None:
    from websockets.asyncio.client import connect

    start = time.perf_counter()
    async with connect(url, open_timeout=60, ping_interval=None, max_size=None) as ws:
        await ws.send(json.dumps({"type": "authenticate", "api_key": key}))
        reply = json.loads(await ws.recv())
        if validate and reply.get("type") != "authenticated":
            tally.errors.append(f"authenticate: {reply}")
            return
        tally.auth.append(time.perf_counter() - start)
        for program in commands:
            t = time.perf_counter()
            await ws.send(json.dumps({"type": "execute", "program": program}))
            reply = json.loads(await ws.recv())
            tally.latencies.append(time.perf_counter() - t)
            if validate and reply.get("type") != "result":
                tally.errors.append(f"{program}: {reply}")
    tally.sessions += 1


async def client_loop(url: str, key: str, rounds: int, tally: Tally, validate: bool, rng: random.Random,
                      until=None) -> None:
    done = 0
    while done < rounds or (until is not None and not until()):
        commands = [f".kg acl check kg{rng.randint(1, N_KGS)} u{rng.randint(1, N_USERS)}"
                    for _ in range(COMMANDS_PER_SESSION)]
        try:
            await one_session(url, key, commands, tally, validate)
        except Exception as exc:          # counted, never hidden
            tally.errors.append(f"{type(exc).__name__}: {exc}")
        done += 1


async def load(url: str | list[str], keys: list[str], clients: int, rounds: int, validate: bool,
               until=None) -> dict:
    """`clients` clients, spread round-robin over the server(s) at `url`."""
    urls = [url] if isinstance(url, str) else url
    tally = Tally()
    rng = random.Random(clients)
    start = time.perf_counter()
    await asyncio.gather(*(client_loop(urls[i % len(urls)], keys[i % len(keys)], rounds, tally, validate,
                                       random.Random(rng.random()), until) for i in range(clients)))
    wall = time.perf_counter() - start
    return {"wall_s": wall, "sessions": tally.sessions, "commands": len(tally.latencies),
            "connections_per_s": tally.sessions / wall, "commands_per_s": len(tally.latencies) / wall,
            "p50_ms": percentile(tally.latencies, 50) * 1000, "p99_ms": percentile(tally.latencies, 99) * 1000,
            "auth_p50_ms": percentile(tally.auth, 50) * 1000, "auth_p99_ms": percentile(tally.auth, 99) * 1000,
            "errors": len(tally.errors), "first_errors": tally.errors[:3]}


def rounds_for(clients: int, quick: bool) -> int:
    if quick:
        return {1: 5, 50: 1, 200: 1}.get(clients, 1)
    return {1: 40, 50: 3, 200: 2}.get(clients, 2)


def _med(results: list[dict], key: str) -> float:
    return median(r[key] for r in results)


def run_w4(scratch: Scratch, peers: Peers, quick: bool) -> Outcome:
    levels = (1, 50, 200)
    reps = 1 if quick else 3
    out = Outcome("W4", "remote round trips: connect, authenticate (API key), 20 x .kg acl check, close",
                  argon2_text(cheap=True) + "; API-key authentication (no argon2)")
    server, keys = start_server(scratch, cheap=True, keys=max(levels))
    echo = start_echo(scratch)
    table = {}
    try:
        for c in levels:
            ours, bare = [], []
            for _ in range(reps):           # interleaved, so drift hits both alike
                ours.append(asyncio.run(load(server.url, keys, c, rounds_for(c, quick), True)))
                bare.append(asyncio.run(load(echo.url, keys, c, rounds_for(c, quick), False)))
            row = {k: _med(ours, k) for k in ("connections_per_s", "commands_per_s", "p50_ms", "p99_ms",
                                              "auth_p50_ms", "auth_p99_ms")}
            row.update({"echo_" + k: _med(bare, k) for k in ("connections_per_s", "commands_per_s", "p50_ms",
                                                             "p99_ms")})
            row["errors"] = sum(r["errors"] for r in ours)
            row["first_errors"] = [e for r in ours for e in r["first_errors"]][:3]
            row["fraction"] = row["commands_per_s"] / row["echo_commands_per_s"]
            table[c] = row
            note = f"{row['fraction']:.0%} of echo ({row['echo_commands_per_s']:,.0f}/s)"
            if row["errors"]:
                note += f"; {row['errors']} errors: {row['first_errors'][:1]}"
            out.add(f"c{c}_commands_per_s", f"C={c}: commands/s", row["commands_per_s"], "/s", note)
            out.add(f"c{c}_connections_per_s", f"C={c}: connections/s", row["connections_per_s"], "/s",
                    f"echo {row['echo_connections_per_s']:,.0f}/s")
            out.add(f"c{c}_p50_ms", f"C={c}: p50 latency", row["p50_ms"], "ms", f"echo {row['echo_p50_ms']:.2f} ms")
            out.add(f"c{c}_p99_ms", f"C={c}: p99 latency", row["p99_ms"], "ms", f"echo {row['echo_p99_ms']:.2f} ms")
            out.add(f"c{c}_auth_p99_ms", f"C={c}: connect+authenticate p99", row["auth_p99_ms"], "ms")
    finally:
        server.stop()
        echo.stop()
    r50 = table[50]
    out.target("W4.c50", "C=50: commands/s >= 50% of the bare websockets echo server, and p99 <= 20 ms",
               f"{r50['fraction']:.0%} of echo, p99 {r50['p99_ms']:.1f} ms",
               r50["fraction"] >= 0.5 and r50["p99_ms"] <= 20 and not r50["errors"])
    out.data["levels"] = table
    out.notes.append("client and servers share this machine's cores; every figure a median of "
                     f"{reps} interleaved runs; sessions per client: " +
                     ", ".join(f"C={c}: {rounds_for(c, quick)}" for c in levels))
    return out


# --- W5 -----------------------------------------------------------------------------------------

async def storm_client(url: str, ip: str, stop: asyncio.Event, record: dict, deadline: float) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    attempts = 0
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            async with connect(url, open_timeout=30, ping_interval=None, local_addr=(ip, 0)) as ws:
                while not stop.is_set() and time.monotonic() < deadline:
                    # A name of its own: were all addresses guessing one name, that account's
                    # lock (50 failures from anywhere) would refuse them before their address's.
                    await ws.send(json.dumps({"type": "login", "username": f"storm-{ip}",
                                              "password": f"wrong-password-{attempts}"}))
                    reply = json.loads(await ws.recv())
                    attempts += 1
                    message = reply.get("message", "")
                    if message.startswith("Too many failed attempts"):
                        record.setdefault("first_lock", attempts)
                    elif record.get("first_lock") is None:
                        record["failures_before_lock"] = attempts
                    record["attempts"] = attempts
        except ConnectionClosed:
            continue                           # the auth deadline closed it: connect again
        except OSError as exc:
            record["error"] = str(exc)
            await asyncio.sleep(0.05)


def fetch_metrics(port: int, key: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {key}"})
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"/metrics answered {resp.status}: {body[:200]}")
    counts = {}
    for m in re.finditer(r'inputlayer_logins_total\{method="(\w+)",outcome="(\w+)"\} (\d+)', body):
        counts[(m.group(1), m.group(2))] = int(m.group(3))
    return counts


async def storm_phase(url: str, keys: list[str], clients: int, rounds: int, storm: int, limit_s: float,
                      records: list[dict], first_host: int = 2) -> dict:
    """The measured clients while `storm` clients from 127.0.0.<first_host> on send wrong passwords."""
    stop = asyncio.Event()
    deadline = time.monotonic() + limit_s
    tasks = [asyncio.create_task(storm_client(url, f"127.0.0.{first_host + i}", stop, records[i], deadline))
             for i in range(storm)]
    await asyncio.sleep(0.2)                  # the storm is under way before the measured clients start

    def all_locked() -> bool:
        return all(r.get("first_lock") for r in records) or time.monotonic() >= deadline

    try:
        result = await load(url, keys, clients, rounds, True, until=all_locked)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return result


def run_w5(scratch: Scratch, peers: Peers, quick: bool) -> Outcome:
    clients, storm = (20, 5) if quick else (50, 20)
    rounds = 1 if quick else 3
    repeats = 1 if quick else 3
    limit_s = 20.0 if quick else 50.0
    out = Outcome("W5", f"login storm: {clients} API-key clients while {storm} addresses send wrong passwords",
                  argon2_text(cheap=False))
    server, keys = start_server(scratch, cheap=False, keys=clients + 1)
    admin_key, keys = keys[-1], keys[:-1]
    # Like every target, a median: calm and storm phases alternate; each storm comes from
    # addresses of its own, so none starts already locked.
    calms, storms, records = [], [], []
    logins = collections.Counter()         # password outcomes during the storms, from /metrics
    try:
        for rep in range(repeats):
            calms.append(asyncio.run(load(server.url, keys, clients, rounds, True)))
            before = fetch_metrics(server.port, admin_key)
            rep_records = [{} for _ in range(storm)]
            storms.append(asyncio.run(storm_phase(server.url, keys, clients, rounds, storm, limit_s, rep_records,
                                                  first_host=2 + rep * storm)))
            after = fetch_metrics(server.port, admin_key)
            logins.update({outcome: after.get(("password", outcome), 0) - before.get(("password", outcome), 0)
                           for outcome in ("failed", "locked")})
            records += rep_records
    finally:
        server.stop()

    reached, locked_refusals = logins["failed"], logins["locked"]
    attempts = sum(r.get("attempts", 0) for r in records)
    exact = [r.get("first_lock") == 21 for r in records]
    p99_calm, p99_storm = median(c["p99_ms"] for c in calms), median(s["p99_ms"] for s in storms)
    ratio = p99_storm / p99_calm
    auth_calm, auth_storm = median(c["auth_p99_ms"] for c in calms), median(s["auth_p99_ms"] for s in storms)
    out.add("p99_calm_ms", "API-key clients' command p99, no storm", p99_calm, "ms",
            runs=[c["p99_ms"] for c in calms])
    by_pair = ", ".join(f"{s['p99_ms'] / c['p99_ms']:.2f}x" for c, s in zip(calms, storms))
    out.add("p99_storm_ms", "API-key clients' command p99, during the storm", p99_storm, "ms",
            f"{ratio:.2f}x calm (by pair: {by_pair})", runs=[s["p99_ms"] for s in storms])
    out.add("auth_p99_calm_ms", "connect+authenticate p99, no storm", auth_calm, "ms")
    out.add("auth_p99_storm_ms", "connect+authenticate p99, during the storm", auth_storm, "ms",
            f"{auth_storm / auth_calm:.1f}x calm")
    out.add("commands_per_s_storm", "API-key clients' commands/s during the storm",
            median(s["commands_per_s"] for s in storms), "/s",
            f"calm {median(c['commands_per_s'] for c in calms):,.0f}/s")
    out.add("storm_attempts", "storm attempts sent", attempts, "")
    out.add("storm_reached_argon2", "storm attempts that reached argon2 (/metrics: password failed)", reached, "",
            f"expected {len(records) * 20} = {len(records)} addresses x 20; refused while locked: {locked_refusals}")
    first_locks = sorted({r.get("first_lock") for r in records}, key=str)
    out.add("storm_locked_at_21", "storm addresses locked at exactly their 21st attempt",
            sum(exact), "", f"of {len(records)}; first lock at: {first_locks}")
    out.add("storm_seconds", "storm phase wall time", median(s["wall_s"] for s in storms), "s")
    errors = sum(p["errors"] for p in calms + storms)
    if errors:
        first = [e for p in calms + storms for e in p["first_errors"]]
        out.notes.append(f"API-key client errors: {errors}: {first[:2]}")
    out.target("W5.p99", "API-key clients' p99 with storm <= 2x without", f"{ratio:.2f}x "
               f"({p99_calm:.1f} -> {p99_storm:.1f} ms)", ratio <= 2 and not errors)
    out.target("W5.lock21", "every storm address locked at attempt 21", f"{sum(exact)}/{len(records)}", all(exact))
    out.data["storm"] = records
    out.notes.append("the storm clients each bind their own loopback address (127.0.0.2 ...), guess the password "
                     "of a user name of their own, and send the next guess as soon as the previous answer "
                     "arrives; the measured clients run at "
                     "least %d sessions each and until every storm address is locked (at most %.0f s); "
                     "p99s are medians of %d alternating calm and storm phases, each storm from new addresses"
                     % (rounds, limit_s, repeats))
    return out
