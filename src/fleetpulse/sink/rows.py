"""Decoded records to columns, one function per source topic. Timestamps stay epoch micros
(the backends convert the columns of ``TIME_COLUMNS``); optional values become '' or 0 (no
Nullable where a default serves). Every row ends with its source ``_topic/_partition/_offset``.

``ROUTES`` says, for each topic of ARCHITECTURE.md the sink reads, which Avro record it holds
and which tables its records feed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fleetpulse.sink.backend import Columns

SOURCE = ["_topic", "_partition", "_offset"]

TASK_COLUMNS = [
    "event_id", "agent_id", "agent_version", "agent_role", "task_id", "task_type", "trace_id",
    "parent_task_id", "upstream_agent_id", "input_hash", "outcome", "error_type", "started_at",
    "ended_at", "duration_ms", "model", "provider", "input_tokens", "output_tokens",
    "cached_tokens", "cost_micros", "price_table_version",  # the 22 fields copied as they are
    "tool_call_count", "attributes", *SOURCE,
]  # fmt: skip
CALL_COLUMNS = [
    "event_id", "task_id", "call_id", "agent_id", "agent_version", "agent_role", "integration",
    "operation", "access", "target", "status", "error_type", "started_at", "latency_ms",
    "cost_micros", *SOURCE,
]  # fmt: skip
_TASK_FIELDS = TASK_COLUMNS[:22]  # straight from the event
_CALL_FIELDS = ("call_id", "integration", "operation", "access", "target", "status",
                "error_type", "started_at", "latency_ms", "cost_micros")  # fmt: skip

# The other topics' records map field for field onto their tables (same names, same order).
ALERT_FIELDS = [
    "dedup_key", "rule", "kind", "status", "severity", "scope_type", "scope_id", "value",
    "threshold", "window_s", "summary", "description", "runbook", "runbook_url", "labels",
    "root_cause", "started_at", "ended_at", "emitted_at",
]  # fmt: skip
CONTROL_FIELDS = [
    "kind", "target_id", "scope", "agent_id", "integration", "state", "reason", "measurements",
    "since", "retry_at", "probe_allowance", "sequence", "actor",
]  # fmt: skip
GOVERNANCE_FIELDS = [
    "event_id", "entity_type", "entity_id", "action", "actor", "actor_role", "agent_id",
    "version", "content_hash", "reason", "payload_json", "at", "sequence",
]  # fmt: skip
METRIC_FIELDS = [
    "scope_type", "scope_id", "dimensions", "horizon_s", "window_start", "window_end",
    "emitted_at", "task_count", "success", "failure", "timeout", "cancelled", "denied",
    "failure_rate", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
    "cost_micros", "input_tokens", "output_tokens", "tool_calls", "tool_errors",
    "tool_error_rate", "tool_denied", "tool_short_circuited", "late_events",
]  # fmt: skip
# nullable Avro fields that are numbers in ClickHouse: absent is 0 (1970-01-01 for times)
_ZERO_WHEN_NULL = frozenset({"ended_at", "retry_at", "version"})

COLUMNS: dict[str, list[str]] = {
    "task_events": TASK_COLUMNS,
    "tool_calls": CALL_COLUMNS,
    "alerts": [*ALERT_FIELDS, *SOURCE],
    "breaker_transitions": [*CONTROL_FIELDS, *SOURCE],
    "governance": [*GOVERNANCE_FIELDS, *SOURCE],
    "metric_snapshots": [*METRIC_FIELDS, *SOURCE],
}


def empty(names: list[str]) -> Columns:
    return {n: [] for n in names}


def add_task_event(
    tasks: Columns, calls: Columns, ev: dict[str, Any], topic: str, partition: int, offset: int
) -> None:
    """Append one TaskEvent to the task_events columns and its calls to tool_calls."""
    for f in _TASK_FIELDS:
        v = ev[f]
        tasks[f].append("" if v is None else v)
    tasks["tool_call_count"].append(len(ev["tool_calls"]))
    tasks["attributes"].append(ev["attributes"])
    tasks["_topic"].append(topic)
    tasks["_partition"].append(partition)
    tasks["_offset"].append(offset)
    for call in ev["tool_calls"]:
        calls["event_id"].append(ev["event_id"])
        calls["task_id"].append(ev["task_id"])
        calls["agent_id"].append(ev["agent_id"])
        calls["agent_version"].append(ev["agent_version"])
        calls["agent_role"].append(ev["agent_role"])
        for f in _CALL_FIELDS:
            v = call[f]
            calls[f].append("" if v is None else v)
        calls["_topic"].append(topic)
        calls["_partition"].append(partition)
        calls["_offset"].append(offset)


def _copier(table: str, fields: list[str]) -> Adder:
    def add(cols: dict[str, Columns], rec: dict[str, Any], topic: str, p: int, off: int) -> None:
        out = cols[table]
        for f in fields:
            v = rec[f]
            if v is None:
                v = 0 if f in _ZERO_WHEN_NULL else ""
            out[f].append(v)
        out["_topic"].append(topic)
        out["_partition"].append(p)
        out["_offset"].append(off)

    return add


Adder = Callable[[dict[str, Columns], dict[str, Any], str, int, int], None]


def _add_task(cols: dict[str, Columns], rec: dict[str, Any], topic: str, p: int, off: int) -> None:
    add_task_event(cols["task_events"], cols["tool_calls"], rec, topic, p, off)


@dataclass(frozen=True)
class Route:
    """One source topic: the property of ``Topics`` naming it, its Avro record, its tables."""

    topic_attr: str
    record: str
    tables: tuple[str, ...]
    add: Adder


ROUTES: tuple[Route, ...] = (
    Route("task_events", "TaskEvent", ("task_events", "tool_calls"), _add_task),
    Route("alerts", "Alert", ("alerts",), _copier("alerts", ALERT_FIELDS)),
    Route(
        "control",
        "ControlMessage",
        ("breaker_transitions",),
        _copier("breaker_transitions", CONTROL_FIELDS),
    ),
    Route(
        "governance", "GovernanceEvent", ("governance",), _copier("governance", GOVERNANCE_FIELDS)
    ),
    Route(
        "metrics",
        "MetricSnapshot",
        ("metric_snapshots",),
        _copier("metric_snapshots", METRIC_FIELDS),
    ),
)
TABLES: tuple[str, ...] = tuple(t for r in ROUTES for t in r.tables)
