"""Alert rule evaluation: what the rules count (the ingest pass's groups per step, see
``processors/ingest/cells.AlertGroups``) in, Alert records out. Pure (the clock is injected);
the alert stage (``stage.py``) feeds it from Kafka. ``ingest(event)`` counts one decoded event
through the reference aggregation, for the unit tests.

Per evaluation, in two passes:

1. every rule computes a ``Condition`` for every scope it matches (no data: None);
2. each alert's suppression is decided, then its lifecycle steps (``alert_lifecycle.step``):

   * **silenced**: an active silence matches the alert's labels;
   * **inhibited**: a per-agent failure alert whose failed tasks are mostly (>= half) explained
     by failing calls to integrations whose breaker is OPEN, or an agent x integration error
     alert on such an integration; ``root_cause`` names the breaker;
   * **grouped**: a per-agent failure or latency alert whose failed tasks mostly name one
     upstream agent that has an active failure alert; ``root_cause`` is that alert's key.

   A suppressed alert still fires and resolves on the topic (the record says why it is quiet,
   in ``labels.suppressed`` and ``root_cause``); the pager does not page it.

Dedup keys are ``<rule>:<scope id>`` (schedule rules add ``:missed``, ``:late``,
``:too_often``), stable across firing and resolved and across restarts.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fleetpulse.contract.alert_rules import AlertsSection, Rule
from fleetpulse.contract.clock import Clock
from fleetpulse.contract.governance import Silence
from fleetpulse.contract.policy import FleetPolicy, Permissions
from fleetpulse.contract.schedule import Budget, Schedule, add_run, check
from fleetpulse.contract.semantics import parse_scope_id, scope_id
from fleetpulse.processors.alerts.lifecycle import AlertState, Condition, restore, step
from fleetpulse.processors.alerts.split import Ownership, ScopeOutbox, ScopeRows, phase_record
from fleetpulse.processors.alerts.windows import (
    US,
    Cell,
    Ledger,
    Rolling,
    bucket_s,
    outside,
    period_bounds,
)
from fleetpulse.processors.ingest.cells import (
    DIMENSIONS,
    AlertCallRow,
    AlertGroups,
    AlertTaskRow,
)
from fleetpulse.processors.ingest.params import AlertSpec
from fleetpulse.processors.ingest.reference import alert_groups

FAILURE_KINDS = frozenset({"failure_rate", "latency_p95", "latency_degradation"})

# the dimensions of every scope type the rules read, in scope-id order
_SCOPE_DIMS: dict[str, tuple[str, ...]] = {**DIMENSIONS, "team": ("team",)}


# one rule's finding for one scope: rule, dedup key, scope labels, condition, window figures
Found = tuple[Rule, str, dict[str, str], Condition | None, Cell | None]


@dataclass
class Context:
    """What the evaluator learns from outside the task stream: the governance log (bundles'
    budgets, schedules and approval gates; silences) and the control topic (open breakers)."""

    budgets: dict[str, Budget] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    approvals: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # integration -> breaker id, for breakers open, probing, or closed within the rules' windows
    open_breakers: dict[str, str] = field(default_factory=dict)
    silences: list[Silence] = field(default_factory=list)


def alert_spec(section: AlertsSection) -> AlertSpec:
    """What the rules of ``section`` need the ingest pass to count: groups per ``step_s``
    seconds, the largest step every rolling window's bucket and the calendar day are multiples
    of (so a group falls in the same bucket and period as each of its events: 5 s with the
    default rules, where per-second groups would make about a row per event); runs only when a
    schedule rule exists."""
    step = math.gcd(86400, *(bucket_s(w) for ws in section.windows.values() for w in ws))
    schedules = [r for r in section.rules if r.kind == "schedule"]
    if not schedules or not max(r.window_s for r in schedules):
        return AlertSpec(step_s=step)
    return AlertSpec(run_gap_us=round(min(r.run_gap_s for r in schedules) * US), step_s=step)


class _Fmt(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class AlertEvaluator:
    """Rules over the task stream. Not thread-safe: one caller at a time.

    With ``owner`` (the alert stage's way, ``split.py``) it evaluates only the alerts that
    worker owns: its agents' groups go into its windows, their share of the integration and
    team scopes into ``outbox`` (for the scopes' owners, who add them with ``ingest_scopes``).
    Without it, one evaluator sees and evaluates everything (the reference of the unit tests).
    """

    def __init__(
        self,
        policy: FleetPolicy,
        clock: Clock,
        *,
        since_us: int | None = None,
        owner: Ownership | None = None,
    ) -> None:
        self.section = policy.alerts
        self.rules = self.section.rules
        self.by_name = {r.name: r for r in self.rules}
        self.permissions: Permissions = policy.access
        self.clock = clock
        self.context = Context()
        self.since_us = clock.time_us() if since_us is None else since_us
        # (scope type, window) -> scope id -> Rolling; dims per scope id
        self.windows: dict[tuple[str, int], dict[str, Rolling]] = {
            (st, w): {} for st, ws in self.section.windows.items() for w in ws
        }
        self._by_type: dict[str, list[tuple[int, dict[str, Rolling]]]] = {}
        for (stype, w), scopes in self.windows.items():
            self._by_type.setdefault(stype, []).append((w, scopes))
        self.dims: dict[str, dict[str, str]] = {}
        # (scope type, first value, second value) -> (scope id, dimensions): a day's replay
        # names the same scopes millions of times, and writing an id costs more than the row
        self._scopes: dict[tuple[str, str, str], tuple[str, dict[str, str]]] = {}
        self.ledger = Ledger()
        self.runs: dict[str, list[float]] = {}  # agent -> run start times (s)
        self.versions: dict[str, list[str]] = {}  # agent -> versions, in order first seen
        self.baseline: dict[str, tuple[str, Cell]] = {}  # agent -> previous version's figures
        self.states: dict[str, AlertState] = {}
        self._gated = tuple(a for r in self.rules if r.violation == "unapproved" for a in r.actions)
        self._run_gap = min((r.run_gap_s for r in self.rules if r.kind == "schedule"), default=60)
        self._run_keep = max((r.window_s for r in self.rules if r.kind == "schedule"), default=0)
        self._teams: dict[str, str | None] = {}
        self.events = 0
        self.owner = owner
        self.outbox = ScopeOutbox()
        self._mine: dict[str, bool] = {}  # agent -> owned
        self._applied: dict[tuple[str, int], int] = {}  # (scope, cells partition) -> offset
        # dedup key -> its alert-state value (None: inactive), for the stage to publish
        self.phase_changes: dict[str, bytes | None] = {}

    # -- input ----------------------------------------------------------------------------

    def restore(self, events: Iterable[dict[str, Any]]) -> int:
        """Adopt the newest event of every alert this evaluator owns; returns how many fire."""
        n = 0
        for ev in events:
            if ev["rule"] not in self.by_name or not self.owns(ev["dedup_key"], ev["rule"]):
                continue
            state = self.states[ev["dedup_key"]] = AlertState(ev["dedup_key"], ev["rule"])
            restore(state, ev)
            n += state.phase == "firing"
        return n

    def own(self, owner: Ownership) -> None:
        """Take this share (the alert stage's, once it knows the partition counts)."""
        self.owner = owner
        self._mine.clear()

    def owns(self, dedup_key: str, rule: str) -> bool:
        return self.owner is None or self.owner.owns_alert(dedup_key, rule)

    def owns_agent(self, agent: str) -> bool:
        mine = self._mine.get(agent)
        if mine is None:
            mine = self._mine[agent] = self.owner is None or self.owner.owns_agent(agent)
        return mine

    def restore_pending(self, dedup_key: str, rule: str, since_us: int) -> bool:
        """Resume the ``for`` timer of an owned alert that was pending before a restart
        (``processors.alert-state``); an alert already restored as firing keeps its state."""
        if rule not in self.by_name or dedup_key in self.states or not self.owns(dedup_key, rule):
            return False
        state = self.states[dedup_key] = AlertState(dedup_key, rule)
        state.phase, state.pending_since = "pending", since_us
        return True

    def team(self, agent: str) -> str | None:
        if agent not in self._teams:
            self._teams[agent] = self.section.team_of(agent)
        return self._teams[agent]

    @property
    def spec(self) -> AlertSpec:
        """What the evaluator needs from phase 1 (the ingest pass)."""
        return alert_spec(self.section)

    def ingest(self, ev: dict[str, Any]) -> None:
        """Count one decoded TaskEvent (times in epoch microseconds): the reference path of
        the unit tests; the alert stage takes whole batches' groups (``ingest_groups``)."""
        self.ingest_groups(alert_groups([ev], self.spec), events=1)

    def ingest_groups(self, groups: AlertGroups, *, events: int = 0) -> None:
        """Add one batch's groups (``processors/ingest``: per scope and second) to the windows,
        the cost ledger, the runs and the versions seen."""
        self.events += events
        now_s = self.clock.time_us() // US
        by_type = self._by_type
        split = self.owner is not None
        source = self.outbox.source  # the alert-cells record these groups came from, if known
        for row in groups.tasks:
            scope, agent, d2, sec = row[0], row[1], row[2], row[3]
            if split and not self.owns_agent(agent):
                continue  # not this worker's agent (a record routed before the split)
            if scope != "agent":  # windows only: most of a day's replay is too old for them
                if scope in by_type and not self._too_old(scope, sec, now_s):
                    sid, dims = self._scope(scope, agent, d2)
                    self._add_task_row(scope, sid, dims, row, now_s)
                continue
            sid, dims = self._scope(scope, agent, d2)  # its cost counts whatever its age
            self.ledger.add(sid, sec * US, row[6], source)
            team = self.team(agent)
            if team:
                team_sid, team_dims = self._scope("team", team, "")
                if split:
                    self.outbox.add_tasks(team_sid, row)
                else:
                    self.ledger.add(team_sid, sec * US, row[6], source)
                    self._add_task_row("team", team_sid, team_dims, row, now_s)
            if scope in by_type:
                self._add_task_row(scope, sid, dims, row, now_s)
        for call in groups.calls:
            if not split or self.owns_agent(call[0]):
                self._add_call_row(call, now_s)
        if self._run_keep:
            for agent, starts in groups.runs:
                if split and not self.owns_agent(agent):
                    continue
                runs = self.runs.setdefault(agent, [])
                for start in starts:
                    add_run(runs, start / US, gap_s=self._run_gap, keep_s=self._run_keep)
        for agent, version in groups.versions:
            if not split or self.owns_agent(agent):
                self._see_version(agent, version)

    def ingest_scopes(self, record: ScopeRows) -> None:
        """Add the rows other owners (or this one) computed for an integration or team scope
        this evaluator owns. Each source (alert-cells partition, offset) counts once."""
        sid = record.scope
        dims = _dims_of(sid)
        now_s = self.clock.time_us() // US
        applied = self._applied
        marks: dict[int, int] = {}  # what was applied before this record, per source
        for row in record.rows:
            p, o, sec = row[0], row[1], row[2]
            if p not in marks:
                marks[p] = applied.get((sid, p), -1)
            if o <= marks[p]:
                continue  # sent again by an owner that replayed its cells
            if o > applied.get((sid, p), -1):
                applied[(sid, p)] = o
            if "team" in dims:
                self.ledger.add(sid, sec * US, row[5], (p, o))
                bins, via, after = row[7], row[8], row[9]
                task_row: AlertTaskRow = (
                    "team", "", "", sec, row[3], row[4], row[5], row[6],
                    [k for k, _ in bins], [n for _, n in bins],
                    [k for k, _ in via], [n for _, n in via],
                    [k for k, _ in after], [n for _, n in after],
                )  # fmt: skip
                self._add_task_row("team", sid, dims, task_row, now_s)
                continue
            for w, scopes in self._by_type.get("integration", ()):
                for cell in self._cells(scopes, w, sid, dims, sec, now_s) or ():
                    cell.tasks += row[3]
                    cell.attempted += row[4]
                    cell.errors += row[5]
                    cell.denied += row[6]
                    cell.unpermitted += row[7]
                    cell.unapproved += row[8]

    def _scope(self, stype: str, a: str, b: str) -> tuple[str, dict[str, str]]:
        """The id and dimensions of a scope of type ``stype`` named by one or two values (an
        agent, an integration, a team; then a version, task type or integration), cached."""
        k = (stype, a, b)
        found = self._scopes.get(k)
        if found is None:
            if len(self._scopes) > 500_000:  # a cache, not state: bounded
                self._scopes.clear()
            # a task row's scope is agent, agent x version or else agent x task type
            names = _SCOPE_DIMS.get(stype, _SCOPE_DIMS["agent_task_type"])
            dims = dict(zip(names, (a, b)[: len(names)], strict=True))
            found = self._scopes[k] = (scope_id(dims), dims)
        return found

    def _add_task_row(
        self, stype: str, sid: str, dims: dict[str, str], row: AlertTaskRow, now_s: int
    ) -> None:
        per_window = self._by_type.get(stype)
        if not per_window:
            return
        (_, _, _, sec, tasks, failures, cost, zero, keys, counts,
         via, via_n, after, after_n) = row  # fmt: skip
        for w, scopes in per_window:
            for cell in self._cells(scopes, w, sid, dims, sec, now_s) or ():
                cell.tasks += tasks
                cell.cost_micros += cost
                cell.latency.add_bins(zero, keys, counts)
                if failures:
                    cell.failures += failures
                    for name, n in zip(via, via_n, strict=True):
                        cell.failed_via[name] = cell.failed_via.get(name, 0) + n
                    for name, n in zip(after, after_n, strict=True):
                        cell.failed_after[name] = cell.failed_after.get(name, 0) + n

    def _too_old(self, stype: str, sec: int, now_s: int) -> bool:
        """Whether every window of scope type ``stype`` has left the second ``sec``."""
        return all(outside(sec, now_s, w) for w, _ in self._by_type.get(stype, ()))

    def _add_call_row(self, row: AlertCallRow, now_s: int) -> None:
        agent, name, role, op, access, approved, sec, tasks, attempted, errors, denied, n = row
        integration_old = self._too_old("integration", sec, now_s)
        if integration_old and self._too_old("agent_integration", sec, now_s):
            return  # calls count in these windows only
        unpermitted = 0 if self.permissions.allows(role, name, access) else n - denied
        unapproved = 0
        if attempted and not approved:
            gated = self.context.approvals.get(agent, ()) + self._gated
            if gated and _is_gated(f"{name}.{op}", gated):
                unapproved = attempted
        for stype in ("agent_integration", "integration"):
            per_window = self._by_type.get(stype)
            if not per_window:
                continue
            if stype == "agent_integration":
                sid, dims = self._scope(stype, agent, name)
            else:
                sid, dims = self._scope(stype, name, "")
            if stype == "integration" and self.owner is not None:
                # the owner adds these to its windows only: none would count a row they left
                if not integration_old:
                    sums = (tasks, attempted, errors, denied, unpermitted, unapproved)
                    self.outbox.add_calls(sid, sec, sums)
                continue
            for w, scopes in per_window:
                for cell in self._cells(scopes, w, sid, dims, sec, now_s) or ():
                    cell.tasks += tasks
                    cell.attempted += attempted
                    cell.errors += errors
                    cell.denied += denied
                    cell.unpermitted += unpermitted
                    cell.unapproved += unapproved

    def _cells(
        self,
        scopes: dict[str, Rolling],
        w: int,
        sid: str,
        dims: dict[str, str],
        ts_s: int,
        now_s: int,
    ) -> tuple[Cell, Cell] | None:
        rolling = scopes.get(sid)
        if rolling is None:
            self.dims.setdefault(sid, dims)  # the budget rules list the scopes seen
            if outside(ts_s, now_s, w):  # no scope for a row it would not count
                return None
            rolling = scopes[sid] = Rolling(w)
        return rolling.cells(ts_s, now_s)

    def _see_version(self, agent: str, version: str) -> None:
        seen = self.versions.setdefault(agent, [])
        if version in seen:  # the last three versions seen
            return
        if seen:  # a new version: freeze the previous one's figures as its baseline
            prev = seen[-1]
            cell = self._version_total(agent, prev)
            if cell is not None:
                self.baseline[agent] = (prev, cell.copy())
        seen.append(version)
        del seen[:-3]

    def _version_total(self, agent: str, version: str) -> Cell | None:
        sid = scope_id({"agent_id": agent, "agent_version": version})
        for _, scopes in self._by_type.get("agent_version", ()):
            r = scopes.get(sid)
            if r is not None:
                return r.total
        return None

    # -- evaluation -----------------------------------------------------------------------

    def evaluate(self, remote_active: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Run every rule; return the Alert records to publish (firing and resolved).

        ``remote_active``: the alerts other workers own that are active (pending or firing),
        which may be the root of a cascade this evaluator groups."""
        found, active = self.assess()
        return self.settle(found, active | set(remote_active))

    def assess(self) -> tuple[list[Found], set[str]]:
        """The first half of ``evaluate``: every rule's conditions, and the keys of the alerts
        active now (what other workers need for grouping)."""
        now = self.clock.time_us()
        now_s = now // US
        for scopes in self.windows.values():
            for sid in list(scopes):
                scopes[sid].advance(now_s)
                if scopes[sid].total.is_empty():
                    del scopes[sid]
        self.ledger.evict(now)
        found: list[Found] = []
        for rule in self.rules:
            found.extend(self._conditions(rule, now))
        # a root cause is an alert whose condition holds, or one still firing (keep_firing_for)
        active = {key for _, key, _, cond, _ in found if cond is not None and cond.active}
        active |= {key for key, st in self.states.items() if st.phase == "firing"}
        return found, active

    def settle(self, found: list[Found], active: set[str]) -> list[dict[str, Any]]:
        """The second half of ``evaluate``: suppression and lifecycle of every alert."""
        now = self.clock.time_us()
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for rule, key, dims, cond, cell in found:
            seen.add(key)
            state = self.states.get(key)
            if state is None:
                if cond is None or not cond.active:
                    continue
                state = self.states[key] = AlertState(key, rule.name)
            if cond is not None and cond.active:
                self._suppress(state, rule, dims, cond, cell, active, now)
            was = state.phase
            status = step(state, rule, cond, now)
            if state.phase != was:
                self._phase_changed(state)
            if status:
                out.append(self._record(state, rule, dims, status, now))
        for key, state in list(self.states.items()):  # alerts whose scope has no data left
            if key in seen:
                continue
            rule = self.by_name[state.rule]
            was = state.phase
            status = step(state, rule, None, now)
            if state.phase != was:
                self._phase_changed(state)
            if status:
                dims = dict(state.last.labels) if state.last else {}
                out.append(self._record(state, rule, dims, status, now))
        for key in [k for k, s in self.states.items() if s.phase == "inactive"]:
            del self.states[key]
        return out

    def _phase_changed(self, state: AlertState) -> None:
        since = state.started_at if state.phase == "firing" else state.pending_since
        self.phase_changes[state.dedup_key] = phase_record(state.phase, state.rule, since)

    def _conditions(self, rule: Rule, now: int) -> Iterator[Found]:
        kind = rule.kind
        if kind == "schedule":
            yield from self._schedule(rule, now)
            return
        if kind == "cost_budget":
            yield from self._budget(rule, now)
            return
        if kind == "version_regression":
            yield from self._regression(rule)
            return
        scopes = self.windows.get((rule.scope_type, rule.window_s), {})
        for sid, rolling in scopes.items():
            dims = self.dims[sid]
            if not rule.matches(self._labels(dims)):
                continue
            t = rolling.total
            cond: Condition | None
            if kind == "failure_rate":
                cond = self._over(rule, t.tasks, t.failure_rate, "of tasks failed", pct=True)
            elif kind == "latency_p95":
                cond = self._over(rule, t.tasks, t.p95(), "ms p95 task latency")
            elif kind == "integration_error_rate":
                cond = self._over(rule, t.attempted, t.error_rate, "of calls failed", pct=True)
            elif kind == "latency_degradation":
                base = self.windows[(rule.scope_type, rule.baseline_s)].get(sid)
                cond = self._degradation(rule, t, base.total if base else None)
            elif kind == "cost_burn_rate":
                cond = self._burn(rule, sid, t, now)
            else:  # policy_violation
                n = getattr(t, rule.violation)
                cond = Condition(
                    n >= rule.limit,
                    float(n),
                    rule.limit,
                    rule.severity_for(n),
                    f"{n} {rule.violation} call(s) in {rule.window_s}s",
                )
            yield rule, f"{rule.name}:{sid}", dims, cond, t

    def _over(
        self, rule: Rule, volume: int, value: float, what: str, *, pct: bool = False
    ) -> Condition | None:
        if volume < max(rule.min_volume, 1):
            return None
        shown = f"{value:.0%}" if pct else f"{value:,.0f}"
        return Condition(
            value >= rule.limit,
            value,
            rule.limit,
            rule.severity_for(value),
            f"{shown} {what} over {rule.window_s}s ({volume} in the window)",
        )

    def _degradation(self, rule: Rule, recent: Cell, base: Cell | None) -> Condition | None:
        if base is None or recent.tasks < max(rule.min_volume, 1):
            return None
        before = base.minus(recent)
        if before.tasks < max(rule.min_volume, 1) or before.p95() <= 0:
            return None
        ratio = recent.p95() / before.p95()
        return Condition(
            ratio >= rule.limit,
            ratio,
            rule.limit,
            rule.severity_for(ratio),
            f"p95 {recent.p95():,.0f} ms over {rule.window_s}s is {ratio:.1f}x the "
            f"previous {rule.baseline_s}s ({before.p95():,.0f} ms)",
        )

    def _budget_of(self, sid: str) -> Budget | None:
        dims = self.dims.get(sid) or {}
        if "team" in dims:
            t = self.section.teams.get(dims["team"])
            return Budget(daily_usd=t.daily_usd, monthly_usd=t.monthly_usd) if t else None
        agent = dims.get("agent_id", "")
        return self.context.budgets.get(agent) or self.section.budgets.get(agent)

    def _budget(self, rule: Rule, now: int) -> Iterator[Found]:
        prefix = "team=" if rule.scope_type == "team" else "agent="
        scopes = {sid for sid, _, _ in self.ledger.spent if sid.startswith(prefix)}
        scopes |= {sid for sid in self.dims if sid.startswith(prefix) and "|" not in sid}
        for sid in scopes:
            dims = self.dims.get(sid) or _dims_of(sid)
            self.dims.setdefault(sid, dims)
            budget = self._budget_of(sid)
            usd = getattr(budget, f"{'daily' if rule.period == 'day' else 'monthly'}_usd", None)
            if not usd or not rule.matches(self._labels(dims)):
                continue
            spent = self.ledger.get(sid, rule.period, now) / US
            frac = spent / usd
            yield (
                rule,
                f"{rule.name}:{sid}",
                dims,
                Condition(
                    frac >= rule.limit,
                    frac,
                    rule.limit,
                    rule.severity_for(frac),
                    f"${spent:,.2f} spent this {rule.period}: {frac:.0%} of the ${usd:,.2f} budget",
                ),
                None,
            )

    def _burn(self, rule: Rule, sid: str, recent: Cell, now: int) -> Condition | None:
        budget = self._budget_of(sid)
        usd = getattr(budget, f"{'daily' if rule.period == 'day' else 'monthly'}_usd", None)
        if not usd or recent.tasks < max(rule.min_volume, 1):
            return None
        spent = self.ledger.get(sid, rule.period, now) / US
        _, end = period_bounds(rule.period, now)
        rate = recent.cost_micros / US / rule.window_s  # USD per second
        projected = spent + rate * (end - now) / US
        ratio = projected / usd
        return Condition(
            ratio >= rule.limit and spent < usd,
            ratio,
            rule.limit,
            rule.severity_for(ratio),
            f"at ${rate * 3600:,.2f}/h this {rule.period} ends at ${projected:,.2f}, "
            f"{ratio:.0%} of the ${usd:,.2f} budget (${spent:,.2f} spent)",
        )

    def _schedule(self, rule: Rule, now: int) -> Iterator[Found]:
        agents = set(self.section.schedules) | set(self.context.schedules)
        for agent in agents:
            if not self.owns_agent(agent):
                continue
            sched = self.context.schedules.get(agent) or self.section.schedules.get(agent)
            dims = {"agent_id": agent}
            if sched is None or not rule.matches(self._labels(dims)):
                continue
            status = check(
                sched,
                runs=self.runs.get(agent, []),
                now=now / US,
                since=self.since_us / US,
                window_s=rule.window_s,
                ratio=rule.limit,
            )
            for what, (on, value) in status.items():
                limit = rule.limit if what == "too_often" else sched.grace_s
                text = _schedule_text(what, agent, value, sched, rule)
                key = f"{rule.name}:agent={agent}:{what}"
                cond = Condition(on, value, limit, rule.severity, text, labels={"schedule": what})
                yield rule, key, {**dims}, cond, None

    def _regression(self, rule: Rule) -> Iterator[Found]:
        for agent, seen in self.versions.items():
            dims = {"agent_id": agent}
            if len(seen) < 2 or not rule.matches(self._labels(dims)):
                continue
            new, old = seen[-1], seen[-2]
            cur = self._version_total(agent, new)
            prev = self._version_total(agent, old)
            frozen = self.baseline.get(agent)
            if (prev is None or prev.tasks < rule.min_volume) and frozen and frozen[0] == old:
                prev = frozen[1]
            n = max(rule.min_volume, 1)
            if cur is None or prev is None or cur.tasks < n or prev.tasks < n:
                yield rule, f"{rule.name}:agent={agent}", dims, None, None
                continue
            delta = cur.failure_rate - prev.failure_rate
            z = _z(cur.failures, cur.tasks, prev.failures, prev.tasks)
            slower = prev.p95() > 0 and cur.p95() >= rule.latency_ratio * prev.p95()
            worse = delta >= rule.limit and z >= rule.z
            why = []
            if worse:
                why.append(
                    f"failure rate {cur.failure_rate:.0%} vs {prev.failure_rate:.0%} (z={z:.1f})"
                )
            if slower:
                why.append(f"p95 {cur.p95():,.0f} ms vs {prev.p95():,.0f} ms")
            text = (
                f"version {new} of {agent} is worse than {old}: {'; '.join(why)}. "
                f"Roll back: fleetpulse agents rollback {agent}"
            )
            labels = {"version": new, "previous_version": old}
            yield (
                rule,
                f"{rule.name}:agent={agent}",
                dims,
                Condition(
                    worse or slower,
                    delta,
                    rule.limit,
                    rule.severity,
                    text if why else "",
                    labels=labels,
                ),
                None,
            )

    # -- suppression and output -----------------------------------------------------------

    def _labels(self, dims: dict[str, str]) -> dict[str, str]:
        labels = dict(dims)
        team = self.team(dims["agent_id"]) if "agent_id" in dims else None
        if team and "team" not in labels:
            labels["team"] = team
        return labels

    def _suppress(
        self,
        state: AlertState,
        rule: Rule,
        dims: dict[str, str],
        cond: Condition,
        cell: Cell | None,
        active: set[str],
        now: int,
    ) -> None:
        state.suppressed, state.root_cause = "", None
        labels = {
            **self._labels(dims),
            **rule.labels,
            "alertname": rule.name,
            "severity": cond.severity,
            "kind": rule.kind,
        }
        for s in self.context.silences:
            if s.matches(labels, now):
                state.suppressed, state.root_cause = "silenced", f"silence:{s.silence_id}"
                return
        breakers = self.context.open_breakers
        if rule.kind == "integration_error_rate" and "agent_id" in dims:
            if dims["integration"] in breakers:
                state.suppressed = "inhibited"
                state.root_cause = f"breaker:{breakers[dims['integration']]}"
            return
        if rule.kind not in FAILURE_KINDS or cell is None or not cell.failures:
            return
        explained = {n: c for n, c in cell.failed_via.items() if n in breakers}
        if explained and sum(explained.values()) * 2 >= cell.failures:
            top = max(explained, key=explained.__getitem__)
            state.suppressed, state.root_cause = "inhibited", f"breaker:{breakers[top]}"
            return
        for upstream, n in sorted(cell.failed_after.items(), key=lambda kv: -kv[1]):
            if n * 2 < cell.failures:
                break
            root = next((k for k in active if _is_failure_alert_of(k, upstream, self)), None)
            if root is not None:
                state.suppressed, state.root_cause = "grouped", root
                return

    def _record(
        self, state: AlertState, rule: Rule, dims: dict[str, str], status: str, now: int
    ) -> dict[str, Any]:
        cond = state.last or Condition(False, 0.0, rule.limit, rule.severity, "")
        labels = {**self._labels(dims), **cond.labels, **rule.labels}
        if state.suppressed:
            labels["suppressed"] = state.suppressed
        sid = state.dedup_key[len(rule.name) + 1 :]
        return {
            "dedup_key": state.dedup_key,
            "rule": rule.name,
            "kind": rule.kind if rule.kind != "schedule" else "missed_run",
            "status": status,
            "severity": cond.severity,  # a rule's Severity, or the restored event's
            "scope_type": rule.scope_type,
            "scope_id": sid.split(":")[0],
            "value": float(cond.value) if math.isfinite(cond.value) else 0.0,
            "threshold": float(cond.threshold),
            "window_s": rule.window_s,
            "summary": cond.summary,
            "description": cond.description,
            "runbook": rule.runbook.format_map(_Fmt(dims)),
            "runbook_url": rule.runbook_url.format_map(_Fmt(dims)),
            "labels": labels,
            "root_cause": state.root_cause,
            "started_at": state.started_at,
            "ended_at": now if status == "resolved" else None,
            "emitted_at": now,
        }


def _schedule_text(what: str, agent: str, value: float, sched: Schedule, rule: Rule) -> str:
    grace = f"(grace {sched.grace_s:g}s)"
    if what == "missed":
        return f"{agent} has not run since its slot {value:,.0f}s ago {grace}"
    if what == "late":
        return f"{agent}'s last run started {value:,.0f}s after its slot {grace}"
    return f"{agent} ran {value:.0f} times in {rule.window_s}s, over {rule.limit:g}x its schedule"


def _is_failure_alert_of(key: str, agent: str, ev: AlertEvaluator) -> bool:
    rule_name, _, sid = key.partition(":")
    rule = ev.by_name.get(rule_name)
    return (
        rule is not None
        and rule.kind == "failure_rate"
        and sid.split("|")[0] == scope_id({"agent_id": agent})
    )


def _dims_of(sid: str) -> dict[str, str]:
    return parse_scope_id(sid)


def _is_gated(action: str, gated: tuple[str, ...]) -> bool:
    """Whether ``integration.operation`` needs an approval under the ``gated`` patterns."""
    return any(fnmatch.fnmatchcase(action, g) for g in gated)


def _z(f1: int, n1: int, f0: int, n0: int) -> float:
    """Two-proportion z statistic of f1/n1 against f0/n0 (pooled)."""
    p = (f1 + f0) / (n1 + n0)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n0))
    return (f1 / n1 - f0 / n0) / se if se > 0 else (math.inf if f1 / n1 > f0 / n0 else 0.0)
