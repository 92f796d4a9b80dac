"""The demo's closing report, read from ClickHouse as an analyst would: the fleet, the
breakers, the alerts, the approvals, and one audit question.

Every section is a plain query on the sink's tables (``fleetpulse sql`` runs the same), so the
report proves the data made it all the way through Kafka, the processors and the sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleetpulse.contract.sql import time_literal as _ts
from fleetpulse.sink import reports
from fleetpulse.sink.query import Analyst, Table
from fleetpulse.sink.reports import Section


@dataclass
class DemoReport:
    sections: list[Section]

    def section(self, title_start: str) -> Table:
        return next(s.table for s in self.sections if s.title.startswith(title_start))

    def records(self, title_start: str) -> list[dict[str, Any]]:
        return self.section(title_start).records()


def build(
    analyst: Analyst, db: str, since: datetime, until: datetime, audit: dict[str, str]
) -> DemoReport:
    span = f"ended_at >= {_ts(since)} AND ended_at < {_ts(until)}"
    fleet = analyst.table(f"""
        SELECT agent_id AS agent, count() AS tasks, countIf(outcome != 'success') AS failed,
               round(100 * failed / tasks, 1) AS failed_pct,
               round(quantile(0.95)(duration_ms)) AS p95_ms,
               round(sum(cost_micros) / 1e6, 4) AS cost_usd,
               arrayStringConcat(arraySort(groupUniqArray(agent_version)), ',') AS versions
        FROM {db}.task_events_v WHERE {span}
        GROUP BY agent_id ORDER BY agent_id""")
    breakers = analyst.table(f"""
        SELECT since AS at, target_id AS breaker, state, actor, reason
        FROM {db}.breaker_transitions_v
        WHERE since >= {_ts(since)} AND kind = 'breaker'
        ORDER BY since, sequence""")
    saved = analyst.table(f"""
        SELECT integration, countIf(status = 'short_circuited') AS calls_saved,
               countIf(status IN ('error', 'timeout')) AS calls_failed,
               countIf(status = 'denied') AS calls_denied, count() AS calls
        FROM {db}.tool_calls_v WHERE started_at >= {_ts(since)}
        GROUP BY integration ORDER BY calls_saved DESC, integration""")
    alerts = analyst.table(f"""
        SELECT dedup_key,
               argMax(severity, emitted_at) AS severity,
               minIf(emitted_at, status = 'firing') AS fired,
               if(countIf(status = 'resolved') > 0,
                  toString(maxIf(emitted_at, status = 'resolved')), 'still firing') AS resolved,
               argMaxIf(labels['suppressed'], emitted_at, status = 'firing') AS quiet,
               argMaxIf(root_cause, emitted_at, status = 'firing') AS root_cause,
               argMinIf(summary, emitted_at, status = 'firing') AS summary
        FROM {db}.alerts_v WHERE emitted_at >= {_ts(since)}
        GROUP BY dedup_key ORDER BY fired""")
    approvals = analyst.table(f"""
        SELECT agent_id AS agent, JSONExtractString(payload_json, 'decision') AS decision,
               count() AS n, any(actor) AS decided_by
        FROM {db}.governance_v
        WHERE at >= {_ts(since)} AND action = 'approval_decided'
        GROUP BY agent, decision ORDER BY agent, decision""")
    sections = [
        Section("Fleet: tasks, failures, p95 latency and cost per agent", fleet),
        Section("Breakers: every transition (opened, probed, closed)", breakers),
        Section("Calls per integration (saved = short-circuited by an open breaker)", saved),
        Section("Alerts: fired, resolved, root cause", alerts),
        Section("Approvals: decided by a human (the simulated approver)", approvals),
    ]
    if audit.get("agent") and audit.get("target"):
        sections += reports.audit(analyst, db, audit["agent"], audit["target"], since, until)
    return DemoReport(sections)


def count_events(analyst: Analyst, db: str, since: datetime) -> tuple[int, int]:
    """(rows, distinct event ids) of the task events since ``since``, after dedup."""
    t = analyst.table(f"""
        SELECT count() AS n, uniqExact(event_id) AS ids FROM {db}.task_events_v
        WHERE ended_at >= {_ts(since)}""")
    n, ids = t.rows[0]
    return int(n), int(ids)


def count_alerts(analyst: Analyst, db: str, since: datetime) -> int:
    """Alert lifecycle events emitted since ``since``, after dedup."""
    t = analyst.table(f"SELECT count() FROM {db}.alerts_v WHERE emitted_at >= {_ts(since)}")
    return int(t.rows[0][0])


def event_ids(analyst: Analyst, db: str, since: datetime) -> set[str]:
    t = analyst.table(f"SELECT event_id FROM {db}.task_events_v WHERE ended_at >= {_ts(since)}")
    return {str(r[0]) for r in t.rows}
