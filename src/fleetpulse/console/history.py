"""What the console reads from ClickHouse, through the analysts' read-only path
(`fleetpulse.sink.query`: every statement is made read-only before it runs).

Figures come from the per-minute rollups (``agent_minute``, ``integration_minute``) so a page
reads thousands of rows, not millions. A label selector (a task attribute such as
``team=support``) is not in the rollups: with one, the same figures come from the raw
``task_events`` rows instead. Drill-downs (recent tasks, a task's calls) read raw rows by
their primary key. Figures are defined as the processors define them: failed = failure +
timeout; an integration's error rate counts attempted calls only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fleetpulse.contract.sql import quote
from fleetpulse.contract.sql import time_literal as _ts
from fleetpulse.sink.query import Analyst

RANGES = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
BUCKETS = {"15m": 60, "1h": 60, "24h": 1800, "7d": 3 * 3600}
_LABEL = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class Filter:
    """The console's global filter: a period ending now and task-attribute selectors."""

    range: str = "1h"
    labels: tuple[tuple[str, str], ...] = ()
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def parse(cls, range_: str | None, label: str | None, now: datetime | None = None) -> Filter:
        """From the query string: ``range`` one of RANGES, ``label`` as ``k=v,k2=v2``.

        Raises:
            ValueError: an unknown range or a selector that is not ``key=value``.
        """
        r = range_ or "1h"
        if r not in RANGES:
            raise ValueError(f"range {r!r}: choose one of {', '.join(RANGES)}")
        pairs = []
        for part in (label or "").split(","):
            if not part.strip():
                continue
            k, sep, v = part.partition("=")
            if not sep or not _LABEL.match(k.strip()) or not v.strip() or len(v) > 256:
                raise ValueError(f"label selector {part!r}: write key=value, e.g. team=support")
            pairs.append((k.strip(), v.strip()))
        return cls(r, tuple(pairs), now or datetime.now(UTC))

    @property
    def since(self) -> datetime:
        return self.now - timedelta(seconds=RANGES[self.range])

    @property
    def bucket_s(self) -> int:
        return BUCKETS[self.range]

    @property
    def label_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels)

    def query(self, **extra: str) -> str:
        """The filter as a query string, for links that keep it."""
        params = {"range": self.range} | ({"label": self.label_text} if self.labels else {})
        return urlencode(params | extra)


@dataclass(frozen=True)
class _Source:
    table: str
    t: str
    tasks: str
    failed: str
    cost: str
    q: str


_ROLLUP = _Source(
    "agent_minute", "minute", "countMerge(tasks)", "sumMerge(failure) + sumMerge(timeout)",
    "sumMerge(cost_micros)", "quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_ms)",
)  # fmt: skip
_RAW = _Source(
    "task_events", "ended_at", "count()", "countIf(outcome IN ('failure', 'timeout'))",
    "sum(cost_micros)", "quantilesTDigest(0.5, 0.95, 0.99)(duration_ms)",
)  # fmt: skip


# migration 0004: the same per-minute states ordered by time first, so that a short period
# across the fleet reads its own rows only (agent_minute, agent first, reads them all; over a
# day or more, reading them all in agent order is the cheaper way); and the whole fleet per
# minute, for the fleet's plots and tiles (a row per minute to merge, not one per agent)
_FLEET = replace(_ROLLUP, table="fleet_minute")
_TOTAL = replace(_ROLLUP, table="fleet_total_minute")


def _source(f: Filter, agent_id: str | None = None, *, per_agent: bool = True) -> _Source:
    if f.labels:
        return _RAW
    if agent_id is not None:
        return _ROLLUP
    if not per_agent:
        return _TOTAL
    return _FLEET if RANGES[f.range] <= 3600 else _ROLLUP


def _where(
    f: Filter, src: _Source, agent_id: str | None = None, since: datetime | None = None
) -> str:
    lo = since or f.since
    parts = [f"{src.t} >= {_ts(lo)}", f"{src.t} < {_ts(f.now)}"]
    if src is not _RAW:  # minutes: the bucket the period starts in counts whole
        parts[0] = f"{src.t} >= toStartOfMinute({_ts(lo)})"
    if agent_id is not None:
        parts.insert(0, f"agent_id = {quote(agent_id)}")
    parts += [f"attributes[{quote(k)}] = {quote(v)}" for k, v in f.labels]
    return " AND ".join(parts)


def series(analyst: Analyst, db: str, f: Filter, agent_id: str | None = None) -> dict[str, Any]:
    """Tasks, failure rate, p50/p95/p99 and cost per bucket over the period, gaps as None."""
    src = _source(f, agent_id, per_agent=False)
    rows = analyst.table(f"""
        SELECT toUnixTimestamp(toStartOfInterval({src.t}, INTERVAL {f.bucket_s} SECOND)) AS ts,
               {src.tasks} AS tasks, {src.failed} AS failed, {src.cost} AS cost, {src.q} AS q
        FROM {db}.{src.table} WHERE {_where(f, src, agent_id)}
        GROUP BY ts ORDER BY ts""").records()
    by_ts = {int(r["ts"]): r for r in rows}
    start = int(f.since.timestamp()) // f.bucket_s * f.bucket_s
    xs = list(range(start, int(f.now.timestamp()) + 1, f.bucket_s))
    out: dict[str, Any] = {"xs": [float(x) for x in xs]}
    for key in ("tasks", "failure_rate", "p50", "p95", "p99", "cost_usd"):
        out[key] = []
    for x in xs:
        r = by_ts.get(x)
        tasks = int(r["tasks"]) if r else 0
        out["tasks"].append(float(tasks))
        out["failure_rate"].append(int(r["failed"]) / tasks if r and tasks else None)
        q = r["q"] if r and tasks else [None, None, None]
        for name, v in zip(("p50", "p95", "p99"), q, strict=True):
            out[name].append(None if v is None else float(v))
        out["cost_usd"].append(int(r["cost"]) / 1e6 if r else 0.0)
    return out


def agent_totals(
    analyst: Analyst,
    db: str,
    f: Filter,
    *,
    since: datetime | None = None,
    agent_id: str | None = None,
    quantiles: bool = True,
) -> dict[str, dict[str, Any]]:
    """agent id -> tasks, failed, failure_rate, cost_usd, p95 over the period (or since);
    one agent's only with ``agent_id``; p95 None without ``quantiles`` (merging t-digests is
    the costly part)."""
    src = _source(f, agent_id)
    q = src.q if quantiles else "[0, 0, 0]"
    rows = analyst.table(f"""
        SELECT agent_id, {src.tasks} AS tasks, {src.failed} AS failed, {src.cost} AS cost,
               {q} AS q
        FROM {db}.{src.table} WHERE {_where(f, src, agent_id, since=since)}
        GROUP BY agent_id""").records()
    out = {}
    for r in rows:
        tasks = int(r["tasks"])
        out[str(r["agent_id"])] = {
            "tasks": tasks,
            "failed": int(r["failed"]),
            "failure_rate": int(r["failed"]) / tasks if tasks else 0.0,
            "cost_usd": int(r["cost"]) / 1e6,
            "p95": float(r["q"][1]) if tasks and quantiles else None,
        }
    return out


def cost_today(analyst: Analyst, db: str, f: Filter) -> dict[str, float]:
    """agent id -> USD spent since midnight UTC: from the exact daily rollup (a row per agent
    version), or from raw rows when label selectors apply."""
    midnight = f.now.replace(hour=0, minute=0, second=0, microsecond=0)
    if f.labels:
        where = _where(f, _RAW, since=midnight)
        sql = f"SELECT agent_id, sum(cost_micros) AS cost FROM {db}.task_events WHERE {where}"
    else:
        day = quote(midnight.date().isoformat())
        sql = (
            f"SELECT agent_id, sum(cost_micros) AS cost FROM {db}.agent_version_daily "
            f"WHERE day = toDate({day})"
        )
    rows = analyst.table(f"{sql} GROUP BY agent_id").records()
    return {str(r["agent_id"]): int(r["cost"]) / 1e6 for r in rows}


def fleet_totals(analyst: Analyst, db: str, f: Filter) -> dict[str, Any]:
    src = _source(f, per_agent=False)
    r = analyst.table(f"""
        SELECT {src.tasks} AS tasks, {src.failed} AS failed, {src.cost} AS cost, {src.q} AS q
        FROM {db}.{src.table} WHERE {_where(f, src)}""").records()[0]
    tasks = int(r["tasks"])
    return {
        "tasks": tasks,
        "tasks_per_min": tasks / (RANGES[f.range] / 60),
        "failure_rate": int(r["failed"]) / tasks if tasks else 0.0,
        "p95": float(r["q"][1]) if tasks else None,
        "cost_usd": int(r["cost"]) / 1e6,
    }


def sparklines(analyst: Analyst, db: str, f: Filter, points: int = 12) -> dict[str, list[float]]:
    """agent id -> tasks per bucket over the period, ``points`` buckets."""
    src = _source(f)
    step = max(RANGES[f.range] // points, 60)
    rows = analyst.table(f"""
        SELECT agent_id, groupArray((ts, tasks)) AS points FROM (
            SELECT agent_id,
                   toUnixTimestamp(toStartOfInterval({src.t}, INTERVAL {step} SECOND)) AS ts,
                   {src.tasks} AS tasks
            FROM {db}.{src.table} WHERE {_where(f, src)} GROUP BY agent_id, ts
        ) GROUP BY agent_id""").records()
    start = int(f.since.timestamp()) // step * step
    xs = range(start, int(f.now.timestamp()) + 1, step)
    out = {}
    for r in rows:
        pts = {int(p[0]): float(p[1]) for p in r["points"]}
        out[str(r["agent_id"])] = [pts.get(x, 0.0) for x in xs]
    return out


def versions(analyst: Analyst, db: str, f: Filter, agent_id: str) -> list[dict[str, Any]]:
    """The agent's versions side by side over the period: tasks, failure rate, p95, cost per
    task, first and last task."""
    rows = analyst.table(f"""
        SELECT agent_version, count() AS tasks,
               countIf(outcome IN ('failure', 'timeout')) AS failed,
               quantileTDigest(0.95)(duration_ms) AS p95, sum(cost_micros) AS cost,
               toString(min(ended_at)) AS first, toString(max(ended_at)) AS last
        FROM {db}.task_events WHERE {_where(f, _RAW, agent_id)}
        GROUP BY agent_version ORDER BY min(ended_at)""").records()
    for r in rows:
        tasks = int(r["tasks"]) or 1
        r["failure_rate"] = int(r["failed"]) / tasks
        r["cost_per_task_usd"] = int(r["cost"]) / 1e6 / tasks
    return rows


def agent_integrations(analyst: Analyst, db: str, f: Filter, agent_id: str) -> list[dict[str, Any]]:
    span = (
        f"agent_id = {quote(agent_id)} AND started_at >= {_ts(f.since)} "
        f"AND started_at < {_ts(f.now)}"
    )
    return analyst.table(f"""
        SELECT integration, count() AS calls,
               countIf(status IN ('error', 'timeout')) AS errors,
               errors / greatest(countIf(status IN ('ok', 'error', 'timeout')), 1) AS error_rate,
               quantileIf(0.95)(latency_ms, status IN ('ok', 'error', 'timeout')) AS p95_ms
        FROM {db}.tool_calls WHERE {span}
        GROUP BY integration ORDER BY calls DESC, integration""").records()


def recent_tasks(
    analyst: Analyst, db: str, f: Filter, agent_id: str, limit: int = 25
) -> list[dict[str, Any]]:
    return analyst.table(f"""
        SELECT toString(ended_at) AS ended, task_id, task_type, agent_version, outcome,
               error_type, round(duration_ms, 1) AS duration_ms, tool_call_count,
               round(cost_micros / 1e6, 6) AS cost_usd
        FROM {db}.task_events WHERE {_where(f, _RAW, agent_id)}
        ORDER BY ended_at DESC LIMIT 1 BY event_id LIMIT {int(limit)}""").records()


def task(analyst: Analyst, db: str, agent_id: str, task_id: str) -> dict[str, Any] | None:
    a, t = quote(agent_id), quote(task_id)
    found = analyst.table(f"""
        SELECT toString(started_at) AS started_at, toString(ended_at) AS ended_at, task_id,
               task_type, agent_version, outcome, error_type, duration_ms, input_hash,
               trace_id, parent_task_id, upstream_agent_id, model, input_tokens,
               output_tokens, round(cost_micros / 1e6, 6) AS cost_usd, attributes
        FROM {db}.task_events WHERE agent_id = {a} AND task_id = {t} LIMIT 1""").records()
    if not found:
        return None
    calls = analyst.table(f"""
        SELECT call_id, integration, operation, access, target, status, error_type,
               toUnixTimestamp64Micro(started_at) AS start_us, latency_ms
        FROM {db}.tool_calls WHERE agent_id = {a} AND task_id = {t}
        ORDER BY started_at, call_id LIMIT 1 BY call_id""").records()
    first = min((int(c["start_us"]) for c in calls), default=0)
    for c in calls:
        c["offset_ms"] = (int(c["start_us"]) - first) / 1000
        c["label"] = f"{c['integration']}.{c['operation']}"
    return found[0] | {"calls": calls}


def integrations(analyst: Analyst, db: str, f: Filter) -> list[dict[str, Any]]:
    span = f"minute >= toStartOfMinute({_ts(f.since)}) AND minute < {_ts(f.now)}"
    return analyst.table(f"""
        SELECT integration, calls, errors, denied, short_circuited,
               errors / greatest(calls - denied - short_circuited, 1) AS error_rate,
               q[2] AS p95_ms
        FROM (
            SELECT integration, countMerge(calls) AS calls,
                   sumMerge(errors) + sumMerge(timeouts) AS errors, sumMerge(denied) AS denied,
                   sumMerge(short_circuited) AS short_circuited,
                   quantilesTDigestIfMerge(0.5, 0.95, 0.99)(latency_ms) AS q
            FROM {db}.integration_minute WHERE {span} GROUP BY integration
        ) ORDER BY errors DESC, integration""").records()


def transitions(analyst: Analyst, db: str, f: Filter, limit: int = 200) -> list[dict[str, Any]]:
    return analyst.table(f"""
        SELECT toString(since) AS at, target_id, state, actor, reason, measurements
        FROM {db}.breaker_transitions
        WHERE kind = 'breaker' AND since >= {_ts(f.since)} AND since < {_ts(f.now)}
        ORDER BY since DESC, sequence DESC LIMIT 1 BY target_id, sequence
        LIMIT {int(limit)}""").records()


def cost_by(analyst: Analyst, db: str, f: Filter, dimension: str) -> list[dict[str, Any]]:
    """Spend over the period by ``agent_id``, ``model`` or ``integration`` (top 50)."""
    if dimension == "integration":
        span = f"started_at >= {_ts(f.since)} AND started_at < {_ts(f.now)}"
        sql = f"""SELECT integration AS key, count() AS n, sum(cost_micros) AS cost
                  FROM {db}.tool_calls WHERE {span} GROUP BY key"""
    elif dimension in ("agent_id", "model"):
        src = _source(f) if dimension == "agent_id" else _RAW
        sql = f"""SELECT {dimension} AS key, {src.tasks} AS n, {src.cost} AS cost
                  FROM {db}.{src.table} WHERE {_where(f, src)} GROUP BY key"""
    else:
        raise ValueError(f"cost by {dimension!r}: agent_id, model or integration")
    rows = analyst.table(f"SELECT * FROM ({sql}) ORDER BY cost DESC, key LIMIT 50").records()
    return [{"key": r["key"], "n": int(r["n"]), "cost_usd": int(r["cost"]) / 1e6} for r in rows]


def calls_on_target(
    analyst: Analyst, db: str, agent_id: str, target: str, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """What ``agent_id`` did to record ``target`` in [since, until): call by call."""
    where = (
        f"agent_id = {quote(agent_id)} AND target = {quote(target)} "
        f"AND started_at >= {_ts(since)} AND started_at < {_ts(until)}"
    )
    return analyst.table(f"""
        SELECT toString(started_at) AS at, integration, operation, access, status, error_type,
               round(latency_ms, 1) AS latency_ms, agent_version, task_id, call_id
        FROM {db}.tool_calls WHERE {where}
        ORDER BY started_at, call_id LIMIT 1 BY call_id LIMIT 10000""").records()
