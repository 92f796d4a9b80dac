"""End to end: the demo's incident scenario on the whole stack (real Kafka, the processors, the
sink into chDB, the control API, the pager), as `make demo` runs it.

One run (~3 minutes) feeds every assertion below; each failure message says which part of the
incident went wrong.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fleetpulse.contract.config import DevstackSettings
from fleetpulse.contract.stack_state import read_state
from fleetpulse.devstack import free_port
from fleetpulse.sim.demo import DemoResult, run_demo
from fleetpulse.sim.runner import SimResult
from fleetpulse.sim.scenario import load_scenario

pytestmark = pytest.mark.integration

SCENARIO = load_scenario("incident")
OUTAGE = next(s for s in SCENARIO.timeline if s.fault == "outage")
BREAKER = SCENARIO.policy["breakers"]["defaults"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, kafka_jars: Path) -> tuple[DemoResult, str]:
    home = tmp_path_factory.mktemp("demo")
    settings = DevstackSettings(
        home=home,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_heap="512m",
    )
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    result = run_demo(settings, scenario="incident", keep=False, console=console)
    return result, out.getvalue()


def crossing(sim: SimResult, integration: str) -> float:
    """When the produced calls first met the breaker's threshold (wall clock, s).

    In produce order, as the breaker stage counts them: each attempted call in the second it
    ended, the window being the last ``sliding_window_s`` whole seconds up to now. (An
    exact sliding window can cross a hair later than the stage's whole seconds; once the breaker
    is open, calls are short-circuited and such a window would only cross on the next probes.)
    """
    window = BREAKER["sliding_window_s"]
    seen: list[tuple[int, bool]] = []
    for e in sorted(sim.emitted, key=lambda e: e.produced_at):
        calls = [c for c in e.event["tool_calls"] if c["integration"] == integration and c["status"] in ("ok", "error", "timeout")]  # fmt: skip
        if not calls:
            continue
        seen += [((c["started_at"] + int(c["latency_ms"] * 1000)) // 1_000_000, c["status"] != "ok") for c in calls]  # fmt: skip
        now = max(int(e.produced_at), *(sec for sec, _ in seen))  # the stage's clock, in seconds
        recent = [bad for sec, bad in seen if sec > now - window]
        if len(recent) >= BREAKER["minimum_calls"] and sum(recent) / len(recent) >= BREAKER["failure_rate_threshold"]:  # fmt: skip
            return e.produced_at
    raise AssertionError(f"the {integration} calls never crossed the breaker's threshold")


def near_midnight_utc(sim: SimResult) -> bool:
    """The runaway's projected spend crosses the budget only with ~10 minutes of the UTC day
    left to project over (or more); a run near midnight cannot show it."""
    return 86400 - sim.started % 86400 < 20 * 60


def lifecycle(alerts: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["dedup_key"] == key]


def test_clickhouse_holds_exactly_the_events_produced(demo: tuple[DemoResult, str]) -> None:
    result, text = demo
    produced = result.sim.event_ids()
    assert len(produced) > 1000, "the fleet barely ran"
    assert (result.missing, result.extra, result.rows) == (0, 0, len(produced)), text[-3000:]
    assert "exactly the events produced" in text


def test_the_outage_breaker_opened_within_2s_probed_and_closed(
    demo: tuple[DemoResult, str],
) -> None:
    sim = demo[0].sim
    changes = [
        (t, s) for t, b, s in sim.breaker_changes if b == f"integration:{OUTAGE.integration}"
    ]
    opened = next((t for t, s in changes if s == "OPEN"), None)
    assert opened is not None, f"the breaker never opened: {changes}"
    crossed = crossing(sim, OUTAGE.integration or "")
    lag = opened - crossed
    assert opened > sim.started + OUTAGE.at, "opened before the outage began"
    # each agent thread stamps produced_at after its produce call returns, so on a busy machine
    # the stamps can trail the records' real order by seconds and the model's crossing comes
    # late: the breaker then looks early (runs have seen it up to 7 s early), while it
    # did open after the outage began (asserted above). Late is the defect a user would
    # notice, and that bound stays tight.
    assert lag <= 2.0, (
        f"opened {lag:.2f}s after the threshold crossing (outage at t+{OUTAGE.at:g}s, crossing "
        f"t+{crossed - sim.started:.2f}s, changes {[(round(t - sim.started, 2), s) for t, s in changes]})"
    )
    recovered = sim.started + OUTAGE.until
    states = [s for _, s in changes]
    assert "HALF_OPEN" in states, states
    assert states[-1] == "CLOSED" and changes[-1][0] > recovered, changes
    saved = demo[0].report.records("Calls per integration")
    assert next(r for r in saved if r["integration"] == OUTAGE.integration)["calls_saved"] > 0


@pytest.mark.parametrize(
    "key",
    [
        "integration-error-rate:integration=stripe",
        "agent-failure-rate:agent=enrich",
        "agent-burn-rate:agent=outreach-00",
        "agent-schedule:agent=ledger-sync:missed",
        "version-regression:agent=research-01",
        "denied-calls:agent=support-01|integration=stripe",
    ],
)
def test_alert_fired_and_resolved(demo: tuple[DemoResult, str], key: str) -> None:
    if key.startswith("agent-burn-rate") and near_midnight_utc(demo[0].sim):
        pytest.skip("the burn rate projects spend to midnight UTC, which was minutes away")
    events = lifecycle(demo[0].alerts, key)
    statuses = [a["status"] for a in events]
    assert "firing" in statuses, (
        f"{key} never fired; alerts seen: {sorted({a['dedup_key'] for a in demo[0].alerts})}"
    )
    assert statuses[-1] == "resolved", f"{key} did not resolve: {statuses}"
    assert not [a for a in events if a["status"] == "firing" and a["labels"].get("suppressed")]


def test_outage_victims_are_inhibited_by_the_breaker(demo: tuple[DemoResult, str]) -> None:
    victims = [
        a for a in demo[0].alerts if a["dedup_key"].startswith("agent-failure-rate:agent=support-")
    ]
    firing = [a for a in victims if a["status"] == "firing"]
    assert firing, "the outage made no support agent's failure rate alert"
    for a in firing:
        assert a["labels"].get("suppressed") == "inhibited", a
        assert a["root_cause"] == f"breaker:integration:{OUTAGE.integration}", a


def test_cascade_is_grouped_under_the_upstream_root_cause(demo: tuple[DemoResult, str]) -> None:
    for agent in ("route-00", "route-01"):
        events = lifecycle(demo[0].alerts, f"agent-failure-rate:agent={agent}")
        firing = [a for a in events if a["status"] == "firing"]
        assert firing, f"{agent} did not alert on the cascade"
        for a in firing:
            assert a["labels"].get("suppressed") == "grouped", a
            assert a["root_cause"] == "agent-failure-rate:agent=enrich", a
        assert events[-1]["status"] == "resolved"


def test_report_answers_from_clickhouse(demo: tuple[DemoResult, str]) -> None:
    result, text = demo
    fleet = {r["agent"]: r for r in result.report.records("Fleet")}
    assert set(fleet) == set(SCENARIO.agent_ids())
    assert fleet["research-01"]["versions"] == "1,2"  # the release, then the rollback
    audit = result.report.records("support-01 on customer/42")
    assert [
        r["status"] for r in audit if r["access"] == "write" and r["integration"] == "stripe"
    ] == ["denied"] * 3
    decided = {r["decision"] for r in result.report.records("Approvals")}
    assert decided == {"approved", "denied"}
    alerts = {r["dedup_key"]: r for r in result.report.records("Alerts")}
    assert (
        alerts["agent-failure-rate:agent=route-00"]["root_cause"]
        == "agent-failure-rate:agent=enrich"
    )
    assert "demo stack stopped" in text


def test_demo_stops_what_it_started(demo: tuple[DemoResult, str]) -> None:
    state = read_state(demo[0].home)
    assert state is None or not state.get("services"), state
