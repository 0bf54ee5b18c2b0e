"""W5b (one flooding client): W4's C = 50 API-key clients while one authenticated viewer sends,
as fast as its socket takes them, the heaviest programs the rules let through: 10,000-line
programs of cheap reads and 1 MiB messages. Reports the 50 clients' p99 with and without it."""

from __future__ import annotations

import asyncio
import collections
import json

from .common import Outcome, Scratch, argon2_text, median
from .peers import Peers
from .w4_remote import load, start_server

MAX_PROGRAM_LINES = 10_000          # the server's default `max_program_lines`
MESSAGE_BYTES = (1 << 20) - 200     # under the default `max_message_bytes` with the JSON around it


def flood_programs() -> list[str]:
    """The two heaviest kinds: the most lines, and the most bytes, of reads a viewer may run."""
    many_lines = "\n".join([".whoami", ".kg"] * (MAX_PROGRAM_LINES // 2))
    line = ".whoami" + " " * 90          # parsed like any line, then stripped
    big = "\n".join([line] * min(MAX_PROGRAM_LINES, MESSAGE_BYTES // (len(line) + 1)))
    return [json.dumps({"type": "execute", "program": p}) for p in (many_lines, big)]


async def flooder(url: str, stop: asyncio.Event, replies: collections.Counter, started=None) -> None:
    """Log in as a viewer, then send without waiting for answers; count the answers by kind."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    frames = flood_programs()
    async with connect(url, open_timeout=60, ping_interval=None, max_size=None) as ws:
        await ws.send(json.dumps({"type": "login", "username": "u1", "password": "bench-password-1"}))
        reply = json.loads(await ws.recv())
        if reply.get("type") != "authenticated":
            raise RuntimeError(f"the flooding viewer could not log in: {reply}")

        async def read() -> None:
            try:
                async for raw in ws:
                    message = json.loads(raw)
                    replies[message.get("message") or message.get("type")] += 1
            except ConnectionClosed:
                replies["closed"] += 1

        reader = asyncio.create_task(read())
        sent = 0
        try:
            while not stop.is_set():
                await ws.send(frames[sent % len(frames)])
                sent += 1
                replies["sent"] += 1
                if sent == 1 and started is not None:
                    started.set()               # the measured clients start with the first program
        except ConnectionClosed:
            replies["closed"] += 1
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


def flood_process(url: str, stop, started, counts) -> None:
    """The flooder in a process of its own: in the measured clients' event loop, its sending
    (masking 1 MiB frames) would slow them, not the server."""
    replies: collections.Counter = collections.Counter()

    async def main() -> None:
        done = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.05)
            done.set()

        watcher = asyncio.create_task(watch())
        await flooder(url, done, replies, started)
        await watcher

    try:
        asyncio.run(main())
    finally:
        counts.update(replies)


async def flood_phase(url: str, keys: list[str], clients: int, rounds: int, replies: collections.Counter) -> dict:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        stop, started, counts = manager.Event(), manager.Event(), manager.dict()
        process = ctx.Process(target=flood_process, args=(url, stop, started, counts))
        process.start()
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 60)
        try:
            return await load(url, keys, clients, rounds, True)
        finally:
            stop.set()
            await asyncio.get_running_loop().run_in_executor(None, process.join, 30)
            replies.update(dict(counts))


def run_w5b(scratch: Scratch, peers: Peers, quick: bool) -> Outcome:
    clients = 20 if quick else 50
    rounds = 1 if quick else 3
    repeats = 1 if quick else 3
    out = Outcome("W5b", f"one flooding viewer: {clients} API-key clients while one viewer sends "
                         f"{MAX_PROGRAM_LINES:,}-line programs and 1 MiB messages without pause",
                  argon2_text(cheap=True))
    server, keys = start_server(scratch, cheap=True, keys=clients)
    calms, floods = [], []
    replies: collections.Counter = collections.Counter()
    try:
        for _ in range(repeats):            # alternating, so drift hits both alike
            calms.append(asyncio.run(load(server.url, keys, clients, rounds, True)))
            floods.append(asyncio.run(flood_phase(server.url, keys, clients, rounds, replies)))
    finally:
        server.stop()
    p99_calm, p99_flood = median(c["p99_ms"] for c in calms), median(f["p99_ms"] for f in floods)
    ratio = p99_flood / p99_calm
    out.add("p99_calm_ms", "API-key clients' command p99, no flood", p99_calm, "ms", runs=[c["p99_ms"] for c in calms])
    out.add("p99_flood_ms", "API-key clients' command p99, during the flood", p99_flood, "ms",
            f"{ratio:.2f}x calm", runs=[f["p99_ms"] for f in floods])
    out.add("commands_per_s_flood", "API-key clients' commands/s during the flood",
            median(f["commands_per_s"] for f in floods), "/s",
            f"calm {median(c['commands_per_s'] for c in calms):,.0f}/s")
    out.add("flood_sent", "flood messages sent", replies["sent"], "",
            f"answered: {replies['result']} results, {replies['Rate limit exceeded']} rate-limited, "
            f"{replies['sent'] - replies['result'] - replies['Rate limit exceeded']} other or unanswered")
    errors = sum(p["errors"] for p in calms + floods)
    if errors:
        first = [e for p in calms + floods for e in p["first_errors"]]
        out.notes.append(f"API-key client errors: {errors}: {first[:2]}")
    out.target("W5b.p99", "API-key clients' p99 with one flooding viewer <= 2x without",
               f"{ratio:.2f}x ({p99_calm:.1f} -> {p99_flood:.1f} ms)", ratio <= 2 and not errors)
    out.notes.append(f"p99s are medians of {repeats} alternating calm and flood phases; the flooder sends the "
                     "next message as soon as its socket takes it and reads the answers on the side")
    return out
