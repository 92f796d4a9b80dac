"""The processors' Prometheus exposition: worker health and fleet-level gauges.

Label cardinality is capped: per-agent and per-integration families keep the
``processors_prometheus_max_series`` (default 50) largest label values by volume over the
5-minute window, and sum the rest under ``_other``. Everything else has no labels or a fixed
set (``result``). Fleet totals are this worker's share: ``sum()`` them across workers.

Families (all windows are the 5-minute horizon):

* ``fleetpulse_processor_records_total{result=ok|late|duplicate|dlq}``
* ``fleetpulse_processor_snapshots_total``, ``fleetpulse_processor_scopes``
* ``fleetpulse_fleet_tasks_5m``, ``fleetpulse_fleet_failures_5m``,
  ``fleetpulse_fleet_cost_micros_5m``
* ``fleetpulse_agent_failure_rate_5m{agent}``, ``fleetpulse_agent_tasks_5m{agent}``
* ``fleetpulse_integration_calls_5m{integration}``,
  ``fleetpulse_integration_error_rate_5m{integration}``,
  ``fleetpulse_integration_latency_p99_seconds_5m{integration}``

Names are in Prometheus' base units (seconds, not milliseconds; ``promtool check metrics``
passes); costs stay integer micro-USD, the unit of every fleetpulse cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

OTHER = "_other"
HORIZON_S = 300


class ProcessorCollector(Collector):
    """Reads the latest 5-minute snapshot of each scope; fed by the processor's tick."""

    def __init__(self, max_series: int) -> None:
        self.max_series = max_series
        self.records: dict[str, int] = {"ok": 0, "late": 0, "duplicate": 0, "dlq": 0}
        self.snapshots = 0
        self.scopes = 0
        self._agents: dict[str, dict[str, Any]] = {}
        self._integrations: dict[str, dict[str, Any]] = {}

    def observe(self, snapshots: Iterable[dict[str, Any]]) -> None:
        for s in snapshots:
            if s["horizon_s"] != HORIZON_S:
                continue
            if s["scope_type"] == "agent":
                table, name = self._agents, s["dimensions"]["agent_id"]
            elif s["scope_type"] == "integration":
                table, name = self._integrations, s["dimensions"]["integration"]
            else:
                continue
            if s["task_count"] == 0 and s["tool_calls"] == 0:
                table.pop(name, None)
            else:
                table[name] = s

    def collect(self) -> Iterator[Any]:
        c = CounterMetricFamily(
            "fleetpulse_processor_records", "Task-event records by result", labels=["result"]
        )
        for result, n in self.records.items():
            c.add_metric([result], n)
        yield c
        yield CounterMetricFamily(
            "fleetpulse_processor_snapshots", "MetricSnapshots published", value=self.snapshots
        )
        yield GaugeMetricFamily("fleetpulse_processor_scopes", "Scopes held", value=self.scopes)
        agents = list(self._agents.values())
        for name, field in (
            ("tasks", "task_count"),
            ("failures", "failure"),
            ("cost_micros", "cost_micros"),
        ):
            yield GaugeMetricFamily(
                f"fleetpulse_fleet_{name}_5m",
                f"{field} over 5 minutes, this worker's agents",
                value=sum(a[field] for a in agents),
            )
        top, rest = _split(self._agents, "task_count", self.max_series)
        rate = GaugeMetricFamily(
            "fleetpulse_agent_failure_rate_5m", "(failure+timeout)/tasks", labels=["agent"]
        )
        tasks = GaugeMetricFamily("fleetpulse_agent_tasks_5m", "tasks", labels=["agent"])
        for name, s in top:
            rate.add_metric([name], s["failure_rate"])
            tasks.add_metric([name], s["task_count"])
        if rest:
            n = sum(s["task_count"] for s in rest)
            bad = sum(s["failure"] + s["timeout"] for s in rest)
            rate.add_metric([OTHER], bad / n if n else 0.0)
            tasks.add_metric([OTHER], n)
        yield rate
        yield tasks
        top, rest = _split(self._integrations, "tool_calls", self.max_series)
        calls = GaugeMetricFamily(
            "fleetpulse_integration_calls_5m", "calls", labels=["integration"]
        )
        err = GaugeMetricFamily(
            "fleetpulse_integration_error_rate_5m",
            "errors / attempted calls",
            labels=["integration"],
        )
        p99 = GaugeMetricFamily(
            "fleetpulse_integration_latency_p99_seconds_5m",
            "call latency p99, seconds",
            labels=["integration"],
        )
        for name, s in top:
            calls.add_metric([name], s["tool_calls"])
            err.add_metric([name], s["tool_error_rate"])
            p99.add_metric([name], s["latency_p99_ms"] / 1000)
        if rest:
            calls.add_metric([OTHER], sum(s["tool_calls"] for s in rest))
            attempted = sum(
                s["tool_calls"] - s["tool_denied"] - s["tool_short_circuited"] for s in rest
            )
            errors = sum(s["tool_errors"] for s in rest)
            err.add_metric([OTHER], errors / attempted if attempted else 0.0)
        yield calls
        yield err
        yield p99


def _split(
    table: dict[str, dict[str, Any]], by: str, cap: int
) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    ranked = sorted(table.items(), key=lambda kv: (-kv[1][by], kv[0]))
    return ranked[:cap], [s for _, s in ranked[cap:]]


def new_registry(collector: ProcessorCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
