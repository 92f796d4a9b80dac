"""Alert evaluation split between workers (``processors/alerts/split.py``): on a seeded input,
N evaluators that each own a share of the agents and of the integration and team scopes,
exchanging only the scope records and the active alerts' keys, send together exactly the alert
events one evaluator sends; a replayed source counts once; a restart resumes ``for`` timers
and adopts only the alerts it owns."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from fleetpulse.contract.clock import ManualClock
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.processors.alerts.evaluator import AlertEvaluator, alert_spec
from fleetpulse.processors.alerts.split import (
    Ownership,
    ScopeRows,
    owner_partition,
    read_phase,
    route_groups,
)
from fleetpulse.processors.ingest.cells import AlertGroups
from fleetpulse.processors.ingest.reference import alert_groups

US = 1_000_000
T0 = 1_800_000_000 * US  # 2027-01-15T08:00:00Z
PARTITIONS = 6

RULES: list[dict[str, Any]] = [
    {"name": "fail", "kind": "failure_rate", "threshold": 0.5, "min_volume": 4, "window_s": 60,
     "for_s": 10, "keep_firing_for_s": 5},
    {"name": "slow", "kind": "latency_p95", "threshold": 900, "min_volume": 4, "window_s": 60},
    {"name": "int-errors", "kind": "integration_error_rate", "threshold": 0.4, "min_volume": 5,
     "window_s": 60, "for_s": 5},
    {"name": "ai-errors", "kind": "integration_error_rate", "scope": "agent_integration",
     "threshold": 0.6, "min_volume": 3, "window_s": 60},
    {"name": "team-budget", "kind": "cost_budget", "scope": "team", "threshold": 0.5,
     "critical": 1.0},
    {"name": "team-burn", "kind": "cost_burn_rate", "scope": "team", "window_s": 60,
     "threshold": 50.0, "min_volume": 3},
    {"name": "agent-budget", "kind": "cost_budget", "threshold": 0.8},
    {"name": "denied", "kind": "policy_violation", "violation": "denied", "window_s": 60,
     "threshold": 1, "min_volume": 0},
    {"name": "regress", "kind": "version_regression", "window_s": 600, "min_volume": 8},
    {"name": "sched", "kind": "schedule", "window_s": 600, "min_volume": 0},
]  # fmt: skip
AGENTS = [f"agent-{i:02d}" for i in range(16)]
SECTION = {
    "rules": RULES,
    "teams": {"red": {"agents": ["agent-0*"], "daily_usd": 3}, "blue": {"agents": ["agent-1*"],
              "daily_usd": 2}},
    "budgets": {a: {"daily_usd": 0.4} for a in AGENTS[::3]},
    "schedules": {"agent-03": {"interval_s": 120, "grace_s": 30},
                  "agent-11": {"interval_s": 120, "grace_s": 30}},
}  # fmt: skip
POLICY = FleetPolicy.model_validate({"alerts": SECTION})


def seeded_batches(seed: int, rounds: int) -> list[list[dict[str, Any]]]:
    """Per evaluation round (5 s apart), the events that ended in it: agents and integrations
    fail in phases, a cascade names its upstream, a release regresses, some calls are denied."""
    rnd = random.Random(seed)
    batches = []
    n = 0
    for r in range(rounds):
        batch = []
        for _ in range(rnd.randint(20, 60)):
            agent = rnd.choice(AGENTS)
            at = T0 + r * 5 * US + rnd.randint(0, 5 * US - 1)
            # agent-14 runs after agent-04 (another owner) and fails with it (a cascade)
            phase_of = AGENTS.index(agent if agent != "agent-14" else "agent-04")
            bad_phase = (r // 6 + phase_of) % 4 == 0
            if agent == "agent-05" and r >= 10:  # release 2 regresses
                bad_phase = True
            outcome = "failure" if rnd.random() < (0.7 if bad_phase else 0.1) else "success"
            calls = []
            if agent == "agent-07":  # fails through mail, whose breaker is open
                calls.append({"call_id": f"m{n}", "integration": "mail", "operation": "send",
                              "access": "write", "target": None, "latency_ms": 20.0,
                              "status": "error" if outcome == "failure" else "ok"})  # fmt: skip
            for name in rnd.sample(["crm", "search"], rnd.randint(0, 2)):
                err = rnd.random() < (0.6 if name == "crm" and 8 <= r < 20 else 0.1)
                status = "denied" if rnd.random() < 0.02 else ("error" if err else "ok")
                calls.append({"call_id": f"c{n}", "integration": name, "operation": "get",
                              "access": "read", "status": status, "target": None,
                              "latency_ms": rnd.uniform(5, 300)})  # fmt: skip
            n += 1
            batch.append({
                "event_id": f"e{n}", "agent_id": agent,
                "agent_version": "2" if agent == "agent-05" and r >= 10 else "1",
                "agent_role": "", "task_id": f"t{n}", "task_type": "triage",
                "upstream_agent_id": "agent-04" if agent == "agent-14" else None,
                "outcome": outcome, "started_at": at - 100_000, "ended_at": at,
                "duration_ms": rnd.lognormvariate(5.5, 0.8), "cost_micros": rnd.randint(0, 30_000),
                "tool_calls": calls, "attributes": {},
            })  # fmt: skip
        batches.append(batch)
    return batches


class Workers:
    """N evaluators that own shares of the partitions and exchange what ``stage.py`` moves
    through Kafka: scope records to the scope's owner, active keys to everyone."""

    def __init__(self, n: int, clock: ManualClock) -> None:
        self.evs = [
            AlertEvaluator(
                POLICY,
                clock,
                since_us=T0,
                owner=Ownership(n, i, cells_partitions=PARTITIONS, scopes_partitions=PARTITIONS),
            )
            for i in range(n)
        ]
        self.offsets = [0] * PARTITIONS

    def owner(self, partition: int) -> AlertEvaluator:
        return next(ev for ev in self.evs if partition in ev.owner.cells)  # type: ignore[union-attr]

    def ingest(self, groups: AlertGroups) -> list[tuple[str, bytes]]:
        sent = []
        for p, part in sorted(route_groups(groups, PARTITIONS).items()):
            ev = self.owner(p)
            ev.outbox.source = (p, self.offsets[p])
            self.offsets[p] += 1
            ev.ingest_groups(part, events=part.events)
        for ev in self.evs:
            sent += ev.outbox.records()
        self.deliver(sent)
        return sent

    def deliver(self, records: list[tuple[str, bytes]]) -> None:
        for sid, value in records:
            self.owner(owner_partition(sid, PARTITIONS)).ingest_scopes(ScopeRows.from_record(value))

    def evaluate(self) -> list[dict[str, Any]]:
        assessed = [ev.assess() for ev in self.evs]
        out = []
        for i, ev in enumerate(self.evs):
            remote = set().union(*(a for j, (_, a) in enumerate(assessed) if j != i))
            out += ev.settle(assessed[i][0], assessed[i][1] | remote)
        return out


def whole_run(
    batches: list[list[dict[str, Any]]], policy: FleetPolicy = POLICY, step_s: int | None = None
) -> list[tuple[Any, ...]]:
    """One evaluator over every batch; ``step_s`` overrides the groups' step."""
    clock = ManualClock(T0)
    ev = AlertEvaluator(policy, clock, since_us=T0)
    ev.context.open_breakers["mail"] = "integration:mail"
    spec = ev.spec if step_s is None else replace(ev.spec, step_s=step_s)
    out = []
    for batch in batches:
        clock.advance(ms=5000)
        ev.ingest_groups(alert_groups(batch, spec), events=len(batch))
        out += [_key(a) for a in ev.evaluate()]
    return out


def split_run(n: int, batches: list[list[dict[str, Any]]]) -> list[tuple[Any, ...]]:
    clock = ManualClock(T0)
    workers = Workers(n, clock)
    for ev in workers.evs:
        ev.context.open_breakers["mail"] = "integration:mail"
    out = []
    for batch in batches:
        clock.advance(ms=5000)
        workers.ingest(alert_groups(batch, workers.evs[0].spec))
        out += [_key(a) for a in workers.evaluate()]
    return out


def _key(a: dict[str, Any]) -> tuple[Any, ...]:
    return (
        a["emitted_at"], a["dedup_key"], a["status"], a["severity"], round(a["value"], 9),
        a["labels"].get("suppressed"), a["root_cause"], a["started_at"], a["summary"],
    )  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_n_workers_send_exactly_what_one_evaluator_sends(seed: int, n: int) -> None:
    batches = seeded_batches(seed, 40)
    whole = whole_run(batches)
    # the input exercises every kind of alert, the suppressions included
    rules = {k[1].split(":")[0] for k in whole}
    assert {"fail", "int-errors", "ai-errors", "team-budget", "agent-budget", "regress",
            "sched"} <= rules, rules  # fmt: skip
    assert {k[5] for k in whole} >= {None, "grouped", "inhibited"}
    assert sorted(split_run(n, batches)) == sorted(whole)


def test_every_alert_has_one_owner() -> None:
    owners = [Ownership(3, i, cells_partitions=6, scopes_partitions=6) for i in range(3)]
    keys = [f"fail:agent={a}" for a in AGENTS] + [f"sched:agent={a}:missed" for a in AGENTS]
    keys += ["int-errors:integration=crm", "team-budget:team=red"]
    keys += ["ai-errors:agent=x|integration=crm"]
    for key in keys:
        rule = key.split(":")[0]
        assert sum(o.owns_alert(key, rule) for o in owners) == 1, key
    assert sorted(p for o in owners for p in o.cells) == list(range(6))


@pytest.mark.parametrize(
    ("workers", "index", "partitions", "error"),
    [(2, 2, 6, "index 2"), (7, 0, 6, "7 alert workers need")],
)
def test_an_impossible_share_is_refused(
    workers: int, index: int, partitions: int, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        Ownership(workers, index, cells_partitions=partitions, scopes_partitions=partitions)


def test_route_groups_sends_each_agent_to_one_partition() -> None:
    [batch] = seeded_batches(7, 1)
    groups = alert_groups(batch, AlertEvaluator(POLICY, ManualClock(T0)).spec)
    parts = route_groups(groups, PARTITIONS)
    for p, g in parts.items():
        agents = {r[1] for r in g.tasks} | {c[0] for c in g.calls}
        assert {owner_partition(a, PARTITIONS) for a in agents} == {p}
    assert sum(g.events for g in parts.values()) == len(batch)
    assert sorted(r for g in parts.values() for r in g.tasks) == sorted(groups.tasks)


def test_a_replayed_source_counts_once() -> None:
    """An agent owner that restarts replays its cells and sends the same scope rows again;
    the scope's owner applies each (partition, offset) once."""
    batches = seeded_batches(4, 3)
    clock = ManualClock(T0 + 15 * US)
    workers = Workers(2, clock)
    sent = []
    for batch in batches:
        sent += workers.ingest(alert_groups(batch, workers.evs[0].spec))
    before = {(sid, r.total.attempted) for ev in workers.evs
              for (st, _), sc in ev.windows.items() if st == "integration"
              for sid, r in sc.items()}  # fmt: skip
    spent = [dict(ev.ledger.spent) for ev in workers.evs]
    workers.deliver(sent)  # the same records again
    after = {(sid, r.total.attempted) for ev in workers.evs
             for (st, _), sc in ev.windows.items() if st == "integration"
             for sid, r in sc.items()}  # fmt: skip
    assert before and after == before
    assert [dict(ev.ledger.spent) for ev in workers.evs] == spent


def test_a_restart_resumes_for_timers_and_adopts_only_its_own_alerts() -> None:
    clock = ManualClock(T0)
    batches = seeded_batches(1, 40)
    workers = Workers(2, clock)
    states: dict[str, bytes | None] = {}
    published: dict[str, dict[str, Any]] = {}
    for batch in batches[:14]:
        clock.advance(ms=5000)
        workers.ingest(alert_groups(batch, workers.evs[0].spec))
        for a in workers.evaluate():
            published[a["dedup_key"]] = a
        for ev in workers.evs:
            states.update(ev.phase_changes)
            ev.phase_changes.clear()
    pending = {k: read_phase(v) for k, v in states.items() if read_phase(v)}
    pending = {k: v for k, v in pending.items() if v and v[1] == "pending"}
    assert pending, "the seeded input leaves some alert pending"
    firing = [a for a in published.values() if a["status"] == "firing"]
    # worker 0 restarts: it adopts its own firing alerts and pending timers, nobody else's
    old = workers.evs[0]
    new = AlertEvaluator(POLICY, clock, since_us=T0, owner=old.owner)
    adopted = new.restore(firing)
    for key, (rule, _, since) in pending.items():
        new.restore_pending(key, rule, since)
    assert adopted == sum(1 for k, s in old.states.items() if s.phase == "firing")
    assert {k: (s.phase, s.pending_since) for k, s in new.states.items()} == {
        k: (s.phase, s.pending_since) for k, s in old.states.items() if s.phase != "inactive"
    }


def test_groups_per_step_raise_the_alerts_of_groups_per_second() -> None:
    """With every window 300 s or longer, the ingest pass groups per 5 s (``alert_spec``):
    fewer rows, and not one alert event differs from per-second groups."""
    rules = [{**r, "window_s": r["window_s"] * 5} if "window_s" in r else r for r in RULES]
    policy = FleetPolicy.model_validate({"alerts": {**SECTION, "rules": rules}})
    assert alert_spec(policy.alerts).step_s == 5
    assert alert_spec(POLICY.alerts).step_s == 1  # a 60 s window has 1 s buckets
    batches = seeded_batches(4, 60)

    per_step = whole_run(batches, policy)

    assert {k[1].split(":")[0] for k in per_step} >= {"fail", "int-errors", "team-budget"}
    assert per_step == whole_run(batches, policy, step_s=1)
