"""Counters for /metrics, in the Prometheus text format written by `prometheus-client`.

Each server has a registry of its own (tests run several servers in one process). Counts are
the library's Counter and Histogram; what is true at the moment of a scrape (open connections,
sessions, locked addresses, whether Redis is in use) is read when the scrape comes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The `_created` series would double every counter for a value nobody here reads.
disable_created_metrics()


class _Now(Collector):
    """The gauges, as last handed to render()."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        for name, help_text in (("inputlayer_up", "1 while the server runs."),
                                ("inputlayer_uptime_seconds", "Seconds since the server started."),
                                ("inputlayer_connections", "Open WebSocket connections."),
                                ("inputlayer_sessions", "Authenticated sessions."),
                                ("inputlayer_locked_addresses", "Addresses locked out now."),
                                ("inputlayer_cluster_degraded",
                                 "1 while Redis is configured but unreachable and this node counts in its memory."),
                                ("inputlayer_store_listening",
                                 "1 while this node hears every change to its PostgreSQL store (and may answer "
                                 "reads from its cache); 0 while it does not, or on SQLite.")):
            yield GaugeMetricFamily(name, help_text, value=self.values.get(name, 0))


class Metrics:
    """Updated on the event loop only."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._now = _Now()
        self.registry.register(self._now)
        self._logins = Counter("inputlayer_logins_total", "Authentication attempts by method and outcome.",
                               ["method", "outcome"], registry=self.registry)
        self._lockouts = Counter("inputlayer_lockouts_total", "Addresses locked out after repeated failures.",
                                 registry=self.registry)
        self._connections = Counter("inputlayer_connections_total", "WebSocket connections accepted.",
                                    registry=self.registry)
        self._commands = Counter("inputlayer_commands_total", "Commands by name and outcome.",
                                 ["command", "outcome"], registry=self.registry)
        self._latency = Histogram("inputlayer_command_duration_seconds", "Command latency.",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self._outages = Counter("inputlayer_cluster_outages_total",
                                "Times Redis became unreachable and this node fell back to its memory.",
                                registry=self.registry)

    def login(self, method: str, outcome: str) -> None:
        self._logins.labels(method=method, outcome=outcome).inc()

    def lockout(self) -> None:
        self._lockouts.inc()

    def connection(self) -> None:
        self._connections.inc()

    def cluster_outage(self) -> None:
        self._outages.inc()

    def command(self, name: str, outcome: str, seconds: float) -> None:
        self._commands.labels(command=name, outcome=outcome).inc()
        self._latency.observe(seconds)

    def render(self, *, connections: int, sessions: int, locked: int, uptime: float, degraded: bool = False,
               listening: bool = False) -> str:
        self._now.values = {"inputlayer_up": 1, "inputlayer_uptime_seconds": uptime,
                            "inputlayer_connections": connections, "inputlayer_sessions": sessions,
                            "inputlayer_locked_addresses": locked, "inputlayer_cluster_degraded": int(degraded),
                            "inputlayer_store_listening": int(listening)}
        return generate_latest(self.registry).decode()
