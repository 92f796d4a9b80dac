"""The breaker state machine, its window, what counts, the policy and the control view:
pure logic, explicit time, no broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpulse.contract.breakers import (
    BreakerKey,
    BreakerState,
    State,
    from_control,
    next_sequence,
    parse_breaker_id,
    to_control,
)
from fleetpulse.contract.control_state import ControlView
from fleetpulse.contract.errors import ConfigError
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.policy import BreakerPolicy, FleetPolicy, load_policy
from fleetpulse.processors.breakers.machine import (
    US,
    Breaker,
    CallWindow,
    classify_call,
    classify_task,
)

T0 = 1_800_000_000 * US  # a round second
KEY = BreakerKey("integration", integration="crm")
POLICY = BreakerPolicy(
    failure_rate_threshold=0.5,
    slow_call_duration_ms=1000,
    slow_call_rate_threshold=0.8,
    minimum_calls=10,
    sliding_window_s=10,
    wait_in_open_s=5,
    permitted_calls_in_half_open=4,
)


def breaker(policy: BreakerPolicy = POLICY) -> Breaker:
    return Breaker(KEY, policy)


def feed(b: Breaker, sec: int, calls: int, failures: int = 0, slow: int = 0, src: int = 0) -> None:
    b.window.set_cell(src, sec, calls, failures, slow)


def opened(b: Breaker, at: int = T0) -> Breaker:
    feed(b, at // US, 10, 10)
    assert b.evaluate(at).state == State.OPEN  # type: ignore[union-attr]
    return b


# -- CLOSED -> OPEN ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("calls", "failures", "slow", "opens"),
    [
        (10, 5, 0, True),  # failure rate exactly at the threshold opens (resilience4j: >=)
        (10, 4, 0, False),  # just below
        (9, 9, 0, False),  # 100% failures but under the minimum number of calls
        (10, 0, 8, True),  # slow-call rate exactly at its threshold
        (10, 0, 7, False),
        (20, 10, 0, True),
        (0, 0, 0, False),
    ],
)
def test_closed_opens_when_a_rate_reaches_its_threshold_with_enough_calls(
    calls: int, failures: int, slow: int, opens: bool
) -> None:
    b = breaker()
    feed(b, T0 // US, calls, failures, slow)
    new = b.evaluate(T0)
    assert (new is not None and new.state == State.OPEN) is opens
    if opens:
        assert new is not None
        assert new.retry_at_us == T0 + 5 * US
        assert new.measurements["calls"] == calls
        assert new.measurements["threshold"] == 0.5
        assert "rate" in new.reason and f"{calls} calls" in new.reason


def test_the_window_slides_failures_out() -> None:
    b = breaker()
    feed(b, T0 // US, 10, 10)
    # 10 s window: at T0 + 10 s the second T0 is out of it
    assert b.evaluate(T0 + 10 * US) is None
    # the same failures spread inside the window do open
    b2 = breaker()
    feed(b2, T0 // US, 5, 5)
    feed(b2, T0 // US + 9, 5, 5)
    assert b2.evaluate(T0 + 9 * US) is not None


def test_minimum_calls_counts_the_whole_fleet() -> None:
    b = breaker()
    for src in range(5):  # five source partitions, 2 failing calls each
        feed(b, T0 // US, 2, 2, src=src)
    assert b.evaluate(T0) is not None


# -- OPEN -> HALF_OPEN -> CLOSED / OPEN --------------------------------------------------------


def test_open_waits_then_half_opens_with_a_probe_share() -> None:
    b = opened(breaker())
    assert b.evaluate(T0 + 5 * US - 1) is None
    new = b.evaluate(T0 + 5 * US)
    assert new is not None and new.state == State.HALF_OPEN
    # 10 calls in the 10 s window = 1 call/s; 4 probes wanted within ~5 s: 80% of calls
    assert new.probe_allowance == pytest.approx(4 / (1 * 5))
    busy = breaker()
    feed(busy, T0 // US, 1000, 1000)  # 100 calls/s: 4 probes in 5 s is under 1%, floored
    busy.evaluate(T0)
    assert busy.evaluate(T0 + 5 * US).probe_allowance == 0.01  # type: ignore[union-attr]
    assert new.since_us == T0 + 5 * US


def half_open(b: Breaker) -> int:
    opened(b)
    at = T0 + 5 * US
    assert b.evaluate(at).state == State.HALF_OPEN  # type: ignore[union-attr]
    return at


def test_half_open_closes_when_the_probes_succeed() -> None:
    b = breaker()
    at = half_open(b)
    feed(b, at // US, 3, 0)
    assert b.evaluate(at + US // 2) is None  # 3 of 4 probes back: keep waiting
    feed(b, at // US, 4, 1)  # 25% failed < 50%
    new = b.evaluate(at + US)
    assert new is not None and new.state == State.CLOSED
    assert "probes succeeded" in new.reason


def test_half_open_reopens_when_the_probes_fail() -> None:
    b = breaker()
    at = half_open(b)
    feed(b, at // US, 4, 2)  # 50% >= 50%
    new = b.evaluate(at + US)
    assert new is not None and new.state == State.OPEN
    assert new.retry_at_us == at + US + 5 * US
    assert new.reason.startswith("probes: failure rate")


def test_half_open_ignores_calls_from_before_it() -> None:
    b = breaker()
    at = half_open(b)
    feed(b, at // US - 1, 100, 0)  # successes from before HALF_OPEN are not probes
    assert b.evaluate(at + US) is None


def test_half_open_gives_up_after_max_wait() -> None:
    b = breaker(POLICY.model_copy(update={"max_wait_in_half_open_s": 3}))
    at = half_open(b)
    feed(b, at // US, 1, 0)
    assert b.evaluate(at + 2 * US) is None
    new = b.evaluate(at + 3 * US)
    assert new is not None and new.state == State.OPEN
    assert "only 1 of 4 probes" in new.reason


def test_closed_window_counts_from_the_last_transition() -> None:
    b = breaker()
    at = half_open(b)
    feed(b, at // US, 4, 0)
    assert b.evaluate(at).state == State.CLOSED  # type: ignore[union-attr]
    # 10 failures that ended before the close do not count against the new CLOSED epoch
    feed(b, at // US - 1, 10, 10, src=1)
    assert b.evaluate(at + US) is None
    feed(b, at // US + 1, 6, 6, src=1)  # 4 ok probes + 6 failures since the close: 60%
    assert b.evaluate(at + US).state == State.OPEN  # type: ignore[union-attr]


# -- operators, restore and sequences ---------------------------------------------------------


@pytest.mark.parametrize("held", [State.FORCED_OPEN, State.DISABLED])
def test_operator_states_are_left_alone(held: State) -> None:
    b = breaker()
    assert b.adopt(BreakerState(KEY, held, since_us=T0, sequence=T0, actor="user:ana"))
    feed(b, T0 // US, 100, 100)
    assert b.evaluate(T0 + 60 * US) is None
    assert b.state.state == held


def test_reset_adopts_closed_with_an_empty_window() -> None:
    b = opened(breaker())
    reset = BreakerState(KEY, State.CLOSED, since_us=T0 + US, sequence=b.state.sequence + 1)
    assert b.adopt(reset)
    assert b.evaluate(T0 + 2 * US) is None  # the failures before the reset no longer count


def test_stale_sequences_are_rejected() -> None:
    b = opened(breaker())
    seq = b.state.sequence
    assert not b.adopt(BreakerState(KEY, State.CLOSED, sequence=seq))
    assert not b.adopt(BreakerState(KEY, State.CLOSED, sequence=seq - 1))
    assert b.state.state == State.OPEN
    assert b.adopt(BreakerState(KEY, State.FORCED_OPEN, sequence=seq + 1))


def test_control_view_keeps_the_newest_sequence_and_reports_stale_ones() -> None:
    view = ControlView()
    stale: list[int] = []
    view.on_stale(lambda r: stale.append(r["sequence"]))
    base = {"kind": "breaker", "target_id": "integration:crm"}
    assert view.apply({**base, "state": "OPEN", "sequence": 5})
    assert not view.apply({**base, "state": "CLOSED", "sequence": 4})
    assert not view.apply({**base, "state": "CLOSED", "sequence": 5})
    assert view.get("breaker", "integration:crm")["state"] == "OPEN"  # type: ignore[index]
    assert stale == [4, 5]
    # a pause with the same target id is a different key
    assert view.apply({"kind": "agent_pause", "target_id": "integration:crm", "sequence": 1})


def test_sequences_are_monotonic_and_clock_based() -> None:
    assert next_sequence(0, T0) == T0
    assert next_sequence(T0 + 10, T0) == T0 + 11  # a writer whose clock is behind still grows


def test_control_messages_roundtrip_through_avro() -> None:
    b = opened(breaker())
    codec = AvroCodec(logical_types=False)
    rec = codec.decode(codec.encode("ControlMessage", to_control(b.state)), "ControlMessage")
    assert from_control(rec) == b.state


# -- ids and classification --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("breaker_id", "key"),
    [
        ("integration:crm", BreakerKey("integration", integration="crm")),
        ("agent:a1|integration:crm", BreakerKey("agent_integration", "a1", "crm")),
        ("agent:a1", BreakerKey("agent", agent_id="a1")),
    ],
)
def test_breaker_ids_parse_and_print(breaker_id: str, key: BreakerKey) -> None:
    assert parse_breaker_id(breaker_id) == key
    assert key.id == breaker_id


@pytest.mark.parametrize("bad", ["crm", "integration:", "agent:", "agent:a|x", ""])
def test_bad_breaker_ids_say_what_is_expected(bad: str) -> None:
    with pytest.raises(ValueError, match="Expected integration:NAME"):
        parse_breaker_id(bad)


@pytest.mark.parametrize(
    ("status", "error_type", "latency", "policy_update", "expected"),
    [
        ("ok", None, 10.0, {}, (1, 0, 0)),
        ("ok", None, 1000.0, {}, (1, 0, 1)),  # slow at exactly the duration
        ("error", "HTTP500", 10.0, {}, (1, 1, 0)),
        ("timeout", "TimeoutError", 5000.0, {}, (1, 1, 1)),
        ("denied", "PermissionDeniedError", 1.0, {}, (0, 0, 0)),  # the agent's doing
        ("short_circuited", "CircuitOpenError", 0.0, {}, (0, 0, 0)),  # never made
        ("error", "HTTP404", 10.0, {"ignore_error_types": {"HTTP404"}}, (0, 0, 0)),
        ("error", "HTTP500", 10.0, {"record_error_types": {"TimeoutError"}}, (1, 0, 0)),
        ("timeout", None, 10.0, {"failure_statuses": {"error"}}, (1, 0, 0)),
        ("denied", None, 10.0, {"failure_statuses": {"error", "denied"}}, (1, 1, 0)),
    ],
)
def test_what_counts_as_a_call_and_as_a_failure(
    status: str,
    error_type: str | None,
    latency: float,
    policy_update: dict[str, object],
    expected: tuple[int, int, int],
) -> None:
    policy = BreakerPolicy.model_validate({**POLICY.model_dump(), **policy_update})
    assert classify_call(policy, status, error_type, latency) == expected


def test_agent_breakers_count_tasks_not_denied_or_cancelled_ones() -> None:
    p = BreakerPolicy(slow_call_duration_ms=100)
    assert classify_task(p, "failure", 5) == (1, 1, 0)
    assert classify_task(p, "timeout", 500) == (1, 1, 1)
    assert classify_task(p, "success", 5) == (1, 0, 0)
    assert classify_task(p, "denied", 5) == (0, 0, 0)
    assert classify_task(p, "cancelled", 5) == (0, 0, 0)


def test_window_cells_replace_and_sources_can_leave() -> None:
    w = CallWindow()
    w.set_cell(0, 100, 5, 1, 0)
    w.set_cell(0, 100, 5, 1, 0)  # a replay republishes the same cell: not counted twice
    w.set_cell(1, 100, 3, 3, 0)
    w.set_cell(0, 101, 2, 0, 2)
    t = w.totals(100)
    assert (t.calls, t.failures, t.slow) == (10, 4, 2)
    w.drop_source(1)
    assert w.totals(0).calls == 7
    w.evict(101)
    assert w.totals(0).calls == 2 and len(w) == 1


# -- the policy file ---------------------------------------------------------------------------


def test_policy_overrides_merge_from_defaults_to_agent(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text(
        """
breakers:
  defaults: {minimum_calls: 50, sliding_window_s: 60}
  integrations:
    crm: {failure_rate_threshold: 0.3}
  agents:
    triage:
      integrations: {crm: {minimum_calls: 5}}
      breaker: {enabled: true}
"""
    )
    b = load_policy(f).breakers
    assert b.for_integration("mail").minimum_calls == 50
    assert b.for_integration("crm").failure_rate_threshold == 0.3
    crm = b.for_agent_integration("triage", "crm")
    assert (crm.minimum_calls, crm.failure_rate_threshold, crm.sliding_window_s) == (5, 0.3, 60)
    assert b.for_agent("triage").enabled and not b.for_agent("other").enabled
    assert load_policy(f).longest_breaker_window_s == 60


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ("breakers: {defaults: {failure_rate_threshold: 1.5}}", "failure_rate_threshold", "1"),
        ("breakers: {defaults: {minimum_call: 5}}", "minimum_call", "unknown field"),
        ("breakrs: {}", "breakrs", "unknown field"),
        (
            "breakers: {integrations: {crm: {wait_in_open_s: -1}}}",
            "integrations.crm.wait_in_open_s",
            "greater than 0",
        ),
        (
            "breakers: {agents: {a: {integrations: {crm: {minimum_calls: zero}}}}}",
            "agents.a.integrations.crm.minimum_calls",
            "integer",
        ),
        ("[1, 2]", "policy", "mapping"),
        ("breakers: {defaults: [", "policy", "not valid YAML"),
    ],
)
def test_invalid_policy_fails_naming_the_file_and_field(
    tmp_path: Path, text: str, field: str, says: str
) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_policy(f)
    assert str(f) in str(exc.value)
    assert field in str(exc.value) and says in str(exc.value)


def test_missing_policy_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FLEETPULSE_POLICY"):
        load_policy(tmp_path / "nope.yaml")


def test_no_policy_means_the_defaults() -> None:
    assert load_policy(None) == FleetPolicy()
    assert FleetPolicy().breakers.for_integration("x").minimum_calls == 20
