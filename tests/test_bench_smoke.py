"""The benchmark still runs: `python -m bench --quick W1` writes a results file with the expected
keys. No time is asserted (the benchmark is not a test)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_w1_writes_results(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("INPUTLAYER_")}
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-peers", "--results", str(tmp_path),
                           "--tmpdir", str(tmp_path), "W1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "PYTHONDONTWRITEBYTECODE" in proc.stdout
    assert not (tmp_path / "latest.json").exists()      # a smoke run never replaces the real figures
    doc = json.loads((tmp_path / "quick.json").read_text())
    assert set(doc) == {"meta", "workloads", "targets"}
    assert doc["meta"]["quick"] is True and doc["meta"]["workloads"] == ["W1"]
    figures = doc["workloads"]["W1"]["figures"]
    for key in ("python_floor_s", "version_s", "script_s", "interactive_s", "psql_s", "redis_cli_s"):
        assert key in figures
    assert figures["script_s"]["value"] > 0
    assert figures["psql_s"]["value"] is None and figures["psql_s"]["note"].startswith("skipped")
    assert {t["key"] for t in doc["targets"]} == {"W1.script", "W1.interactive"}
    assert all(t["ok"] in (True, False) for t in doc["targets"])
    assert not list(tmp_path.glob("ilbench-*")), "temporary data directories were left behind"


def test_bench_w7_without_peers_marks_every_target_unjudged(tmp_path):
    """W7 is registered and, with no PostgreSQL or Redis to run on, reports its five targets as
    not judged (never as passed or missed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INPUTLAYER_")}
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-peers", "--results", str(tmp_path),
                           "--tmpdir", str(tmp_path), "W7"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((tmp_path / "quick.json").read_text())
    targets = {t["key"]: t for t in doc["targets"]}
    assert set(targets) == {"W7.durable", "W7.single", "W7.c50", "W7.reach", "W7.lock21"}
    assert all(t["ok"] is None and t["measured"] == "skipped (--no-peers)" for t in targets.values())
    assert not list(tmp_path.glob("ilbench-*")), "temporary data directories were left behind"
