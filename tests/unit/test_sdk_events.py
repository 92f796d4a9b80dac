"""What the SDK puts in a TaskEvent, driven by a ManualClock and an in-memory transport."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from fleetpulse import EventValidationError, PermissionDeniedError
from fleetpulse.contract.clock import ManualClock
from fleetpulse.contract.events import validator
from fleetpulse.sdk import input_hash
from fleetpulse.testing import memory_fleet

T0 = 1_790_000_000_000_000  # microseconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=T0)


def test_task_records_timing_tools_usage_and_cost(clock: ManualClock) -> None:
    fleet, sink = memory_fleet("triage", clock=clock, agent_version="7", agent_role="support")
    with fleet.task("triage", input={"ticket": 42}) as task:
        clock.advance(ms=10)
        with task.tool("salesforce", "query", access="read", target="account/42"):
            clock.advance(ms=120)
        with task.tool("gmail", "send", access="write", target="thread/9", cost_micros=30):
            clock.advance(ms=80)
        task.usage(model="gpt-4o", input_tokens=1000, output_tokens=200)
        clock.advance(ms=40)
    [event] = sink.events
    assert event["agent_id"] == "triage"
    assert event["agent_version"] == "7"
    assert event["agent_role"] == "support"
    assert event["outcome"] == "success"
    assert event["error_type"] is None
    assert event["duration_ms"] == pytest.approx(250.0)
    assert event["started_at"] == datetime.fromtimestamp(T0 / 1e6, UTC)
    assert (event["ended_at"] - event["started_at"]).total_seconds() == pytest.approx(0.25)
    assert event["input_hash"] == input_hash({"ticket": 42})
    assert event["model"] == "gpt-4o" and event["provider"] == "openai"
    assert (event["input_tokens"], event["output_tokens"]) == (1000, 200)
    # 1000 x 2.50 + 200 x 10.00 micro-USD from the price table, plus the tool's own 30
    assert event["cost_micros"] == 4500 + 30
    assert event["price_table_version"] == fleet.prices.version
    sf, gm = event["tool_calls"]
    assert (sf["integration"], sf["operation"], sf["access"], sf["target"]) == (
        "salesforce",
        "query",
        "read",
        "account/42",
    )
    assert sf["status"] == "ok" and sf["latency_ms"] == pytest.approx(120.0)
    assert gm["access"] == "write" and gm["cost_micros"] == 30
    assert gm["latency_ms"] == pytest.approx(80.0)
    assert sf["call_id"] != gm["call_id"]
    assert task.event is not None
    validator("TaskEvent")(task.event)  # the SDK's event is schema-valid


@pytest.mark.parametrize(
    "exc, outcome",
    [
        (ValueError("bad"), "failure"),
        (TimeoutError(), "timeout"),
        (asyncio.CancelledError(), "cancelled"),
        (PermissionDeniedError("a", "r", "gmail", "write"), "denied"),
    ],
)
def test_an_exception_sets_outcome_and_error_type_then_propagates(
    exc: BaseException, outcome: str
) -> None:
    fleet, sink = memory_fleet("triage")
    with pytest.raises(type(exc)), fleet.task("triage"):
        raise exc
    [event] = sink.events
    assert event["outcome"] == outcome
    assert event["error_type"] == type(exc).__name__


@pytest.mark.parametrize(
    "exc, status",
    [(ConnectionError(), "error"), (TimeoutError(), "timeout")],
)
def test_a_failing_tool_call_is_recorded_with_its_status(exc: Exception, status: str) -> None:
    fleet, sink = memory_fleet("triage")
    with pytest.raises(type(exc)), fleet.task("triage") as task, task.tool("stripe", "charge"):
        raise exc
    [event] = sink.events
    [call] = event["tool_calls"]
    assert call["status"] == status
    assert call["error_type"] == type(exc).__name__
    assert event["outcome"] == ("timeout" if status == "timeout" else "failure")


def test_nested_tasks_share_the_trace_and_link_the_parent() -> None:
    fleet, sink = memory_fleet("planner")
    with fleet.task("plan") as parent, fleet.task("research") as child:
        pass
    child_event, parent_event = sink.events  # the child ends first
    assert child_event["parent_task_id"] == parent.task_id
    assert child_event["trace_id"] == parent_event["trace_id"] == parent.task_id
    assert parent_event["parent_task_id"] is None
    assert child.task_id != parent.task_id


def test_upstream_agent_and_attributes_are_carried() -> None:
    fleet, sink = memory_fleet("billing")
    with fleet.task("invoice", upstream_agent_id="triage", attributes={"team": "fin"}) as t:
        t.annotate(customer="acme")
    [event] = sink.events
    assert event["upstream_agent_id"] == "triage"
    assert event["attributes"] == {"team": "fin", "customer": "acme"}


def test_explicit_cost_wins_over_the_price_table() -> None:
    fleet, sink = memory_fleet("triage")
    with fleet.task("triage") as task:
        task.usage(model="gpt-4o", input_tokens=1000, output_tokens=200, cost_micros=123)
    [event] = sink.events
    assert event["cost_micros"] == 123
    assert event["price_table_version"] == ""


def test_unknown_model_costs_nothing_and_says_so() -> None:
    fleet, sink = memory_fleet("triage")
    with fleet.task("triage") as task:
        task.usage(model="in-house-llm", input_tokens=1000, output_tokens=10)
    [event] = sink.events
    assert event["cost_micros"] == 0
    assert event["price_table_version"] == ""
    assert event["provider"] is None


def test_set_outcome_overrides_success() -> None:
    fleet, sink = memory_fleet("triage")
    with fleet.task("triage") as task:
        task.set_outcome("denied", "PolicyRefusal")
    assert sink.events[0]["outcome"] == "denied"


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda f: f.task(""), "task_type"),
        (lambda f: f.task("t", input=object()), "input"),
        (lambda f: f.task("t").tool("gmail", "send", access="delete"), "tool.access"),
        (lambda f: f.task("t").tool("", "send"), "tool.integration"),
        (lambda f: f.task("t").tool("gmail", "send", target=42), "tool.target"),
        (lambda f: f.task("t").usage(model="gpt-4o", input_tokens=-1), "usage.input_tokens"),
        (lambda f: f.task("t").usage(model="gpt-4o", output_tokens=1.5), "usage.output_tokens"),
        (
            lambda f: f.task("t").usage(model="gpt-4o", input_tokens=1, cached_tokens=2),
            "usage.cached_tokens",
        ),
        (lambda f: f.task("t").set_outcome("great"), "outcome"),
        (lambda f: f.task("t").annotate(n=3), "attributes.n"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_field(call, field: str) -> None:  # type: ignore[no-untyped-def]
    fleet, sink = memory_fleet("triage")
    with pytest.raises(ValueError) as info:
        call(fleet)
    assert isinstance(info.value, EventValidationError)
    assert info.value.field == field
    assert str(info.value).startswith(field)
    assert sink.records == []


def test_input_hash_is_canonical() -> None:
    assert input_hash({"b": 1, "a": {"y": [1, 2], "x": "é"}}) == input_hash(
        {"a": {"x": "é", "y": [1, 2]}, "b": 1}
    )
    assert input_hash({"a": 1}) != input_hash({"a": 2})
    # the documented canonical form: sorted keys, no spaces, UTF-8
    import hashlib

    assert input_hash({"b": 1, "a": "é"}) == hashlib.sha256('{"a":"é","b":1}'.encode()).hexdigest()
    assert input_hash(b"raw") == hashlib.sha256(b"raw").hexdigest()


def test_async_tasks_work_and_nest_per_coroutine() -> None:
    fleet, sink = memory_fleet("async-agent")

    async def job(name: str) -> None:
        async with fleet.task(name) as task, task.tool("http", "get"):
            await asyncio.sleep(0)

    async def main() -> None:
        async with fleet.task("root"):
            await asyncio.gather(job("a"), job("b"))

    asyncio.run(main())
    events = {e["task_type"]: e for e in sink.events}
    assert events["a"]["parent_task_id"] == events["root"]["task_id"]
    assert events["b"]["parent_task_id"] == events["root"]["task_id"]


def test_strict_validation_checks_the_whole_event() -> None:
    fleet, sink = memory_fleet("triage", validate_events=True)
    with pytest.raises(EventValidationError, match=r"attributes\['bad'\]"), fleet.task("t") as t:
        t.attributes["bad"] = 3  # type: ignore[assignment]  # bypasses annotate()
    assert sink.records == []


def test_closed_fleet_refuses_events() -> None:
    fleet, sink = memory_fleet("triage")
    fleet.close()
    with pytest.raises(EventValidationError, match="closed"), fleet.task("t"):
        pass
    assert sink.closed
