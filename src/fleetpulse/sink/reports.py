"""``fleetpulse report``: the questions analysts and compliance ask, as SQL over the sink's tables.

- ``daily``: how many tasks each agent completed on a day, what failed, what it cost, and which
  integration caused the most errors. Counts come from the exact daily rollup, latency
  quantiles from the per-minute rollups: a day's report reads thousands of rows, not millions.
- ``agent ID``: one agent's days per version, its latest failures, the integrations it used.
- ``integration NAME``: hour by hour calls, errors and latency; which agents and error types;
  its breaker transitions.
- ``audit``: what an agent did to a record between two instants, call by call, with the task
  each call belonged to, and the governance actions on that agent in the same span.

Raw rows are read filtered first, then deduplicated on their id (``LIMIT 1 BY``): the same
answer as the ``*_v`` views (``FINAL``), without merging the whole table first.

Figures are defined as the processors define them: failed = failure + timeout; an
integration's error rate = (error + timeout) / attempted calls (denied and short-circuited
calls never reached it); latency quantiles over attempted calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from fleetpulse.contract.sql import quote
from fleetpulse.contract.sql import time_literal as _ts
from fleetpulse.sink.query import Analyst, Table


@dataclass
class Section:
    title: str
    table: Table


def _once(db: str, table: str, key: str, where: str) -> str:
    """``table``'s rows matching ``where``, each id once (a replay's duplicate hidden)."""
    return f"(SELECT * FROM {db}.{table} WHERE {where} LIMIT 1 BY {key})"


def daily(analyst: Analyst, db: str, day: date) -> list[Section]:
    d = quote(day.isoformat())
    agents = analyst.table(f"""
        SELECT agent_id, versions, tasks, success, failed, cancelled, denied,
               round(failed / tasks, 4) AS failure_rate,
               round(cost_micros / 1e6, 6) AS cost_usd,
               round(q[1], 1) AS p50_ms, round(q[3], 1) AS p99_ms, tool_calls
        FROM (
            SELECT agent_id, arraySort(groupUniqArray(agent_version)) AS versions,
                   sum(tasks) AS tasks, sum(success) AS success,
                   sum(failure) + sum(timeout) AS failed, sum(cancelled) AS cancelled,
                   sum(denied) AS denied, sum(cost_micros) AS cost_micros,
                   sum(tool_calls) AS tool_calls
            FROM {db}.agent_version_daily WHERE day = toDate({d}) GROUP BY agent_id
        ) AS d
        LEFT JOIN (
            SELECT agent_id, quantilesTDigestMerge(0.5, 0.9, 0.99)(duration_ms) AS q
            FROM {db}.agent_minute
            WHERE minute >= toDateTime(toDate({d}), 'UTC')
              AND minute < toDateTime(toDate({d}) + 1, 'UTC')
            GROUP BY agent_id
        ) AS m USING (agent_id)
        ORDER BY tasks DESC, agent_id""")
    integrations = _integration_totals(
        analyst,
        db,
        f"minute >= toDateTime(toDate({d}), 'UTC') AND minute < toDateTime(toDate({d}) + 1, 'UTC')",
    )
    return [
        Section(f"agents on {day.isoformat()} (UTC)", agents),
        Section("integrations by errors", integrations),
    ]


def _integration_totals(analyst: Analyst, db: str, where: str) -> Table:
    return analyst.table(f"""
        SELECT integration, calls, errors, timeouts, denied, short_circuited,
               round((errors + timeouts) / greatest(calls - denied - short_circuited, 1), 4)
                   AS error_rate,
               round(q[1], 1) AS p50_ms, round(q[3], 1) AS p99_ms
        FROM (
            SELECT integration, countMerge(calls) AS calls, sumMerge(errors) AS errors,
                   sumMerge(timeouts) AS timeouts, sumMerge(denied) AS denied,
                   sumMerge(short_circuited) AS short_circuited,
                   quantilesTDigestIfMerge(0.5, 0.9, 0.99)(latency_ms) AS q
            FROM {db}.integration_minute WHERE {where} GROUP BY integration
        )
        ORDER BY errors + timeouts DESC, integration""")


def agent(analyst: Analyst, db: str, agent_id: str, since: date, until: date) -> list[Section]:
    a, lo, hi = quote(agent_id), quote(since.isoformat()), quote(until.isoformat())
    days = analyst.table(f"""
        SELECT day, agent_version, sum(tasks) AS tasks, sum(success) AS success,
               sum(failure) + sum(timeout) AS failed,
               round(failed / tasks, 4) AS failure_rate,
               round(sum(cost_micros) / 1e6, 6) AS cost_usd,
               round(sum(duration_ms_sum) / tasks, 1) AS mean_ms
        FROM {db}.agent_version_daily
        WHERE agent_id = {a} AND day BETWEEN toDate({lo}) AND toDate({hi})
        GROUP BY day, agent_version ORDER BY day, agent_version""")
    span = (
        f"agent_id = {a} AND ended_at >= toDateTime64(toDate({lo}), 6, 'UTC') "
        f"AND ended_at < toDateTime64(toDate({hi}) + 1, 6, 'UTC')"
    )
    failures = analyst.table(f"""
        SELECT ended_at, task_id, task_type, agent_version, outcome, error_type,
               round(duration_ms, 1) AS duration_ms
        FROM {_once(db, "task_events", "event_id", f"{span} AND outcome != 'success'")}
        ORDER BY ended_at DESC, task_id LIMIT 20""")
    calls = analyst.table(f"""
        SELECT integration, count() AS calls,
               countIf(status IN ('error', 'timeout')) AS errors,
               countIf(status = 'denied') AS denied,
               countIf(status = 'short_circuited') AS short_circuited,
               round(quantileIf(0.99)(latency_ms, status IN ('ok', 'error', 'timeout')), 1)
                   AS p99_ms
        FROM {_once(db, "tool_calls", "call_id", span.replace("ended_at", "started_at"))}
        GROUP BY integration ORDER BY calls DESC, integration""")
    return [
        Section(f"{agent_id}: days by version", days),
        Section(f"{agent_id}: latest tasks that did not succeed", failures),
        Section(f"{agent_id}: integrations", calls),
    ]


def integration(
    analyst: Analyst, db: str, name: str, since: datetime, until: datetime
) -> list[Section]:
    i = quote(name)
    span = f"minute >= toStartOfMinute({_ts(since)}) AND minute < {_ts(until)}"
    hours = analyst.table(f"""
        SELECT hour, calls, failed, denied, short_circuited,
               round(q[1], 1) AS p50_ms, round(q[3], 1) AS p99_ms
        FROM (
            SELECT toStartOfHour(minute) AS hour, countMerge(calls) AS calls,
                   sumMerge(errors) + sumMerge(timeouts) AS failed,
                   sumMerge(denied) AS denied, sumMerge(short_circuited) AS short_circuited,
                   quantilesTDigestIfMerge(0.5, 0.9, 0.99)(latency_ms) AS q
            FROM {db}.integration_minute WHERE integration = {i} AND {span}
            GROUP BY hour
        )
        ORDER BY hour""")
    calls_span = f"integration = {i} AND started_at >= {_ts(since)} AND started_at < {_ts(until)}"
    agents = analyst.table(f"""
        SELECT agent_id, count() AS calls, countIf(status IN ('error', 'timeout')) AS failed,
               round(failed / greatest(countIf(status IN ('ok', 'error', 'timeout')), 1), 4)
                   AS error_rate,
               topKIf(3)(error_type, error_type != '') AS top_error_types
        FROM {_once(db, "tool_calls", "call_id", calls_span)}
        GROUP BY agent_id ORDER BY failed DESC, calls DESC, agent_id LIMIT 50""")
    breakers = analyst.table(f"""
        SELECT since, target_id, state, actor, reason
        FROM {db}.breaker_transitions_v
        WHERE integration = {i} AND since >= {_ts(since)} AND since < {_ts(until)}
        ORDER BY since, sequence""")
    return [
        Section(f"{name}: by hour", hours),
        Section(f"{name}: agents by failed calls", agents),
        Section(f"{name}: breaker transitions", breakers),
    ]


def audit(
    analyst: Analyst, db: str, agent_id: str, target: str, since: datetime, until: datetime
) -> list[Section]:
    a, t = quote(agent_id), quote(target)
    calls_where = (
        f"agent_id = {a} AND target = {t} "
        f"AND started_at >= {_ts(since)} AND started_at < {_ts(until)}"
    )
    calls = analyst.table(f"""
        SELECT c.started_at AS at, c.integration AS integration, c.operation AS operation,
               c.access AS access, c.status AS status, c.error_type AS error_type,
               round(c.latency_ms, 1) AS latency_ms, c.agent_version AS agent_version,
               c.task_id AS task_id, t.task_type AS task_type, t.outcome AS task_outcome,
               t.trace_id AS trace_id, c.call_id AS call_id
        FROM {_once(db, "tool_calls", "call_id", calls_where)} AS c
        LEFT JOIN (
            SELECT task_id, task_type, outcome, trace_id FROM {db}.task_events
            WHERE agent_id = {a} AND ended_at >= {_ts(since)}
              AND ended_at < {_ts(until + timedelta(days=1))}
              AND task_id IN (SELECT task_id FROM {db}.tool_calls WHERE {calls_where})
            LIMIT 1 BY task_id
        ) AS t ON c.task_id = t.task_id
        ORDER BY at, call_id""")
    governance = analyst.table(f"""
        SELECT at, entity_type, entity_id, action, actor, actor_role, version, reason
        FROM {db}.governance_v
        WHERE agent_id = {a} AND at >= {_ts(since)} AND at < {_ts(until)}
        ORDER BY at, sequence""")
    return [
        Section(f"{agent_id} on {target}: calls", calls),
        Section(f"{agent_id}: governance actions in the same span", governance),
    ]
