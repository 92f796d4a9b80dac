"""Alert rules, lifecycle, schedules, suppression: pure, with an injected clock."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fleetpulse.contract.alert_rules import Rule
from fleetpulse.contract.clock import ManualClock
from fleetpulse.contract.errors import ConfigError
from fleetpulse.contract.governance import Silence
from fleetpulse.contract.policy import FleetPolicy, load_policy
from fleetpulse.contract.schedule import Budget, Schedule, add_run, check
from fleetpulse.processors.alerts.evaluator import AlertEvaluator
from fleetpulse.processors.alerts.lifecycle import AlertState, Condition, step

US = 1_000_000
T0 = 1_800_000_000 * US  # 2027-01-15T08:00:00Z
_ids = itertools.count()


def event(agent: str = "a", outcome: str = "success", at: int = T0, **kw: Any) -> dict[str, Any]:
    ev = {
        "event_id": f"e{next(_ids)}",
        "agent_id": agent,
        "agent_version": "1",
        "agent_role": "",
        "task_id": f"t{next(_ids)}",
        "task_type": "triage",
        "upstream_agent_id": None,
        "outcome": outcome,
        "started_at": at - 100_000,
        "ended_at": at,
        "duration_ms": 100.0,
        "cost_micros": 0,
        "tool_calls": [],
        "attributes": {},
    }
    ev.update(kw)
    return ev


def call(integration: str = "crm", status: str = "ok", **kw: Any) -> dict[str, Any]:
    c = {"call_id": "c", "integration": integration, "operation": "get", "access": "read",
         "status": status, "target": None}  # fmt: skip
    c.update(kw)
    return c


def evaluator(rules: list[dict[str, Any]], clock: ManualClock, **section: Any) -> AlertEvaluator:
    top = section.pop("top", {})
    policy = FleetPolicy.model_validate({"alerts": {"rules": rules, **section}, **top})
    return AlertEvaluator(policy, clock, since_us=clock.time_us())


def fired(out: list[dict[str, Any]], status: str = "firing") -> list[str]:
    return [a["dedup_key"] for a in out if a["status"] == status]


FAIL = {"name": "fail", "kind": "failure_rate", "threshold": 0.5, "min_volume": 4, "window_s": 60}


# -- lifecycle ------------------------------------------------------------------------------


def run(rule: Rule, steps: list[tuple[float, bool | None]]) -> list[tuple[float, str]]:
    state = AlertState("k", rule.name)
    out = []
    for t, active in steps:
        cond = None if active is None else Condition(active, 1.0, 0.5, rule.severity, "s")
        status = step(state, rule, cond, int(t * US))
        if status:
            out.append((t, status))
    return out


@pytest.mark.parametrize(
    ("rule", "steps", "expected"),
    [
        # fires at once without `for`, resolves at once without keep_firing_for
        ({}, [(0, True), (1, True), (2, False)], [(0, "firing"), (2, "resolved")]),
        # `for`: pending until 30 s of continuous truth
        ({"for_s": 30}, [(0, True), (29, True), (30, True)], [(30, "firing")]),
        # `for` restarts when the condition drops while pending: nothing is sent
        ({"for_s": 30}, [(0, True), (20, False), (25, True), (50, True), (55, True)], [(55, "firing")]),
        # keep_firing_for: a flap shorter than it does not resolve
        ({"keep_firing_for_s": 60}, [(0, True), (10, False), (20, True), (30, False), (79, False), (80, False)],
         [(0, "firing"), (80, "resolved")]),
        # re-notify every repeat_interval_s while firing
        ({"repeat_interval_s": 100}, [(0, True), (99, True), (100, True), (150, True)], [(0, "firing"), (100, "firing")]),
        # no data: resolve (default), keep, or alert
        ({}, [(0, True), (5, None)], [(0, "firing"), (5, "resolved")]),
        ({"no_data": "keep"}, [(0, True), (5, None), (500, None)], [(0, "firing")]),
        ({"no_data": "alert"}, [(0, None)], [(0, "firing")]),
    ],
)  # fmt: skip
def test_lifecycle(
    rule: dict[str, Any], steps: list[tuple[float, bool | None]], expected: list[tuple[float, str]]
) -> None:
    assert run(Rule(name="r", kind="failure_rate", threshold=0.5, **rule), steps) == expected


def test_severity_change_resends() -> None:
    rule = Rule(name="r", kind="failure_rate", threshold=0.2, critical=0.5)
    state = AlertState("k", "r")
    assert step(state, rule, Condition(True, 0.3, 0.2, "warning", "s"), 0) == "firing"
    assert step(state, rule, Condition(True, 0.3, 0.2, "warning", "s"), US) is None
    assert step(state, rule, Condition(True, 0.6, 0.2, "critical", "s"), 2 * US) == "firing"


# -- schedules ------------------------------------------------------------------------------


def ts(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


@pytest.mark.parametrize(
    ("schedule", "runs", "now", "expected"),
    [
        # nightly at 23:55 Paris: the run came at 23:56 -> fine at 00:10 next day (across midnight)
        ({"cron": "55 23 * * *", "grace_s": 600, "timezone": "Europe/Paris"},
         ["2027-01-14 23:56"], "2027-01-15 00:10", {"missed": False, "late": False}),
        # no run: at 00:04 grace (10 min) has not passed -> not missed; at 00:06 it is
        ({"cron": "55 23 * * *", "grace_s": 600, "timezone": "Europe/Paris"},
         ["2027-01-13 23:55"], "2027-01-15 00:04", {"missed": False}),
        ({"cron": "55 23 * * *", "grace_s": 600, "timezone": "Europe/Paris"},
         ["2027-01-13 23:55"], "2027-01-15 00:06", {"missed": True}),
        # a run 30 min after its slot with 10 min grace: late (and no longer missed)
        ({"cron": "55 23 * * *", "grace_s": 600, "timezone": "Europe/Paris"},
         ["2027-01-13 23:55", "2027-01-15 00:25"], "2027-01-15 00:30", {"missed": False, "late": True}),
        # a run slightly early (within grace before the slot) counts for that slot
        ({"cron": "0 2 * * *", "grace_s": 300}, ["2027-01-15 01:58"], "2027-01-15 02:30",
         {"missed": False, "late": False}),
        # every 5 minutes, 30 runs in an hour: too often (ratio 2 -> limit 25)
        ({"cron": "*/5 * * * *", "grace_s": 60}, [f"2027-01-15 07:{m:02d}" for m in range(0, 60, 2)],
         "2027-01-15 08:00", {"too_often": True}),
        ({"cron": "*/5 * * * *", "grace_s": 60}, [f"2027-01-15 07:{m:02d}" for m in range(0, 60, 5)],
         "2027-01-15 07:59", {"too_often": False, "missed": False}),
        # interval: overdue past interval + grace
        ({"interval_s": 600, "grace_s": 60}, ["2027-01-15 07:00"], "2027-01-15 07:10:59", {"missed": False}),
        ({"interval_s": 600, "grace_s": 60}, ["2027-01-15 07:00"], "2027-01-15 07:11:01", {"missed": True}),
        ({"interval_s": 600, "grace_s": 60}, ["2027-01-15 07:00", "2027-01-15 07:20"], "2027-01-15 07:21",
         {"late": True, "missed": False}),
    ],
)  # fmt: skip
def test_schedule(
    schedule: dict[str, Any], runs: list[str], now: str, expected: dict[str, bool]
) -> None:
    tz = schedule.get("timezone", "UTC")
    status = check(Schedule(**schedule), runs=[ts(r, tz) for r in runs], now=ts(now, tz),
                   since=ts("2027-01-01 00:00"), window_s=3600, ratio=2.0)  # fmt: skip
    assert {k: status[k][0] for k in expected} == expected


def test_nothing_is_missed_before_watching_began() -> None:
    s = Schedule(cron="0 2 * * *", grace_s=60)
    status = check(s, runs=[], now=ts("2027-01-15 02:30"), since=ts("2027-01-15 02:10"),
                   window_s=3600, ratio=2.0)  # fmt: skip
    assert status["missed"][0] is False


def test_tasks_of_one_run_are_one_run() -> None:
    runs: list[float] = []
    assert add_run(runs, 100.0, gap_s=60, keep_s=3600)
    assert not add_run(runs, 130.0, gap_s=60, keep_s=3600)
    assert add_run(runs, 400.0, gap_s=60, keep_s=3600)
    assert runs == [100.0, 400.0]


# -- rules through the evaluator ------------------------------------------------------------


def test_failure_rate_fires_with_volume_and_resolves_after_recovery() -> None:
    clock = ManualClock(T0)
    ev = evaluator([FAIL], clock)
    for _ in range(3):
        ev.ingest(event(outcome="failure", at=clock.time_us()))
    assert ev.evaluate() == []  # 3 < min_volume
    ev.ingest(event(outcome="failure", at=clock.time_us()))
    out = ev.evaluate()
    assert fired(out) == ["fail:agent=a"]
    a = out[0]
    assert (a["value"], a["threshold"], a["window_s"], a["labels"]["agent_id"]) == (
        1.0,
        0.5,
        60,
        "a",
    )
    clock.advance(s=5)
    for _ in range(10):
        ev.ingest(event(at=clock.time_us()))
    out = ev.evaluate()
    assert fired(out, "resolved") == ["fail:agent=a"] and out[0]["ended_at"] == clock.time_us()


def test_failures_leave_the_window_and_the_alert_resolves() -> None:
    clock = ManualClock(T0)
    ev = evaluator([{**FAIL, "no_data": "resolve"}], clock)
    for _ in range(5):
        ev.ingest(event(outcome="failure", at=clock.time_us()))
    assert fired(ev.evaluate()) == ["fail:agent=a"]
    clock.advance(s=70)
    assert fired(ev.evaluate(), "resolved") == ["fail:agent=a"]


def test_selectors_and_task_type_scope() -> None:
    clock = ManualClock(T0)
    rule = {**FAIL, "scope": "agent_task_type", "match": {"agent_id": "b*", "task_type": "refund"}}
    ev = evaluator([rule], clock)
    for agent, tt in [("a", "refund"), ("b1", "triage"), ("b2", "refund")]:
        for _ in range(5):
            ev.ingest(event(agent, "failure", at=clock.time_us(), task_type=tt))
    assert fired(ev.evaluate()) == ["fail:agent=b2|task_type=refund"]


def test_latency_p95_and_degradation() -> None:
    clock = ManualClock(T0)
    rules = [
        {"name": "slow", "kind": "latency_p95", "threshold": 1000, "min_volume": 5, "window_s": 60},
        {"name": "degraded", "kind": "latency_degradation", "threshold": 2.0, "min_volume": 5,
         "window_s": 60, "baseline_s": 3600},
    ]  # fmt: skip
    ev = evaluator(rules, clock)
    for i in range(50):  # an hour of 200 ms tasks
        ev.ingest(event(at=clock.time_us() - (3000 - i * 50) * US, duration_ms=200.0))
    for _ in range(10):
        ev.ingest(event(at=clock.time_us(), duration_ms=600.0))
    out = ev.evaluate()
    assert fired(out) == ["degraded:agent=a"]  # 3x the baseline, but under 1 s
    assert out[0]["value"] == pytest.approx(3.0, rel=0.05)


def test_integration_error_rate_counts_attempted_calls_only() -> None:
    clock = ManualClock(T0)
    ev = evaluator(
        [{"name": "int", "kind": "integration_error_rate", "threshold": 0.5, "min_volume": 4}],
        clock,
    )
    calls = [
        call(status="error"),
        call(status="error"),
        call(status="short_circuited"),
        call(status="ok"),
    ]
    ev.ingest(event(at=clock.time_us(), tool_calls=calls))
    assert ev.evaluate() == []  # 3 attempted < 4
    ev.ingest(event(at=clock.time_us(), tool_calls=[call(status="error")]))
    assert fired(ev.evaluate()) == ["int:integration=crm"]


def test_budget_warning_then_critical_and_burn_rate() -> None:
    clock = ManualClock(T0)  # 08:00 UTC: 16 h left in the day
    rules = [
        {"name": "budget", "kind": "cost_budget", "threshold": 0.8, "critical": 1.0},
        {"name": "burn", "kind": "cost_burn_rate", "window_s": 3600, "min_volume": 1},
    ]
    ev = evaluator(rules, clock, budgets={"a": {"daily_usd": 10}})
    ev.ingest(event(at=clock.time_us(), cost_micros=1 * US))  # $1 in the last hour: $17 by midnight
    out = ev.evaluate()
    assert fired(out) == ["burn:agent=a"] and out[0]["value"] == pytest.approx(1.7)
    ev.ingest(event(at=clock.time_us(), cost_micros=7 * US))
    out = ev.evaluate()
    budget = [a for a in out if a["rule"] == "budget"]
    assert budget[0]["severity"] == "warning" and budget[0]["value"] == pytest.approx(0.8)
    ev.ingest(event(at=clock.time_us(), cost_micros=3 * US))
    out = ev.evaluate()
    assert [a["severity"] for a in out if a["rule"] == "budget"] == ["critical"]
    # over budget: the burn-rate warning has done its job and resolves
    assert fired(out, "resolved") == ["burn:agent=a"]


def test_budget_resets_at_midnight_utc() -> None:
    clock = ManualClock(T0)
    ev = evaluator([{"name": "budget", "kind": "cost_budget", "threshold": 0.8}], clock,
                   budgets={"a": {"daily_usd": 1}})  # fmt: skip
    ev.ingest(event(at=clock.time_us(), cost_micros=US))
    assert fired(ev.evaluate()) == ["budget:agent=a"]
    clock.advance(s=16 * 3600 + 1)
    assert fired(ev.evaluate(), "resolved") == ["budget:agent=a"]


def test_team_budget_and_bundle_budget_wins() -> None:
    clock = ManualClock(T0)
    ev = evaluator([{"name": "budget", "kind": "cost_budget", "scope": "team", "threshold": 1.0}], clock,
                   teams={"support": {"agents": ["s-*"], "daily_usd": 2}})  # fmt: skip
    ev.ingest(event("s-1", at=clock.time_us(), cost_micros=US))
    ev.ingest(event("s-2", at=clock.time_us(), cost_micros=US))
    ev.ingest(event("other", at=clock.time_us(), cost_micros=5 * US))
    out = ev.evaluate()
    assert fired(out) == ["budget:team=support"] and out[0]["labels"]["team"] == "support"
    ev2 = evaluator([{"name": "budget", "kind": "cost_budget", "threshold": 1.0}], clock,
                    budgets={"a": {"daily_usd": 100}})  # fmt: skip
    ev2.context.budgets["a"] = Budget(daily_usd=1)
    ev2.ingest(event(at=clock.time_us(), cost_micros=US))
    assert fired(ev2.evaluate()) == ["budget:agent=a"]


def test_schedule_rule_missed_then_resolved_by_a_run() -> None:
    clock = ManualClock(T0)
    ev = evaluator([{"name": "sched", "kind": "schedule", "window_s": 3600}], clock,
                   schedules={"nightly": {"interval_s": 600, "grace_s": 60}})  # fmt: skip
    clock.advance(s=661)
    out = ev.evaluate()
    assert fired(out) == ["sched:agent=nightly:missed"] and out[0]["kind"] == "missed_run"
    ev.ingest(event("nightly", at=clock.time_us()))
    assert fired(ev.evaluate(), "resolved") == ["sched:agent=nightly:missed"]


def test_version_regression_suggests_rollback() -> None:
    clock = ManualClock(T0)
    ev = evaluator(
        [{"name": "regress", "kind": "version_regression", "window_s": 3600, "min_volume": 50}],
        clock,
    )
    for i in range(100):
        ev.ingest(
            event(
                outcome="failure" if i % 20 == 0 else "success",
                at=clock.time_us(),
                agent_version="1",
            )
        )
    clock.advance(s=10)
    for i in range(60):
        ev.ingest(
            event(
                outcome="failure" if i % 3 == 0 else "success",
                at=clock.time_us(),
                agent_version="2",
            )
        )
    out = ev.evaluate()
    assert fired(out) == ["regress:agent=a"]
    assert "fleetpulse agents rollback a" in out[0]["summary"]
    assert out[0]["labels"]["version"] == "2" and out[0]["labels"]["previous_version"] == "1"


def test_version_change_without_regression_is_quiet() -> None:
    clock = ManualClock(T0)
    ev = evaluator([{"name": "regress", "kind": "version_regression", "min_volume": 50}], clock)
    for v in ("1", "2"):
        for i in range(100):
            ev.ingest(
                event(
                    outcome="failure" if i % 10 == 0 else "success",
                    at=clock.time_us(),
                    agent_version=v,
                )
            )
    assert ev.evaluate() == []


def test_policy_violations() -> None:
    clock = ManualClock(T0)
    rules = [
        {"name": "denied", "kind": "policy_violation", "violation": "denied", "threshold": 1},
        {"name": "unperm", "kind": "policy_violation", "violation": "unpermitted", "threshold": 1},
        {
            "name": "unappr",
            "kind": "policy_violation",
            "violation": "unapproved",
            "actions": ["pay.*"],
        },
    ]
    ev = evaluator(
        rules, clock, top={"permissions": {"support": {"crm": ["read"], "pay": ["write"]}}}
    )
    base = {"at": clock.time_us(), "agent_role": "support"}
    ev.ingest(event(**base, tool_calls=[call("crm", access="read")]))
    ev.ingest(event(**base, tool_calls=[call("pay", operation="refund", access="write",
                                             status="ok")], attributes={"approval:pay.refund": "x:approved"}))  # fmt: skip
    assert ev.evaluate() == []  # granted, and approved
    ev.ingest(event(**base, tool_calls=[call("crm", access="write", status="denied")]))
    ev.ingest(event(**base, tool_calls=[call("mail", access="write")]))
    ev.ingest(event(**base, tool_calls=[call("pay", operation="refund", access="write")]))
    out = ev.evaluate()
    assert sorted(fired(out)) == [
        "denied:agent=a|integration=crm",
        "unappr:agent=a|integration=pay",
        "unperm:agent=a|integration=mail",
    ]


# -- suppression ----------------------------------------------------------------------------


def test_open_breaker_inhibits_the_failures_it_explains_only() -> None:
    clock = ManualClock(T0)
    ev = evaluator([FAIL], clock)
    ev.context.open_breakers["crm"] = "integration:crm"
    for _ in range(5):  # a fails through crm; b fails on its own
        ev.ingest(
            event("a", "failure", at=clock.time_us(), tool_calls=[call("crm", "short_circuited")])
        )
        ev.ingest(event("b", "failure", at=clock.time_us(), tool_calls=[call("mail", "ok")]))
    out = {a["dedup_key"]: a for a in ev.evaluate()}
    assert out["fail:agent=a"]["labels"]["suppressed"] == "inhibited"
    assert out["fail:agent=a"]["root_cause"] == "breaker:integration:crm"
    assert "suppressed" not in out["fail:agent=b"]["labels"]


def test_cascade_is_grouped_under_the_upstream_alert() -> None:
    clock = ManualClock(T0)
    ev = evaluator([FAIL], clock)
    for _ in range(5):
        ev.ingest(event("up", "failure", at=clock.time_us()))
        ev.ingest(event("down", "failure", at=clock.time_us(), upstream_agent_id="up"))
        ev.ingest(event("solo", "failure", at=clock.time_us(), upstream_agent_id="healthy"))
    out = {a["dedup_key"]: a for a in ev.evaluate()}
    assert "suppressed" not in out["fail:agent=up"]["labels"]
    assert out["fail:agent=down"]["labels"]["suppressed"] == "grouped"
    assert out["fail:agent=down"]["root_cause"] == "fail:agent=up"
    assert "suppressed" not in out["fail:agent=solo"]["labels"]  # its upstream is not failing


def test_a_root_still_firing_keeps_its_cascade_grouped() -> None:
    clock = ManualClock(T0)
    ev = evaluator([{**FAIL, "keep_firing_for_s": 30}], clock)
    for _ in range(5):
        ev.ingest(event("up", "failure", at=clock.time_us()))
    assert [a["dedup_key"] for a in ev.evaluate()] == ["fail:agent=up"]
    clock.advance(s=5)
    for _ in range(20):  # up recovers (its rate drops under the threshold, keep_firing holds it)
        ev.ingest(event("up", "success", at=clock.time_us()))
    for _ in range(5):  # ... while its downstream still fails on what it produced
        ev.ingest(event("down", "failure", at=clock.time_us(), upstream_agent_id="up"))
    out = {a["dedup_key"]: a for a in ev.evaluate()}
    assert out["fail:agent=down"]["labels"]["suppressed"] == "grouped"
    assert out["fail:agent=down"]["root_cause"] == "fail:agent=up"


def test_silence_mutes_matching_alerts_until_it_expires() -> None:
    clock = ManualClock(T0)
    ev = evaluator([{**FAIL, "keep_firing_for_s": 600}], clock)
    ev.context.silences.append(Silence("s1", {"agent_id": "a"}, T0 + 60 * US, "deploy", "ana", T0))
    for agent in ("a", "b"):
        for _ in range(5):
            ev.ingest(event(agent, "failure", at=clock.time_us()))
    out = {a["dedup_key"]: a for a in ev.evaluate()}
    assert out["fail:agent=a"]["labels"]["suppressed"] == "silenced"
    assert "suppressed" not in out["fail:agent=b"]["labels"]
    clock.advance(s=61)
    for _ in range(5):
        ev.ingest(event("a", "failure", at=clock.time_us()))
    out = ev.evaluate()  # the silence expired: sent again, unsilenced
    assert [(a["dedup_key"], "suppressed" in a["labels"]) for a in out] == [("fail:agent=a", False)]


def test_restart_restores_firing_alerts_without_repaging() -> None:
    clock = ManualClock(T0)
    ev = evaluator([FAIL], clock)
    for _ in range(5):
        ev.ingest(event(outcome="failure", at=clock.time_us()))
    published = ev.evaluate()
    clock.advance(s=1)
    again = evaluator([FAIL], clock)
    assert again.restore(published) == 1
    for _ in range(5):
        again.ingest(event(outcome="failure", at=clock.time_us()))
    assert again.evaluate() == []
    clock.advance(s=1)
    for _ in range(20):
        again.ingest(event(at=clock.time_us()))
    out = again.evaluate()
    assert (
        fired(out, "resolved") == ["fail:agent=a"]
        and out[0]["started_at"] == published[0]["started_at"]
    )


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"name": "x", "kind": "failure_rate"}], "needs a threshold"),
        ([{"name": "x", "kind": "failure_rate", "threshold": 0.2, "scope": "integration"}], "per agent"),
        ([{"name": "x", "kind": "nope", "threshold": 1}], "alerts.rules.0.kind"),
        ([{"name": "x", "kind": "latency_degradation", "threshold": 2, "window_s": 900, "baseline_s": 600}],
         "baseline_s must be longer"),
        ([{"name": "x", "kind": "failure_rate", "threshold": 0.5, "critical": 0.2}], "critical"),
        ([{"name": "x", "kind": "failure_rate", "threshold": 0.2}] * 2, "two rules are named"),
    ],
)  # fmt: skip
def test_bad_rules_fail_at_start_naming_the_field(
    tmp_path: Any, rules: list[dict[str, Any]], message: str
) -> None:
    import yaml

    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"alerts": {"rules": rules}}))
    with pytest.raises(ConfigError, match=message):
        load_policy(path)


def test_default_rules_cover_every_kind() -> None:
    kinds = {r.kind for r in FleetPolicy().alerts.rules}
    assert kinds == {"failure_rate", "latency_degradation", "integration_error_rate", "cost_budget",
                     "cost_burn_rate", "schedule", "version_regression", "policy_violation"}  # fmt: skip
