"""Phase 1 in plain Python, record by record: the executable definition of what the native
pass (``native.py``) computes. It is the oracle of ``tests/unit/processors/test_ingest.py`` and
never runs on a hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fleetpulse.events.codec import AvroCodec
from fleetpulse.events.task_event import read_task_event
from fleetpulse.processors.ingest.cells import CellKey, Partials, PartitionProgress
from fleetpulse.processors.ingest.params import IngestParams, Where
from fleetpulse.processors.windows.aggregate import COUNTERS
from fleetpulse.processors.windows.sketch import bin_key
from fleetpulse.semantics import ATTEMPTED_STATUSES, CALL_ERROR_STATUSES

_N = len(COUNTERS)
_AT = {name: i for i, name in enumerate(COUNTERS)}


class _Acc:
    __slots__ = ("bins", "counters", "zero")

    def __init__(self) -> None:
        self.counters = [0] * _N
        self.zero = 0
        self.bins: dict[int, int] = {}

    def latency(self, value: float) -> None:
        key = bin_key(value)
        if key is None:
            self.zero += 1
        else:
            self.bins[key] = self.bins.get(key, 0) + 1


def reference_partials(
    partitions: Sequence[int],
    values: Sequence[bytes],
    params: IngestParams,
    codec: AvroCodec | None = None,
    *,
    where: Where | None = None,
) -> Partials:
    """Decode each value with fastavro, check it, and aggregate it, exactly as the native
    pass does."""
    codec = codec or AvroCodec(logical_types=False)
    rejected: list[tuple[int, str]] = []
    rows: list[tuple[int, dict[str, Any]]] = []
    for row, (p, value) in enumerate(zip(partitions, values, strict=True)):
        ev, problem = read_task_event(
            codec,
            value,
            now_us=params.now_us,
            max_future_us=params.max_future_us,
            topic=where.topic if where else None,
            partition=p,
            offset=where.offsets[row] if where else None,
        )
        if ev is None:
            rejected.append((row, problem or ""))
            continue
        rows.append((p, ev))
    out = aggregate_events(rows, params)
    out.rejected = rejected
    return out


def aggregate_events(rows: Sequence[tuple[int, dict[str, Any]]], params: IngestParams) -> Partials:
    """Cells of decoded, countable events given as (source partition, event), in offset order
    per partition."""
    out = Partials()
    acc: dict[CellKey, _Acc] = {}
    marks = dict(params.watermarks)
    w0 = params.bucket_us
    for p, ev in rows:
        prog = out.progress.setdefault(p, PartitionProgress(watermark_us=marks.get(p)))
        prog.events += 1
        ts, wm = ev["ended_at"], marks.get(p)
        late = wm is not None and ts < wm - params.lateness_us
        if not late and (wm is None or ts > wm):
            marks[p] = prog.watermark_us = ts
        at = wm if late and wm is not None else ts
        _add_event(acc, ev, p, at - at % w0, late)
        prog.late += late
    for key, a in acc.items():
        keys = sorted(a.bins)
        out.cells.append((key, tuple(a.counters), a.zero, keys, [a.bins[k] for k in keys]))
    return out


def _add_event(
    acc: dict[CellKey, _Acc], ev: dict[str, Any], p: int, bucket: int, late: bool
) -> None:
    agent = ev["agent_id"]
    task_scopes = [
        ("agent", agent, ""),
        ("agent_version", agent, ev["agent_version"]),
        ("agent_task_type", agent, ev["task_type"]),
    ]
    if ev["model"]:
        task_scopes.append(("model", ev["model"], ""))
    calls = ev["tool_calls"]
    outcome = ev["outcome"]
    for scope, d1, d2 in task_scopes:
        a = _get(acc, (scope, d1, d2, p, bucket))
        c = a.counters
        if late:
            c[_AT["late_events"]] += 1
            continue
        c[_AT["task_count"]] += 1
        c[_AT[outcome]] += 1
        c[_AT["cost_micros"]] += ev["cost_micros"]
        c[_AT["input_tokens"]] += ev["input_tokens"]
        c[_AT["output_tokens"]] += ev["output_tokens"]
        c[_AT["tool_calls"]] += len(calls)
        c[_AT["tool_errors"]] += sum(1 for x in calls if x["status"] in CALL_ERROR_STATUSES)
        c[_AT["tool_denied"]] += sum(1 for x in calls if x["status"] == "denied")
        c[_AT["tool_short_circuited"]] += sum(1 for x in calls if x["status"] == "short_circuited")
        a.latency(ev["duration_ms"])
    seen: set[str] = set()
    for call in calls:
        name, status = call["integration"], call["status"]
        first = name not in seen
        seen.add(name)
        for key in (
            ("integration", name, "", p, bucket),
            ("agent_integration", agent, name, p, bucket),
        ):
            a = _get(acc, key)
            c = a.counters
            if late:
                c[_AT["late_events"]] += first
                continue
            if first:
                c[_AT["task_count"]] += 1
                c[_AT[outcome]] += 1
            c[_AT["cost_micros"]] += call["cost_micros"]
            c[_AT["tool_calls"]] += 1
            c[_AT["tool_errors"]] += status in CALL_ERROR_STATUSES
            c[_AT["tool_denied"]] += status == "denied"
            c[_AT["tool_short_circuited"]] += status == "short_circuited"
            if status in ATTEMPTED_STATUSES:
                a.latency(call["latency_ms"])


def _get(acc: dict[CellKey, _Acc], key: CellKey) -> _Acc:
    a = acc.get(key)
    if a is None:
        a = acc[key] = _Acc()
    return a
