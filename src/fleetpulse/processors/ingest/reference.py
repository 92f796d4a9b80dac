"""Phase 1 in plain Python, record by record: the executable definition of what the native
pass (``native.py``) computes. It is the oracle of ``tests/unit/processors/test_ingest.py`` and
never runs on a hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.events.task_event import read_task_event
from fleetpulse.contract.semantics import (
    ATTEMPTED_STATUSES,
    CALL_ERROR_STATUSES,
    FAILED_OUTCOMES,
    FAILING_CALL_STATUSES,
)
from fleetpulse.processors.figures.aggregate import COUNTER_AT, COUNTERS
from fleetpulse.processors.figures.sketch import bin_key
from fleetpulse.processors.ingest.cells import (
    AlertGroups,
    AlertTaskRow,
    CallGroup,
    Cell,
    CellKey,
    Partials,
    PartitionProgress,
    TaskGroup,
)
from fleetpulse.processors.ingest.params import AlertSpec, BreakerSpec, IngestParams, Where

US = 1_000_000

_N = len(COUNTERS)
_AT = COUNTER_AT


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
    cells: list[Cell] = []
    for key, a in acc.items():
        keys = sorted(a.bins)
        cells.append((key, tuple(a.counters), a.zero, keys, [a.bins[k] for k in keys]))
    out.cells = cells
    if params.breakers is not None:
        out.breaker_calls, out.breaker_tasks = _breaker_groups(rows, params.breakers)
    if params.alerts is not None:
        out.alerts = alert_groups([ev for _, ev in rows], params.alerts)
    return out


class _Task:
    """One task scope's alert figures over one second."""

    __slots__ = ("after", "bins", "cost", "failures", "tasks", "via", "zero")

    def __init__(self) -> None:
        self.tasks = self.failures = self.cost = self.zero = 0
        self.bins: dict[int, int] = {}
        self.via: dict[str, int] = {}
        self.after: dict[str, int] = {}

    def row(self, scope: str, d1: str, d2: str, sec: int) -> AlertTaskRow:
        keys, via, after = sorted(self.bins), sorted(self.via), sorted(self.after)
        return (
            scope, d1, d2, sec, self.tasks, self.failures, self.cost, self.zero,
            keys, [self.bins[k] for k in keys], via, [self.via[k] for k in via],
            after, [self.after[k] for k in after],
        )  # fmt: skip


def alert_groups(events: Sequence[dict[str, Any]], spec: AlertSpec) -> AlertGroups:
    """What the alert rules count of decoded, countable events (see ``cells.AlertGroups``)."""
    tasks: dict[tuple[str, str, str, int], _Task] = {}
    calls: dict[tuple[str, str, str, str, str, bool, int], list[int]] = {}
    starts: dict[str, list[int]] = {}
    versions: dict[tuple[str, str], None] = {}
    for ev in events:
        agent, sec = ev["agent_id"], ev["ended_at"] // US // spec.step_s * spec.step_s
        failed = ev["outcome"] in FAILED_OUTCOMES
        key = bin_key(ev["duration_ms"])
        upstream = ev["upstream_agent_id"] or ""
        failing = {
            c["integration"] for c in ev["tool_calls"] if c["status"] in FAILING_CALL_STATUSES
        }
        for d2, scope in (("", "agent"), (ev["agent_version"], "agent_version"),
                          (ev["task_type"], "agent_task_type")):  # fmt: skip
            t = tasks.get((scope, agent, d2, sec))
            if t is None:
                t = tasks[(scope, agent, d2, sec)] = _Task()
            t.tasks += 1
            t.cost += ev["cost_micros"]
            if key is None:
                t.zero += 1
            else:
                t.bins[key] = t.bins.get(key, 0) + 1
            if failed:
                t.failures += 1
                for name in failing:
                    t.via[name] = t.via.get(name, 0) + 1
                if upstream:
                    t.after[upstream] = t.after.get(upstream, 0) + 1
        seen: set[str] = set()
        attributes = ev["attributes"]
        for c in ev["tool_calls"]:
            name, op, status = c["integration"], c["operation"], c["status"]
            approved = attributes.get(f"approval:{name}.{op}", "").endswith(":approved")
            k = (agent, name, ev["agent_role"], op, c["access"], approved, sec)
            n = calls.get(k)
            if n is None:
                n = calls[k] = [0, 0, 0, 0, 0]
            n[0] += name not in seen
            seen.add(name)
            attempted = status in ATTEMPTED_STATUSES
            n[1] += attempted
            n[2] += attempted and status != "ok"
            n[3] += status == "denied"
            n[4] += 1
        starts.setdefault(agent, []).append(ev["started_at"])
        versions[(agent, ev["agent_version"])] = None
    out = AlertGroups(
        tasks=[t.row(*k) for k, t in tasks.items()],
        calls=[(*k, n[0], n[1], n[2], n[3], n[4]) for k, n in calls.items()],
        versions=list(versions),
    )
    if spec.run_gap_us is not None:
        for agent, times in starts.items():
            runs: list[int] = []
            for x in sorted(times):
                if not runs or x - runs[-1] > spec.run_gap_us:
                    runs.append(x)
            out.runs.append((agent, runs))
    return out


def _breaker_groups(
    rows: Sequence[tuple[int, dict[str, Any]]], spec: BreakerSpec
) -> tuple[list[CallGroup], list[TaskGroup]]:
    calls: dict[tuple[int, str, str, str, str | None, int], list[int]] = {}
    tasks: dict[tuple[int, str, str, int], list[int]] = {}
    for p, ev in rows:
        agent = ev["agent_id"]
        if spec.call_slow_ms:
            for call in ev["tool_calls"]:
                status, lat = call["status"], call["latency_ms"]
                if status == "short_circuited":
                    continue
                sec = (call["started_at"] + int(lat * 1000)) // US
                key = (p, agent, call["integration"], status, call["error_type"], sec)
                _count(calls, key, lat, spec.call_slow_ms)
        if spec.task_slow_ms:
            key2 = (p, agent, ev["outcome"], ev["ended_at"] // US)
            _count(tasks, key2, ev["duration_ms"], spec.task_slow_ms)
    return (
        [(*k, n[0], tuple(n[1:])) for k, n in calls.items()],
        [(*k, n[0], tuple(n[1:])) for k, n in tasks.items()],
    )


def _count(groups: dict[Any, list[int]], key: Any, value: float, slow: tuple[float, ...]) -> None:
    n = groups.get(key)
    if n is None:
        n = groups[key] = [0] * (len(slow) + 1)
    n[0] += 1
    for i, t in enumerate(slow, 1):
        n[i] += value >= t


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
