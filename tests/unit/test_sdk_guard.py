"""The SDK guard, driven through a ControlView as the control topic would drive it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fleetpulse import AgentPausedError, CircuitOpenError
from fleetpulse.contract.clock import ManualClock
from fleetpulse.contract.control_state import ControlView
from fleetpulse.sdk.guard import Guard
from fleetpulse.testing import memory_fleet

_seq = iter(range(1, 1_000_000))


def breaker(target: str, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "breaker",
        "target_id": target,
        "state": state,
        "sequence": next(_seq),
        "retry_at": None,
        "probe_allowance": 0.0,
        "reason": "failure rate 80% >= 50% over 40 calls in 30s",
        "actor": "processors",
        **extra,
    }


def pause(agent: str, state: str = "PAUSED") -> dict[str, Any]:
    return {
        "kind": "agent_pause",
        "target_id": agent,
        "state": state,
        "sequence": next(_seq),
        "reason": "incident 12",
        "actor": "user:ana",
    }


@pytest.fixture
def fleet_view() -> Any:
    view = ControlView()
    fleet, sink = memory_fleet("triage", clock=ManualClock(), guard=Guard(view, rng=lambda: 0.5))
    return fleet, sink, view


def test_closed_breakers_let_calls_through(fleet_view: Any) -> None:
    fleet, sink, view = fleet_view
    view.apply(breaker("integration:crm", "CLOSED"))
    with fleet.task("t") as task, task.tool("crm", "get"):
        pass
    assert sink.events[0]["tool_calls"][0]["status"] == "ok"


@pytest.mark.parametrize(
    "target", ["integration:crm", "agent:triage|integration:crm"], ids=["fleet", "agent"]
)
@pytest.mark.parametrize("state", ["OPEN", "FORCED_OPEN"])
def test_open_breakers_short_circuit_and_record_the_call(
    fleet_view: Any, target: str, state: str
) -> None:
    fleet, sink, view = fleet_view
    view.apply(breaker(target, state, retry_at=1_800_000_000_000_000))
    made = False
    with fleet.task("t") as task:
        with pytest.raises(CircuitOpenError) as exc, task.tool("crm", "update", access="write"):
            made = True
        with task.tool("mail", "send"):  # other integrations are not affected
            pass
    assert not made
    assert exc.value.breaker_id == target and exc.value.state == state
    assert exc.value.retry_at is not None and exc.value.agent_id == "triage"
    calls = sink.events[0]["tool_calls"]
    assert [c["status"] for c in calls] == ["short_circuited", "ok"]
    assert calls[0]["error_type"] == "CircuitOpenError" and calls[0]["access"] == "write"
    assert sink.events[0]["outcome"] == "success"  # the agent handled it


def test_another_agents_breaker_does_not_apply(fleet_view: Any) -> None:
    fleet, sink, view = fleet_view
    view.apply(breaker("agent:other|integration:crm", "OPEN"))
    with fleet.task("t") as task, task.tool("crm", "get"):
        pass
    assert sink.events[0]["tool_calls"][0]["status"] == "ok"


@pytest.mark.parametrize(("allowance", "through"), [(0.6, True), (0.4, False), (0.0, False)])
def test_half_open_lets_the_probe_share_through(
    fleet_view: Any, allowance: float, through: bool
) -> None:
    fleet, _, view = fleet_view  # the guard's rng draws 0.5
    view.apply(breaker("integration:crm", "HALF_OPEN", probe_allowance=allowance))
    with fleet.task("t") as task:
        try:
            with task.tool("crm", "get"):
                pass
            passed = True
        except CircuitOpenError:
            passed = False
    assert passed is through


def test_two_half_open_breakers_on_one_call_let_the_smaller_share_through() -> None:
    """The integration's breaker and the agent's own, HALF_OPEN together after one outage:
    one draw per call decides for both, so 1% and 1% let 1% of calls through, not 0.01%."""
    draws = iter([0.005, 0.02] * 500)
    view = ControlView()
    fleet, sink = memory_fleet(
        "triage", clock=ManualClock(), guard=Guard(view, rng=lambda: next(draws))
    )
    for target in ("integration:crm", "agent:triage|integration:crm"):
        view.apply(breaker(target, "HALF_OPEN", probe_allowance=0.01))
    for _ in range(1000):
        with fleet.task("t") as task:
            try:
                with task.tool("crm", "get"):
                    pass
            except CircuitOpenError:
                pass
    statuses = [e["tool_calls"][0]["status"] for e in sink.events]
    assert statuses.count("ok") == 500


def test_disabled_and_reset_breakers_let_calls_through_again(fleet_view: Any) -> None:
    fleet, _, view = fleet_view
    view.apply(breaker("integration:crm", "OPEN"))
    view.apply(breaker("integration:crm", "DISABLED"))
    with fleet.task("t") as task, task.tool("crm", "get"):
        pass


def test_stale_control_messages_do_not_reopen(fleet_view: Any) -> None:
    fleet, _, view = fleet_view
    old = breaker("integration:crm", "OPEN")
    view.apply(breaker("integration:crm", "CLOSED"))
    view.apply(old)  # arrives late, lower sequence
    with fleet.task("t") as task, task.tool("crm", "get"):
        pass


def test_paused_agent_cannot_start_tasks_until_resumed(fleet_view: Any) -> None:
    fleet, sink, view = fleet_view
    view.apply(pause("triage"))
    with pytest.raises(AgentPausedError) as exc:
        fleet.task("t")
    assert exc.value.reason == "incident 12" and exc.value.actor == "user:ana"
    view.apply(pause("other"))  # someone else's pause
    view.apply(pause("triage", "RUNNING"))
    with fleet.task("t"):
        pass
    assert len(sink.events) == 1


def test_an_open_agent_breaker_pauses_the_agent(fleet_view: Any) -> None:
    fleet, _, view = fleet_view
    view.apply(breaker("agent:triage", "OPEN"))
    with pytest.raises(AgentPausedError, match="breaker agent:triage is OPEN"):
        fleet.task("t")


def test_a_paused_agent_may_wait_for_resume(fleet_view: Any) -> None:
    fleet, sink, view = fleet_view
    view.apply(pause("triage"))
    threading.Timer(0.2, lambda: view.apply(pause("triage", "RUNNING"))).start()
    started = time.monotonic()
    with fleet.task("t", wait_if_paused=10):
        pass
    assert time.monotonic() - started < 5  # woke on the resume, not at the deadline
    assert len(sink.events) == 1
    view.apply(pause("triage"))
    with pytest.raises(AgentPausedError):
        fleet.task("t", wait_if_paused=0.05)


def test_the_guard_records_when_it_saw_each_state() -> None:
    view = ControlView()
    clock = iter([10, 20])
    guard = Guard(view, now_us=lambda: next(clock))
    view.apply(breaker("integration:crm", "OPEN"))
    view.apply(breaker("integration:crm", "HALF_OPEN"))
    assert guard.observed["integration:crm"] == ("HALF_OPEN", 20)
    assert guard.state_of("integration:crm") == "HALF_OPEN"
    assert guard.state_of("integration:nothing") is None
