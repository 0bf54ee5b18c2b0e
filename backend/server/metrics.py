"""Counters for /metrics, in Prometheus text format."""

from __future__ import annotations

import bisect
import collections
import itertools

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Updated on the event loop only."""

    def __init__(self) -> None:
        self.logins: collections.Counter = collections.Counter()       # (method, outcome)
        self.commands: collections.Counter = collections.Counter()     # (command, outcome)
        self.lockouts = 0
        self.connections_total = 0
        self.latency_buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_count = 0
        self.latency_sum = 0.0

    def command(self, name: str, outcome: str, seconds: float) -> None:
        self.commands[(name, outcome)] += 1
        self.latency_count += 1
        self.latency_sum += seconds
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        if bucket < len(LATENCY_BUCKETS):
            self.latency_buckets[bucket] += 1      # cumulated when rendered

    def render(self, *, connections: int, sessions: int, locked: int, uptime: float) -> str:
        out: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{labels} {_number(value)}")

        metric("inputlayer_up", "gauge", "1 while the server runs.", [("", 1)])
        metric("inputlayer_uptime_seconds", "gauge", "Seconds since the server started.", [("", uptime)])
        metric("inputlayer_connections", "gauge", "Open WebSocket connections.", [("", connections)])
        metric("inputlayer_connections_total", "counter", "WebSocket connections accepted.",
               [("", self.connections_total)])
        metric("inputlayer_sessions", "gauge", "Authenticated sessions.", [("", sessions)])
        metric("inputlayer_logins_total", "counter", "Authentication attempts by method and outcome.",
               [(_labels(method=m, outcome=o), n) for (m, o), n in sorted(self.logins.items())])
        metric("inputlayer_lockouts_total", "counter", "Addresses locked out after repeated failures.",
               [("", self.lockouts)])
        metric("inputlayer_locked_addresses", "gauge", "Addresses locked out now.", [("", locked)])
        metric("inputlayer_commands_total", "counter", "Commands by name and outcome.",
               [(_labels(command=c, outcome=o), n) for (c, o), n in sorted(self.commands.items())])
        out.append("# HELP inputlayer_command_duration_seconds Command latency.")
        out.append("# TYPE inputlayer_command_duration_seconds histogram")
        for bound, count in zip(LATENCY_BUCKETS, itertools.accumulate(self.latency_buckets), strict=True):
            out.append(f'inputlayer_command_duration_seconds_bucket{{le="{bound}"}} {count}')
        out.append(f'inputlayer_command_duration_seconds_bucket{{le="+Inf"}} {self.latency_count}')
        out.append(f"inputlayer_command_duration_seconds_sum {_number(self.latency_sum)}")
        out.append(f"inputlayer_command_duration_seconds_count {self.latency_count}")
        return "\n".join(out) + "\n"


def _labels(**labels: str) -> str:
    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}"
