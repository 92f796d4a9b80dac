"""How alert evaluation is split between alert workers: who owns which alert, and the small
records the owners exchange. Pure (no Kafka); ``stage.py`` moves the records.

Ownership::

    processors.alert-cells   partition = crc32(agent id) % partitions      (``route_groups``)
    processors.alert-scopes  partition = crc32(scope id) % partitions      (``ScopeOutbox``)
    worker i of N            owns every partition p of both with p % N == i (``Ownership``)

* **Agent-scoped alerts** (every rule whose scope names an agent: failure rate, latency, agent
  budget and burn rate, schedule, version regression, policy violations, agent x integration
  errors) are evaluated by the owner of the agent's alert-cells partition, from that partition
  alone: the metric workers send each agent's groups there, whatever batch they came in.
* **Cross-agent scopes** (``integration=...`` for integration error rates, ``team=...`` for
  team budgets and burn rates) need sums over agents held by different owners. Each agent
  owner adds its agents' share into a ``ScopeOutbox`` and sends, per step, one small record
  per scope to ``processors.alert-scopes``, keyed by the scope id; the scope's owner adds them
  into its windows and ledger (``AlertEvaluator.ingest_scopes``) and evaluates the scope's
  rules. Rows carry the alert-cells (partition, offset) they came from, and the scope owner
  applies each source offset once: an agent owner that restarts and replays its cells sends
  the same rows again, and they change nothing.
* **Cascades and inhibition** read small topics every worker follows: the breakers' states
  (``fleetpulse.control``) and the alerts' phases (``processors.alert-state``, below), so a
  downstream agent's owner sees its upstream agent's failure alert whoever owns it.

Pending state: every alert's phase change (pending with the time it started, firing, or a
tombstone once inactive) goes to the compacted ``processors.alert-state``, keyed by dedup key.
A restarted owner resumes its pending ``for`` timers from it (firing alerts come back from
``fleetpulse.alerts`` as before), and every worker learns from it which alerts are active.

One worker (N = 1) runs exactly this path, owning everything, so N workers send what one
sends: the sums reach each scope's owner whoever computed them, and every alert has one
owner (``tests/unit/processors/test_alert_split.py`` proves it on a seeded input).

Limits, known:

* A cascade root owned by another worker is seen once its phase record has come back through
  ``processors.alert-state`` (the next evaluation, give or take the fetch), where one worker
  sees it in the same evaluation: a downstream alert with ``for_s: 0`` that becomes active in
  the very evaluation its upstream does may fire unsuppressed and be sent again as grouped.
* The share is fixed by the partition counts: changing the partitions of alert-cells or
  alert-scopes moves agents and scopes, so restart the metric workers and the alert workers
  together. Records the metric workers routed before this split (by source partition) hold
  agents of other owners; with more than one alert worker those rows are skipped by a replay.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from fleetpulse.contract.semantics import parse_scope_id
from fleetpulse.processors.ingest.cells import (
    CALL_WIDTH,
    TASK_LISTS,
    TASK_WIDTH,
    AlertGroups,
    AlertTaskRow,
    RowColumns,
)

# cross-agent rows, per (source, second): an integration's
#   (tasks, attempted calls, errors, denied, unpermitted, unapproved)
IntegrationSums = list[int]
# and a team's (tasks, failures, cost micros, zero-latency tasks, {bin: count},
#   {integration: failed tasks}, {upstream agent: failed tasks})
TeamSums = list[Any]


def owner_partition(key: str, partitions: int) -> int:
    """The partition of an agent id (alert-cells) or of a scope id (alert-scopes)."""
    return zlib.crc32(key.encode()) % partitions


@dataclass(frozen=True)
class Ownership:
    """Which partitions of alert-cells and alert-scopes worker ``index`` of ``workers`` owns.

    Example:
        >>> o = Ownership(workers=2, index=1, cells_partitions=6, scopes_partitions=6)
        >>> o.cells, o.owns_agent("billing") == (owner_partition("billing", 6) % 2 == 1)
        ((1, 3, 5), True)
    """

    workers: int = 1
    index: int = 0
    cells_partitions: int = 1
    scopes_partitions: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.workers:
            raise ValueError(
                f"alert worker index {self.index} is not in [0, {self.workers}): set "
                f"FLEETPULSE_ALERTS_INDEX below FLEETPULSE_ALERTS_WORKERS"
            )
        if self.workers > min(self.cells_partitions, self.scopes_partitions):
            raise ValueError(
                f"{self.workers} alert workers need as many alert-cells and alert-scopes "
                f"partitions (there are {self.cells_partitions} and {self.scopes_partitions}): "
                f"lower FLEETPULSE_ALERTS_WORKERS or add partitions"
            )

    @property
    def cells(self) -> tuple[int, ...]:
        return tuple(p for p in range(self.cells_partitions) if p % self.workers == self.index)

    @property
    def scopes(self) -> tuple[int, ...]:
        return tuple(p for p in range(self.scopes_partitions) if p % self.workers == self.index)

    def owns_agent(self, agent_id: str) -> bool:
        return owner_partition(agent_id, self.cells_partitions) % self.workers == self.index

    def owns_scope(self, sid: str) -> bool:
        """A cross-agent scope id (``integration=crm``, ``team=support``)."""
        return owner_partition(sid, self.scopes_partitions) % self.workers == self.index

    def owns_alert(self, dedup_key: str, rule: str) -> bool:
        """Whether this worker evaluates the alert ``<rule>:<scope id>[:suffix]``."""
        sid = dedup_key[len(rule) + 1 :].split(":")[0]
        try:
            dims = parse_scope_id(sid)
        except ValueError:
            return self.index == 0  # not a scope we know: one worker keeps it
        if "agent_id" in dims:
            return self.owns_agent(dims["agent_id"])
        return self.owns_scope(sid)


def route_groups(groups: AlertGroups, partitions: int) -> dict[int, AlertGroups]:
    """Split one ingest pass's groups by the alert-cells partition of their agent (what the
    metric worker sends where), keeping each part's rows in the pass's order and as columns
    (``RowColumns``). ``events`` is split by each part's agent-scope tasks."""
    memo: dict[str, int] = {}

    def dest(agent: str) -> int:
        p = memo.get(agent)
        if p is None:
            p = memo[agent] = owner_partition(agent, partitions)
        return p

    def dests(agents: np.ndarray) -> np.ndarray:
        return np.fromiter(map(dest, agents.tolist()), np.int64, len(agents))

    tasks = _columns(groups.tasks, TASK_WIDTH, TASK_LISTS)
    calls = _columns(groups.calls, CALL_WIDTH, ())
    t_dest = dests(tasks.column(1)) if len(tasks) else np.zeros(0, np.int64)
    c_dest = dests(calls.column(0)) if len(calls) else np.zeros(0, np.int64)
    agent_rows = tasks.column(0) == "agent" if len(tasks) else np.zeros(0, bool)
    events = np.bincount(
        t_dest[agent_rows],
        weights=tasks.column(4)[agent_rows].astype(np.int64) if len(tasks) else None,
        minlength=partitions,
    )
    out: dict[int, AlertGroups] = {}

    def part(p: int) -> AlertGroups:
        g = out.get(p)
        if g is None:
            g = out[p] = AlertGroups(tasks=[], calls=[])
        return g

    for p in np.unique(t_dest).tolist():
        g = part(p)
        g.tasks = tasks.take(np.flatnonzero(t_dest == p))
        g.events = int(events[p])
    for p in np.unique(c_dest).tolist():
        part(p).calls = calls.take(np.flatnonzero(c_dest == p))
    for agent, starts in groups.runs:
        part(dest(agent)).runs.append((agent, starts))
    for agent, version in groups.versions:
        part(dest(agent)).versions.append((agent, version))
    return out


def _columns(rows: Any, width: int, lists: tuple[int, ...]) -> RowColumns[Any]:
    return rows if isinstance(rows, RowColumns) else RowColumns.of_rows(rows, width, lists)


@dataclass
class ScopeOutbox:
    """An agent owner's share of the cross-agent scopes, per (scope id, source, second), until
    it is sent (``records``)."""

    integrations: dict[tuple[str, int, int, int], IntegrationSums] = field(default_factory=dict)
    teams: dict[tuple[str, int, int, int], TeamSums] = field(default_factory=dict)
    source: tuple[int, int] = (0, 0)  # the alert-cells (partition, offset) being ingested

    def add_calls(self, sid: str, sec: int, sums: tuple[int, ...]) -> None:
        key = (sid, *self.source, sec)
        held = self.integrations.get(key)
        if held is None:
            self.integrations[key] = list(sums)
        else:
            for i, n in enumerate(sums):
                held[i] += n

    def add_tasks(self, sid: str, row: AlertTaskRow) -> None:
        (_, _, _, sec, tasks, failures, cost, zero, keys, counts,
         via, via_n, after, after_n) = row  # fmt: skip
        key = (sid, *self.source, sec)
        held = self.teams.get(key)
        if held is None:
            held = self.teams[key] = [0, 0, 0, 0, {}, {}, {}]
        held[0] += tasks
        held[1] += failures
        held[2] += cost
        held[3] += zero
        for d, names, ns in (
            (held[4], keys, counts),
            (held[5], via, via_n),
            (held[6], after, after_n),
        ):
            for k, n in zip(names, ns, strict=True):
                d[k] = d.get(k, 0) + n

    def __bool__(self) -> bool:
        return bool(self.integrations or self.teams)

    def records(self) -> list[tuple[str, bytes]]:
        """(scope id, record) per scope, and empty the outbox."""
        docs: dict[str, dict[str, Any]] = {}
        for (sid, p, o, sec), sums in self.integrations.items():
            docs.setdefault(sid, {"scope": sid, "rows": []})["rows"].append([p, o, sec, *sums])
        for (sid, p, o, sec), t in self.teams.items():
            docs.setdefault(sid, {"scope": sid, "rows": []})["rows"].append(
                [p, o, sec, t[0], t[1], t[2], t[3], _pairs(t[4]), _pairs(t[5]), _pairs(t[6])]
            )
        self.integrations, self.teams = {}, {}
        return [(sid, orjson.dumps(doc)) for sid, doc in docs.items()]


def _pairs(d: dict[Any, int]) -> list[list[Any]]:
    return [[k, n] for k, n in sorted(d.items())]


@dataclass
class ScopeRows:
    """One ``processors.alert-scopes`` record: a scope id and its rows
    ``[source partition, source offset, second, *sums]``."""

    scope: str
    rows: list[list[Any]]

    @classmethod
    def from_record(cls, value: bytes) -> ScopeRows:
        """Raises:
        ValueError: the record is not one."""
        try:
            doc = orjson.loads(value)
            scope, rows = str(doc["scope"]), list(doc["rows"])
            parse_scope_id(scope)
            if any(not isinstance(r, list) or len(r) < 9 for r in rows):
                raise ValueError("a row is too short")
            return cls(scope, rows)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an alert-scopes record: {exc}") from None


def phase_record(phase: str, rule: str, since_us: int) -> bytes | None:
    """The ``processors.alert-state`` value of an alert in ``phase`` (None: a tombstone)."""
    if phase == "inactive":
        return None
    return orjson.dumps({"rule": rule, "phase": phase, "since": since_us})


def read_phase(value: bytes | None) -> tuple[str, str, int] | None:
    """(rule, phase, since) of an alert-state value; None for a tombstone or a bad record."""
    if not value:
        return None
    try:
        doc = orjson.loads(value)
        return str(doc["rule"]), str(doc["phase"]), int(doc["since"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
