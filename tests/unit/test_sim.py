"""The simulator's pure parts: scenario validation, task planning under faults, the clock."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fleetpulse.contract.errors import ConfigError
from fleetpulse.sim.agents import (
    OutputValidationError,
    SimAgent,
    SimClock,
    UpstreamDataError,
    World,
)
from fleetpulse.sim.scenario import Scenario, Step, load_scenario

BASE: dict[str, Any] = {
    "name": "t",
    "duration_s": 60,
    "integrations": {"crm": {"latency_ms": 100}},
    "agents": [
        {"id": "a", "task_type": "x", "tools": [{"integration": "crm"}], "failure_rate": 0},
        {"id": "b", "task_type": "y", "upstream": "a", "failure_rate": 0},
    ],
}


class FakeFleet:
    """What planning reads from a Fleet: the version it runs."""

    config_version: int | None = 1


def agent(agent_id: str = "a", world: World | None = None, seed: int = 1) -> SimAgent:
    sc = Scenario.model_validate(BASE)
    w = world or World(dict(sc.integrations))
    return SimAgent(
        agent_id,
        sc.group_of(agent_id),
        FakeFleet(),
        SimClock(),
        w,
        seed=seed,
        observe=lambda e: None,
    )  # type: ignore[arg-type]


def test_the_shipped_incident_scenario_is_valid() -> None:
    sc = load_scenario("incident")
    faults = {s.fault for s in sc.timeline if s.fault}
    assert faults == {
        "outage",
        "latency",
        "release",
        "runaway",
        "stop",
        "bad_output",
        "write_without_permission",
    }
    assert {s.action for s in sc.timeline if s.action} == {"pause", "resume", "rollback"}
    assert max(s.until for s in sc.timeline) < sc.duration_s - 30, "no time left to resolve"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"agents": [{"id": "a", "task_type": "x", "tools": [{"integration": "nope"}]}]},
            "unknown integration",
        ),
        ({"timeline": [{"at": 1, "fault": "outage", "for": 5}]}, "outage needs integration"),
        ({"timeline": [{"at": 1, "fault": "stop", "agent": "zz", "for": 5}]}, "unknown agent"),
        ({"timeline": [{"at": 1, "fault": "stop", "agent": "a"}]}, "needs for"),
        ({"timeline": [{"at": 99, "action": "pause", "agent": "a"}]}, "after duration_s"),
        ({"policy": {"breakers": {"defaults": {"minimum_calls": 0}}}}, "minimum_calls"),
    ],
)
def test_a_bad_scenario_names_what_is_wrong(
    tmp_path: Any, change: dict[str, Any], field: str
) -> None:
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE | change))
    with pytest.raises(ConfigError, match=field):
        load_scenario(path)


def test_plans_are_seeded() -> None:
    assert [agent(seed=3).plan() for _ in range(5)] == [agent(seed=3).plan() for _ in range(5)]


def test_an_outage_fails_every_call_to_the_integration() -> None:
    w = World(dict(Scenario.model_validate(BASE).integrations))
    w.outages["crm"] = Step.model_validate(
        {"at": 0, "fault": "outage", "integration": "crm", "for": 9, "mode": "timeout"}
    )
    plans = [agent(world=w).plan() for _ in range(20)]
    assert all(c.fails == "timeout" and c.latency_ms == 5000 for p in plans for c in p.calls)


def test_runaway_burns_tokens_and_bad_output_cascades() -> None:
    w = World(dict(Scenario.model_validate(BASE).integrations))
    normal = agent(world=w, seed=5).plan()
    w.runaway["a"] = 100
    w.bad_output.add("a")
    burning = agent(world=w, seed=5).plan()
    assert burning.input_tokens > 50 * normal.input_tokens
    assert burning.model_ms < 10 * normal.model_ms  # the loop's calls are not 100x slower
    downstream = [agent("b", world=w, seed=s).plan().failure for s in range(50)]
    assert UpstreamDataError in downstream
    assert (
        sum(
            f is OutputValidationError
            for f in [agent(world=w, seed=s).plan().failure for s in range(50)]
        )
        > 30
    )


def test_a_regressed_version_fails_at_its_rate() -> None:
    w = World(dict(Scenario.model_validate(BASE).integrations))
    w.regressed[("a", 2)] = 1.0
    a = agent(world=w)
    assert a.plan().failure is None
    a.fleet.config_version = 2  # what the SDK follows from the governance log
    assert a.plan().failure is OutputValidationError


def test_sim_clock_ends_the_task_now_with_simulated_durations() -> None:
    clock = SimClock()
    clock.begin(planned_ms=2000)
    start = clock.time_us()
    clock.spend(1500)
    clock.spend(500)
    assert clock.perf_ns() == 2_000_000_000
    assert abs(clock.time_us() - time.time() * 1e6) < 200_000  # ends about now
    assert clock.time_us() - start == 2_000_000


def test_stopped_agents_do_not_run() -> None:
    w = World(dict(Scenario.model_validate(BASE).integrations))
    w.stopped.add("a")
    a = agent(world=w)
    a.run_task = lambda: pytest.fail("a stopped agent ran a task")  # type: ignore[method-assign]
    stop = threading.Event()
    t = threading.Thread(target=a.run, args=(stop, time.time() - 10))
    t.start()
    time.sleep(0.3)
    stop.set()
    t.join(5)


def test_sim_show_and_policy_print_the_scenario() -> None:
    import yaml
    from typer.testing import CliRunner

    from fleetpulse.cli import app

    shown = CliRunner().invoke(app, ["sim", "show", "incident"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "ledger-sync" in shown.output and "outage stripe for 30s" in shown.output
    policy = CliRunner().invoke(app, ["sim", "policy", "incident"])
    assert policy.exit_code == 0
    assert yaml.safe_load(policy.output) == load_scenario("incident").policy
    missing = CliRunner().invoke(app, ["sim", "show", "no-such-scenario"])
    assert missing.exit_code != 0
    scaled = CliRunner().invoke(
        app, ["sim", "show", "incident", "--scale", "715"], env={"COLUMNS": "200"}
    )
    assert scaled.exit_code == 0, scaled.output
    assert "10,010 agents" in scaled.output and "+ 2,856 more" in scaled.output  # support
    too_big = CliRunner().invoke(app, ["sim", "show", "incident", "--scale", "20000"])
    assert too_big.exit_code != 0


def test_scaling_multiplies_every_group_and_keeps_the_named_agents() -> None:
    sc = load_scenario("incident")
    big = sc.scaled(10)
    assert len(big.agent_ids()) == 10 * len(sc.agent_ids())
    assert len(set(big.agent_ids())) == len(big.agent_ids())
    assert big.named_ids() == sc.agent_ids()  # the timeline's agents keep their names
    assert {s.agent for s in big.timeline if s.agent} <= set(big.named_ids())
    assert big.timeline == sc.timeline and big.policy == sc.policy
    support = next(g for g in big.agents if g.id == "support")
    first = ["support-00", "support-01", "support-02", "support-03", "support-00004"]
    assert support.ids()[:5] == first
    assert len(support.ids()) == 40 and big.group_of("support-00039").id == "support"
    assert big.group_of("enrich-00009").id == "enrich"  # a lone agent keeps its bare name
    assert "enrich" in big.group_of("enrich").ids()
    assert sc.scaled(1) is sc
    assert sc.scaled(10).scaled(3).agents[0].scale == 30
    with pytest.raises(ConfigError, match="scale"):
        sc.scaled(0)


def test_bulk_agents_plan_play_and_produce_in_one_tick() -> None:
    from fleetpulse.sim.bulk import BulkFleet
    from fleetpulse.testing import memory_fleet

    sc = Scenario.model_validate(BASE).scaled(50)  # a: 1 named + 49 added; b likewise
    base, sink = memory_fleet("fleetpulse-sim")
    w = World(dict(sc.integrations))
    bulk = BulkFleet(sc, w, base)
    assert bulk.agents == 98
    assert bulk.tick(1.0) == 98  # 1 task/s per agent
    events = sink.events
    assert len(events) == 98 and bulk.stats.outcomes == {"success": 98}
    added = set(sc.agent_ids()) - set(sc.named_ids())
    assert {e["agent_id"] for e in events} <= added
    assert {key.decode() for _, key, _ in sink.records} == {e["agent_id"] for e in events}
    b = [e for e in events if e["task_type"] == "y"]
    assert b and all(e["upstream_agent_id"] == "a" for e in b)
    # an outage reaches the added agents too: every call to crm times out, the task with it
    w.outages["crm"] = Step.model_validate(
        {"at": 0, "fault": "outage", "integration": "crm", "for": 9, "mode": "timeout"}
    )
    bulk.tick(0.5)
    a = [e for e in sink.events[98:] if e["task_type"] == "x"]
    assert a and all(e["outcome"] == "timeout" for e in a)
    assert all(c["status"] == "timeout" for e in a for c in e["tool_calls"])


def test_bulk_agents_obey_open_breakers_and_pauses_like_the_sdk() -> None:
    from fleetpulse.contract.control_state import ControlView
    from fleetpulse.sdk.guard import Guard
    from fleetpulse.sim.bulk import BulkFleet
    from fleetpulse.testing import memory_fleet

    sc = Scenario.model_validate(BASE).scaled(10)
    view = ControlView()
    base, sink = memory_fleet("fleetpulse-sim", guard=Guard(view, rng=lambda: 0.5))
    bulk = BulkFleet(sc, World(dict(sc.integrations)), base)
    view.apply(
        {"kind": "breaker", "target_id": "integration:crm", "state": "OPEN", "sequence": 1,
         "retry_at": None, "probe_allowance": 0.0, "reason": "test", "actor": "processors"}
    )  # fmt: skip
    view.apply(
        {"kind": "agent_pause", "target_id": "b-00001", "state": "PAUSED", "sequence": 2,
         "reason": "test", "actor": "user:ana"}
    )  # fmt: skip
    bulk.tick(2.0)
    events = sink.events
    a = [e for e in events if e["task_type"] == "x"]
    assert len(a) == 18 and all(e["outcome"] == "failure" for e in a)  # 9 agents, 2 s
    assert all(
        e["error_type"] == "CircuitOpenError"
        and [c["status"] for c in e["tool_calls"]] == ["short_circuited"]
        for e in a
    )
    assert "b-00001" not in {e["agent_id"] for e in events}  # paused: its tasks are skipped
    assert bulk.stats.paused_skips > 0
    assert bulk.stats.events + bulk.stats.paused_skips == 36
