"""`python -m bench [W1 ... W7, W5b] [--quick]`: the benchmark described in bench/README.md.

Runs the chosen workloads (all by default) on fresh temporary data directories, prints a table
with a pass/miss mark for each of the issue's targets, and writes bench/results/latest.json and,
when matplotlib is installed, bench/results/latest.png. Not a test: nothing here fails on a time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from .common import Scratch, argon2_text, warm_bytecode
from .peers import Peers
from . import report

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W5B", "W6", "W7")
RESULTS = Path(__file__).resolve().parent / "results"


def runner(name: str):
    if name == "W1":
        from .w1_startup import run_w1
        return run_w1
    if name == "W2":
        from .w2_provision import run_w2
        return run_w2
    if name == "W3":
        from .w3_users import run_w3
        return run_w3
    if name == "W4":
        from .w4_remote import run_w4
        return run_w4
    if name == "W5":
        from .w4_remote import run_w5
        return run_w5
    if name == "W5B":
        from .w5b_flood import run_w5b
        return run_w5b
    if name == "W6":
        from .w6_scale import run_w6
        return run_w6
    from .w7_cluster import run_w7
    return run_w7


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0
    return f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB, {platform.system()} {platform.release()}"


def revision() -> str:
    """The commit measured, and whether the work tree had changes on top of it."""
    import subprocess
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=RESULTS.parent.parent,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "backend", "repl"],
                               cwd=RESULTS.parent.parent, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" + uncommitted changes in backend/ or repl/" if dirty else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("workloads", nargs="*", metavar="W", help="workloads to run (W1..W7, W5b; default: all)")
    p.add_argument("--quick", action="store_true", help="smaller counts for a smoke test (skips W6's 100k store)")
    p.add_argument("--no-peers", action="store_true", help="do not start psql/redis peers")
    p.add_argument("--results", metavar="DIR", default=str(RESULTS),
                   help="where latest.json/.png go (quick.json/.png with --quick, so a smoke run "
                        "never replaces the real figures)")
    p.add_argument("--tmpdir", metavar="DIR", help="base for the temporary data directories (default: system temp)")
    args = p.parse_args(argv)
    chosen = [w.upper() for w in args.workloads] or list(WORKLOADS)
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}: choose from {', '.join(WORKLOADS)}")

    started = time.time()
    hygiene = warm_bytecode()
    meta = {"date": datetime.date.today().isoformat(), "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(), "revision": revision(), "python": sys.version.split()[0], "quick": args.quick, "workloads": chosen,
            "bytecode": hygiene, "argon2": {"cheap": argon2_text(True), "real": argon2_text(False)}}
    print(f"inputlayer bench — {meta['date']} — {meta['machine']} — Python {meta['python']}")
    print(f"revision: {meta['revision']}")
    print(f"note: {hygiene}")
    if args.quick:
        print("note: --quick: smaller counts; figures are for smoke-testing, not for the README")
    print()
    sys.stdout.flush()

    scratch = Scratch(args.tmpdir)
    peers = Peers(args.tmpdir, enabled=not args.no_peers)
    outcomes = []
    failures = {}
    try:
        for name in chosen:
            t = time.time()
            print(f"running {name} ...", flush=True)
            try:
                outcome = runner(name)(scratch, peers, args.quick)
            except Exception as exc:           # one workload failing does not lose the others
                failures[name] = f"{type(exc).__name__}: {exc}"
                print(f"  {name} failed: {failures[name]}", flush=True)
                traceback.print_exc()
                continue
            outcome.notes.append(f"ran in {time.time() - t:.0f} s")
            outcomes.append(outcome)
            print(report.table([outcome]), flush=True)
    finally:
        meta["peers"] = peers.versions()
        peers.stop()
        scratch.cleanup()

    meta["duration_s"] = round(time.time() - started, 1)
    meta["failures"] = failures
    print("=" * 78)
    print(f"inputlayer bench — {meta['date']} — {meta['machine']} — revision {meta['revision']}")
    print(f"peers: {meta['peers'] or 'none started'}; {hygiene}")
    print()
    print(report.table(outcomes))
    print(report.targets_table(outcomes))
    if failures:
        print("\nfailed workloads: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
    results = Path(args.results)
    stem = "quick" if args.quick else "latest"
    report.write_json(results / f"{stem}.json", meta, outcomes)
    print(f"\nresults written to {results / f'{stem}.json'}")
    print(report.write_chart(results / f"{stem}.png", outcomes, meta))
    print(f"total {meta['duration_s']:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
