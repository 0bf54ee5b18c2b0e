"""W1: start-up. `inputlayer --version`, one command in script mode, first prompt on a pty."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time

from .common import Outcome, Scratch, child_env, default_config, inputlayer, median, prepare_store, run, PY, ROOT
from .peers import Peers

CPR_REQUEST = b"\x1b[6n"


def first_prompt_time(cmd: list[str], env: dict, marker: bytes, timeout: float = 20.0) -> float:
    """Seconds from spawn to `marker` on a pseudo-terminal. Cursor-position requests are answered
    the way a terminal would, so prompt-toolkit does not wait for them."""
    master, slave = pty.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT,
                            start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        deadline = start + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RuntimeError(f"no prompt within {timeout}s; screen: {seen[-400:]!r}")
            ready, _, _ = select.select([master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                raise RuntimeError(f"the shell exited before its prompt; screen: {seen[-400:]!r}")
            seen += chunk
            if CPR_REQUEST in chunk:
                os.write(master, b"\x1b[1;1R")
            if marker in seen:
                elapsed = time.perf_counter() - start
                break
        os.write(master, b"\x04")          # Ctrl-D: leave
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def run_w1(scratch: Scratch, peers: Peers, quick: bool) -> Outcome:
    out = Outcome("W1", "start-up", "no argon2 work measured: API-key login (HMAC); store made with real defaults")
    n, n_pty = (5, 3) if quick else (20, 10)
    data = scratch.new("w1")
    key = prepare_store(data / "d", default_config())[0]
    env = child_env(INPUTLAYER_API_KEY=key, HOME=str(data), XDG_STATE_HOME=str(data / "state"),
                    XDG_CONFIG_HOME=str(data / "config"), TERM="xterm")

    floor = [run([PY, "-c", "pass"], env=env)[0] for _ in range(n)]
    version = [run([*inputlayer(), "--version"], env=env)[0] for _ in range(n)]
    script = []
    for _ in range(n):
        t, proc = run([*inputlayer(), "--data-dir", str(data / "d")], env=env, stdin=b".whoami\n")
        if b"admin" not in proc.stdout:
            raise RuntimeError(f"unexpected .whoami output: {proc.stdout!r}")
        script.append(t)
    prompt = [first_prompt_time([*inputlayer(), "--data-dir", str(data / "d")], env, b"admin@local:default>") for _ in range(n_pty)]

    f_floor, f_script = median(floor), median(script)
    out.add("python_floor_s", "python -c pass (floor)", f_floor, "s", runs=floor)
    out.add("version_s", "inputlayer --version", median(version), "s", f"{median(version) / f_floor:.1f}x floor",
            runs=version)
    out.add("script_s", "echo .whoami | inputlayer (API key)", f_script, "s", f"{f_script / f_floor:.1f}x floor",
            runs=script)
    out.add("interactive_s", "first prompt on a pty", median(prompt), "s", runs=prompt)

    pg = peers.postgres()
    if pg:
        times = [run(pg.psql("-c", "select 1"))[0] for _ in range(n)]
        out.add("psql_s", "psql -c 'select 1'", median(times), "s", runs=times)
    else:
        out.add("psql_s", "psql -c 'select 1'", None, "s", peers.why_missing("postgres"))
    rd = peers.redis()
    if rd:
        times = [run(rd.redis_cli("ping"))[0] for _ in range(n)]
        out.add("redis_cli_s", "redis-cli ping", median(times), "s", runs=times)
    else:
        out.add("redis_cli_s", "redis-cli ping", None, "s", peers.why_missing("redis"))

    out.target("W1.script", "script mode, one command <= 100 ms and <= 5x python -c pass",
               f"{f_script * 1000:.0f} ms, {f_script / f_floor:.1f}x", f_script <= 0.100 and f_script <= 5 * f_floor)
    out.target("W1.interactive", "interactive first prompt <= 0.4 s", f"{median(prompt):.3f} s", median(prompt) <= 0.4)
    return out
