"""Who did what: the audit trail from ClickHouse when the sink runs, else from the log.

Both sources give the same columns. The log also knows whether each event took effect
(``outcome``: ``ok`` or why it was rejected); ClickHouse holds the events as written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleetpulse.contract.governance import GovernanceState
from fleetpulse.contract.limits import LIMIT_MAX, check_epoch
from fleetpulse.contract.sql import quote
from fleetpulse.contract.sql import time_literal as _ts
from fleetpulse.sdk.governance_log import GovernanceLog

COLUMNS = ["at", "actor", "actor_role", "action", "entity_type", "entity_id", "agent_id",
           "version", "reason", "outcome"]  # fmt: skip


@dataclass(frozen=True)
class AuditQuery:
    agent_id: str | None = None
    principal: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 1000

    def __post_init__(self) -> None:
        """Refuse what no audit record can match: times outside 2000-2200, a limit out of
        1 to 100,000 (the API's bounds; the CLI acting directly gets the same refusal)."""
        for name in ("since", "until"):
            t = getattr(self, name)
            if t is not None:
                object.__setattr__(self, name, check_epoch(t, name))
        if not 1 <= self.limit <= LIMIT_MAX:
            raise ValueError(f"limit must be 1 to {LIMIT_MAX}, not {self.limit}")

    def where_sql(self) -> str:
        parts = ["1"]
        if self.agent_id:
            parts.append(f"(agent_id = {quote(self.agent_id)})")
        if self.principal:
            parts.append(f"(actor = {quote(self.principal)})")
        if self.since:
            parts.append(f"at >= {_ts(self.since)}")
        if self.until:
            parts.append(f"at < {_ts(self.until)}")
        return " AND ".join(parts)


def from_state(state: GovernanceState, q: AuditQuery) -> list[dict[str, Any]]:
    since = _us(q.since) if q.since else None
    until = _us(q.until) if q.until else None
    rows = []
    for e in state.audit:
        if q.agent_id and e.get("agent_id") != q.agent_id:
            continue
        if q.principal and e["actor"] != q.principal:
            continue
        if (since is not None and e["at"] < since) or (until is not None and e["at"] >= until):
            continue
        outcome = state.outcomes.get(e["event_id"])
        rows.append(
            {
                "at": datetime.fromtimestamp(e["at"] / 1e6, UTC).isoformat(),
                "actor": e["actor"],
                "actor_role": e["actor_role"],
                "action": e["action"],
                "entity_type": e["entity_type"],
                "entity_id": e["entity_id"],
                "agent_id": e.get("agent_id") or "",
                "version": e.get("version") or 0,
                "reason": e.get("reason") or "",
                "outcome": outcome or "ok",
            }
        )
    return rows[-q.limit :]


def from_clickhouse(analyst: Any, db: str, q: AuditQuery) -> list[dict[str, Any]]:
    # the time goes out as text under another name: an alias `at` would shadow the column
    # in WHERE, and a String compared with a DateTime64 is an error
    rows = analyst.table(f"""
        SELECT * FROM (
            SELECT toString(at) AS at_text, actor, actor_role, action, entity_type, entity_id,
                   agent_id, version, reason, 'recorded' AS outcome, sequence, at AS at_time
            FROM {db}.governance
            WHERE {q.where_sql()}
            ORDER BY at DESC, sequence DESC
            LIMIT 1 BY event_id
            LIMIT {int(q.limit)}
        ) ORDER BY at_time, sequence""").records()
    return [{c: r["at_text"] if c == "at" else r[c] for c in COLUMNS} for r in rows]


def _us(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def audit_source(
    log: GovernanceLog, database: str, clickhouse: Callable[[], Any | None]
) -> Callable[[AuditQuery], list[dict[str, Any]]]:
    """Audit answers from ClickHouse when ``clickhouse()`` opens a read-only analyst (the
    sink's store answers: ``sink.query.running_analyst``), else from the governance log this
    process follows."""

    def audit(q: AuditQuery) -> list[dict[str, Any]]:
        analyst = clickhouse()
        if analyst is not None:
            try:
                return from_clickhouse(analyst, database, q)
            finally:
                analyst.close()
        log.refresh(0)
        return log.read(lambda s: from_state(s, q))

    return audit
