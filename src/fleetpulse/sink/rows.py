"""Decoded records to columns, one function per table. Timestamps stay epoch micros (``*_at``
columns); optional strings become '' (no Nullable where a default serves)."""

from __future__ import annotations

from typing import Any

from fleetpulse.sink.backend import Columns

TASK_COLUMNS = [
    "event_id", "agent_id", "agent_version", "agent_role", "task_id", "task_type", "trace_id",
    "parent_task_id", "upstream_agent_id", "input_hash", "outcome", "error_type", "started_at",
    "ended_at", "duration_ms", "model", "provider", "input_tokens", "output_tokens",
    "cached_tokens", "cost_micros", "price_table_version",  # the 22 fields copied as they are
    "tool_call_count", "attributes", "_topic", "_partition", "_offset",
]  # fmt: skip
CALL_COLUMNS = [
    "event_id", "task_id", "call_id", "agent_id", "agent_version", "agent_role", "integration",
    "operation", "access", "target", "status", "error_type", "started_at", "latency_ms",
    "cost_micros", "_topic", "_partition", "_offset",
]  # fmt: skip
_TASK_FIELDS = TASK_COLUMNS[:22]  # straight from the event
_CALL_FIELDS = ("call_id", "integration", "operation", "access", "target", "status",
                "error_type", "started_at", "latency_ms", "cost_micros")  # fmt: skip


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
