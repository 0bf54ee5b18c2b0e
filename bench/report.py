"""The results table, latest.json and the chart."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from .common import Outcome


def fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if unit == "s":
        return f"{value * 1000:,.0f} ms" if value < 10 else f"{value:,.1f} s"
    if unit in ("ms", "us"):
        return f"{value:,.2f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    if unit == "/s":
        return f"{value:,.0f}/s" if value >= 100 else f"{value:,.1f}/s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value}"


def mark(ok) -> str:
    return {True: "PASS", False: "MISS", None: "n/a"}[ok]


def table(outcomes: list[Outcome]) -> str:
    lines = []
    for o in outcomes:
        lines.append(f"{o.workload} — {o.title}")
        lines.append(f"  argon2: {o.params}")
        width = max((len(f.label) for f in o.figures), default=0)
        for f in o.figures:
            note = f"  {f.note}" if f.note else ""
            lines.append(f"  {f.label:<{width}}  {fmt(f.value, f.unit):>14}{note}")
        for t in o.targets:
            lines.append(f"  [{mark(t.ok)}] {t.text}: {t.measured}")
        for n in o.notes:
            lines.append(f"  note: {n}")
        lines.append("")
    return "\n".join(lines)


def targets_table(outcomes: list[Outcome]) -> str:
    lines = ["| workload | target | measured | |", "|---|---|---|---|"]
    for o in outcomes:
        for t in o.targets:
            lines.append(f"| {o.workload} | {t.text} | {t.measured} | {mark(t.ok)} |")
    return "\n".join(lines)


def write_json(path: Path, meta: dict, outcomes: list[Outcome]) -> None:
    doc = {"meta": meta, "workloads": {}, "targets": []}
    for o in outcomes:
        doc["workloads"][o.workload] = {
            "title": o.title, "argon2": o.params, "notes": o.notes,
            "figures": {f.key: {"label": f.label, "value": f.value, "unit": f.unit, "note": f.note,
                                "runs": f.runs} for f in o.figures},
            "data": o.data}
        doc["targets"] += [{"workload": o.workload, **asdict(t)} for t in o.targets]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def write_chart(path: Path, outcomes: list[Outcome], meta: dict) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped (matplotlib not installed)"
    by = {o.workload: o for o in outcomes}
    panels = [w for w in ("W1", "W2", "W4", "W6", "W7") if w in by]
    if not panels:
        return "chart skipped (no workload with a chart)"
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, w in zip(axes.flat, panels):
        o = by[w]
        if w == "W1":
            keys = [("python_floor_s", "python -c pass"), ("version_s", "--version"), ("script_s", "script, 1 cmd"),
                    ("interactive_s", "first prompt"), ("psql_s", "psql"), ("redis_cli_s", "redis-cli")]
            items = [(label, o.get(k) * 1000) for k, label in keys if o.get(k) is not None]
            ax.bar([i[0] for i in items], [i[1] for i in items], color="tab:blue")
            ax.set_ylabel("ms (median)")
            ax.set_title("W1 start-up")
        elif w == "W2":
            keys = [("durable_grants_per_s", "ours durable"), ("single_grants_per_s", "ours -1"),
                    ("fsync_floor_commits_per_s", "fsync floor"), ("psql_autocommit_grants_per_s", "psql"),
                    ("fsync_free_floor_rows_per_s", "fsync-free floor"), ("psql_single_grants_per_s", "psql -1"),
                    ("redis_grants_per_s", "redis-cli")]
            items = [(label, o.get(k)) for k, label in keys if o.get(k) is not None]
            ax.bar([i[0] for i in items], [i[1] for i in items],
                   color=["tab:orange" if i[0].startswith("ours") else "tab:gray" for i in items])
            ax.set_yscale("log")
            ax.set_ylabel("grants/s (log)")
            ax.set_title("W2 provisioning")
        elif w == "W4":
            levels = o.data.get("levels", {})
            cs = sorted(levels)
            x = range(len(cs))
            ax.bar([i - 0.2 for i in x], [levels[c]["commands_per_s"] for c in cs], 0.4, label="inputlayer-server")
            ax.bar([i + 0.2 for i in x], [levels[c]["echo_commands_per_s"] for c in cs], 0.4, label="bare echo",
                   color="tab:gray")
            ax.set_xticks(list(x), [f"C={c}" for c in cs])
            ax.set_ylabel("commands/s")
            ax.set_title("W4 remote round trips")
            ax.legend()
        elif w == "W7":
            keys = [("pg_durable_grants_per_s", "ours PG durable"), ("psql_autocommit_grants_per_s", "psql"),
                    ("pg_single_grants_per_s", "ours PG -1"), ("psql_single_grants_per_s", "psql -1")]
            items = [(label, o.get(k)) for k, label in keys if o.get(k) is not None]
            ax.bar([i[0] for i in items], [i[1] for i in items],
                   color=["tab:orange" if i[0].startswith("ours") else "tab:gray" for i in items])
            ax.set_yscale("log")
            ax.set_ylabel("grants/s (log)")
            ax.set_title("W7 grants on PostgreSQL")
        elif w == "W6":
            series = o.data.get("series", {})
            sizes = sorted(int(k) for k in series)
            ax.plot(sizes, [series[str(s)]["acl_check_us"] for s in sizes], "o-", label=".kg acl check (µs)")
            ax.plot(sizes, [series[str(s)]["apikey_auth_us"] for s in sizes], "s-", label="API-key auth (µs)")
            ax.plot(sizes, [series[str(s)]["open_ms"] * 1000 for s in sizes], "^-", label="open (µs)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("users")
            ax.set_title("W6 per-operation cost vs store size")
            ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=30)
    fig.suptitle(f"inputlayer bench {meta.get('date', '')} — {meta.get('machine', '')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return f"chart written to {path}"
