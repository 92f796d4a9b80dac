"""Fleet-wide circuit breakers as pure code: ids, call classification, windows, state machine.

Semantics follow resilience4j's CircuitBreaker with a time-based sliding window:

    CLOSED ──(window has >= minimum_calls and failure or slow-call rate >= threshold)──▶ OPEN
    OPEN ──(wait_in_open_s elapsed)──▶ HALF_OPEN
    HALF_OPEN ──(permitted probe calls came back, rates below thresholds)──▶ CLOSED
    HALF_OPEN ──(probe rates >= thresholds, or max_wait_in_half_open_s passed)──▶ OPEN
    FORCED_OPEN, DISABLED: set by operators; the machine leaves them alone until a reset.

Unlike resilience4j, one breaker serves the whole fleet: the counts are the sum over every
agent's calls, and HALF_OPEN lets through a *share* of the fleet's calls (``probe_allowance``)
sized so that about ``permitted_calls_in_half_open`` probes arrive within a few seconds.

Every transition starts a new epoch (``since``): the window counts only calls that ended at or
after it, which is resilience4j's reset of the metrics on each transition. Time comes from the
caller (``now_us``), so every transition is unit tested with an explicit clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from fleetpulse.contract.policy import BreakerPolicy
from fleetpulse.contract.semantics import FAILED_OUTCOMES, UNCOUNTED_OUTCOMES

US = 1_000_000
PROBE_PERIOD_S = 5.0  # HALF_OPEN aims to collect its probes within about this long
MIN_PROBE_SHARE = 0.01


class State(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"
    FORCED_OPEN = "FORCED_OPEN"
    DISABLED = "DISABLED"


OPERATOR_STATES = frozenset({State.FORCED_OPEN, State.DISABLED})


# -- ids ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BreakerKey:
    """What a breaker guards. ``id`` is the control topic's key."""

    scope: str  # integration | agent_integration | agent
    agent_id: str | None = None
    integration: str | None = None

    @property
    def id(self) -> str:
        if self.scope == "integration":
            return f"integration:{self.integration}"
        if self.scope == "agent_integration":
            return f"agent:{self.agent_id}|integration:{self.integration}"
        return f"agent:{self.agent_id}"


def integration_id(integration: str) -> str:
    return f"integration:{integration}"


def agent_integration_id(agent_id: str, integration: str) -> str:
    return f"agent:{agent_id}|integration:{integration}"


def agent_breaker_id(agent_id: str) -> str:
    return f"agent:{agent_id}"


def parse_breaker_id(breaker_id: str) -> BreakerKey:
    """``integration:X``, ``agent:A|integration:X`` or ``agent:A``.

    Raises:
        ValueError: the id has none of these shapes; the message shows them.
    """
    agent, _, integ = breaker_id.partition("|integration:")
    if integ and agent.startswith("agent:") and len(agent) > 6:
        return BreakerKey("agent_integration", agent[6:], integ)
    if breaker_id.startswith("integration:") and len(breaker_id) > 12:
        return BreakerKey("integration", integration=breaker_id[12:])
    if breaker_id.startswith("agent:") and len(breaker_id) > 6 and "|" not in breaker_id:
        return BreakerKey("agent", agent_id=breaker_id[6:])
    raise ValueError(
        f"{breaker_id!r} is not a breaker id. Expected integration:NAME, "
        "agent:AGENT|integration:NAME or agent:AGENT"
    )


# -- what counts ----------------------------------------------------------------------------


def classify_call(
    policy: BreakerPolicy, status: str, error_type: str | None, latency_ms: float
) -> tuple[int, int, int]:
    """(counted, failed, slow) for one tool call under ``policy``; (0, 0, 0) if ignored.

    Short-circuited calls never reached the integration, so they never count; statuses not in
    ``failure_statuses`` (denied by default) and ``ignore_error_types`` count neither way.
    """
    counted, failed = call_verdict(policy, status, error_type)
    if not counted:
        return 0, 0, 0
    return 1, int(failed), int(latency_ms >= policy.slow_call_duration_ms)


def call_verdict(policy: BreakerPolicy, status: str, error_type: str | None) -> tuple[bool, bool]:
    """(counted, failed) for a call of ``status`` and ``error_type`` under ``policy``: what
    ``classify_call`` decides before looking at the latency."""
    if status == "short_circuited":
        return False, False
    if error_type is not None and error_type in policy.ignore_error_types:
        return False, False
    if status == "ok":
        return True, False
    if status not in policy.failure_statuses:
        return status != "denied", False
    if policy.record_error_types and error_type not in policy.record_error_types:
        return True, False
    return True, True


def classify_task(policy: BreakerPolicy, outcome: str, duration_ms: float) -> tuple[int, int, int]:
    """(counted, failed, slow) for one task under an agent breaker's policy."""
    if outcome in UNCOUNTED_OUTCOMES:
        return 0, 0, 0
    slow = 1 if duration_ms >= policy.slow_call_duration_ms else 0
    return 1, (1 if outcome in FAILED_OUTCOMES else 0), slow


# -- the window -----------------------------------------------------------------------------


@dataclass
class Counts:
    calls: int = 0
    failures: int = 0
    slow: int = 0

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_rate(self) -> float:
        return self.slow / self.calls if self.calls else 0.0


class CallWindow:
    """Per-second call counts of one breaker, from several sources (one per source partition).

    Each source's (second, counts) cell is *replaced*, never added to: a source that replays
    its history after a restart republishes the same absolute cells and nothing is counted
    twice.
    """

    def __init__(self) -> None:
        self._cells: dict[tuple[int, int], tuple[int, int, int]] = {}
        self._secs: dict[int, list[int]] = {}

    def set_cell(self, source: int, sec: int, calls: int, failures: int, slow: int) -> None:
        old = self._cells.get((source, sec), (0, 0, 0))
        self._cells[(source, sec)] = (calls, failures, slow)
        tot = self._secs.setdefault(sec, [0, 0, 0])
        tot[0] += calls - old[0]
        tot[1] += failures - old[1]
        tot[2] += slow - old[2]

    def drop_source(self, source: int) -> None:
        for src, sec in [k for k in self._cells if k[0] == source]:
            self.set_cell(src, sec, 0, 0, 0)
            del self._cells[(src, sec)]

    def totals(self, from_sec: int) -> Counts:
        c = Counts()
        for sec, (calls, failures, slow) in self._secs.items():
            if sec >= from_sec:
                c.calls += calls
                c.failures += failures
                c.slow += slow
        return c

    def evict(self, before_sec: int) -> None:
        for sec in [s for s in self._secs if s < before_sec]:
            del self._secs[sec]
        for k in [k for k in self._cells if k[1] < before_sec]:
            del self._cells[k]

    def __len__(self) -> int:
        return len(self._secs)


# -- the state machine ----------------------------------------------------------------------


@dataclass(frozen=True)
class BreakerState:
    """One breaker's current state: exactly what a ControlMessage carries."""

    key: BreakerKey
    state: State = State.CLOSED
    since_us: int = 0
    retry_at_us: int | None = None
    probe_allowance: float = 0.0
    sequence: int = 0
    reason: str = ""
    measurements: dict[str, float] = field(default_factory=dict)
    actor: str = "processors"

    @property
    def id(self) -> str:
        return self.key.id


def next_sequence(previous: int, now_us: int) -> int:
    """Monotonic per breaker and, being at least the writer's clock in microseconds, unlikely to
    collide when an operator and the processors write the same breaker at once."""
    return max(previous + 1, now_us)


class Breaker:
    """One breaker's machine: feed it counts through ``window``, call ``evaluate`` with the time.

        Example:
            >>> from fleetpulse.contract.policy import BreakerPolicy
    from fleetpulse.contract.semantics import FAILED_OUTCOMES, UNCOUNTED_OUTCOMES
            >>> b = Breaker(BreakerKey("integration", integration="crm"),
            ...             BreakerPolicy(minimum_calls=2, sliding_window_s=10))
            >>> b.window.set_cell(0, 100, calls=2, failures=2, slow=0)
            >>> b.evaluate(100 * US).state
            <State.OPEN: 'OPEN'>
    """

    def __init__(
        self, key: BreakerKey, policy: BreakerPolicy, state: BreakerState | None = None
    ) -> None:
        self.key = key
        self.policy = policy
        self.state = state or BreakerState(key)
        self.window = CallWindow()

    # -- operator and restore -------------------------------------------------------------

    def adopt(self, incoming: BreakerState) -> bool:
        """Take a state written elsewhere (an operator, or our own before a restart) if its
        sequence is newer; stale ones are ignored. Returns whether it was taken."""
        if incoming.sequence <= self.state.sequence:
            return False
        self.state = incoming
        return True

    # -- the machine ----------------------------------------------------------------------

    def evaluate(self, now_us: int) -> BreakerState | None:
        """Apply whatever transition is due at ``now_us``; return the new state, or None."""
        s = self.state
        p = self.policy
        if s.state in OPERATOR_STATES or not p.enabled:
            return None
        now_sec = now_us // US
        since_sec = s.since_us // US
        if s.state == State.CLOSED:
            c = self.window.totals(max(now_sec - p.sliding_window_s + 1, since_sec))
            if c.calls < p.minimum_calls or not self._crossed(c):
                return None
            rate = c.calls / max(1, min(p.sliding_window_s, now_sec - since_sec + 1))
            return self._move(
                State.OPEN,
                now_us,
                self._why("", c, p.sliding_window_s),
                c,
                retry_at_us=now_us + int(p.wait_in_open_s * US),
                call_rate=rate,
            )
        if s.state == State.OPEN:
            if s.retry_at_us is not None and now_us < s.retry_at_us:
                return None
            rate = s.measurements.get("call_rate", 0.0)
            share = p.permitted_calls_in_half_open / max(rate * PROBE_PERIOD_S, 1.0)
            allowance = min(1.0, max(MIN_PROBE_SHARE, share))
            return self._move(
                State.HALF_OPEN,
                now_us,
                f"waited {p.wait_in_open_s:g}s in OPEN; letting {allowance:.0%} of calls "
                f"through until {p.permitted_calls_in_half_open} probes came back",
                Counts(),
                probe_allowance=allowance,
                call_rate=rate,
            )
        # HALF_OPEN
        c = self.window.totals(since_sec)
        if c.calls >= p.permitted_calls_in_half_open:
            if self._crossed(c):
                return self._open_again(now_us, self._why("probes: ", c, None), c)
            return self._move(
                State.CLOSED,
                now_us,
                f"probes succeeded: {c.calls - c.failures}/{c.calls} ok, "
                f"failure rate {c.failure_rate:.0%} < {p.failure_rate_threshold:.0%}",
                c,
            )
        waited = (now_us - s.since_us) / US
        if p.max_wait_in_half_open_s and waited >= p.max_wait_in_half_open_s:
            return self._open_again(
                now_us,
                f"only {c.calls} of {p.permitted_calls_in_half_open} probes in {waited:g}s",
                c,
            )
        return None

    def _crossed(self, c: Counts) -> bool:
        p = self.policy
        return (
            c.failure_rate >= p.failure_rate_threshold or c.slow_rate >= p.slow_call_rate_threshold
        )

    def _why(self, prefix: str, c: Counts, window_s: int | None) -> str:
        p = self.policy
        over = f" over {c.calls} calls" + (f" in {window_s}s" if window_s else "")
        if c.failure_rate >= p.failure_rate_threshold:
            return (
                f"{prefix}failure rate {c.failure_rate:.0%} >= {p.failure_rate_threshold:.0%}{over}"
            )
        return (
            f"{prefix}slow-call rate {c.slow_rate:.0%} >= {p.slow_call_rate_threshold:.0%} "
            f"(>= {p.slow_call_duration_ms:g} ms){over}"
        )

    def _open_again(self, now_us: int, reason: str, c: Counts) -> BreakerState:
        return self._move(
            State.OPEN,
            now_us,
            reason,
            c,
            retry_at_us=now_us + int(self.policy.wait_in_open_s * US),
            call_rate=self.state.measurements.get("call_rate", 0.0),
        )

    def _move(
        self,
        to: State,
        now_us: int,
        reason: str,
        c: Counts,
        *,
        retry_at_us: int | None = None,
        probe_allowance: float = 0.0,
        call_rate: float = 0.0,
    ) -> BreakerState:
        p = self.policy
        self.state = replace(
            self.state,
            state=to,
            since_us=now_us,
            retry_at_us=retry_at_us,
            probe_allowance=probe_allowance,
            sequence=next_sequence(self.state.sequence, now_us),
            reason=reason,
            measurements={
                "calls": float(c.calls),
                "failures": float(c.failures),
                "slow_calls": float(c.slow),
                "failure_rate": c.failure_rate,
                "slow_call_rate": c.slow_rate,
                "threshold": p.failure_rate_threshold,
                "slow_call_rate_threshold": p.slow_call_rate_threshold,
                "minimum_calls": float(p.minimum_calls),
                "window_s": float(p.sliding_window_s),
                "call_rate": call_rate,
            },
            actor="processors",
        )
        return self.state


# -- the wire -------------------------------------------------------------------------------


def to_control(s: BreakerState) -> dict[str, Any]:
    """The ControlMessage record of a breaker state (timestamps as epoch micros)."""
    return {
        "kind": "breaker",
        "target_id": s.key.id,
        "scope": s.key.scope,
        "agent_id": s.key.agent_id,
        "integration": s.key.integration,
        "state": s.state.value,
        "reason": s.reason,
        "measurements": {k: v for k, v in s.measurements.items() if math.isfinite(v)},
        "since": s.since_us,
        "retry_at": s.retry_at_us,
        "probe_allowance": s.probe_allowance,
        "sequence": s.sequence,
        "actor": s.actor,
    }


def from_control(msg: dict[str, Any]) -> BreakerState:
    """A breaker state from a decoded ControlMessage (``kind == "breaker"``)."""
    return BreakerState(
        key=parse_breaker_id(msg["target_id"]),
        state=State(msg["state"]),
        since_us=_micros(msg["since"]),
        retry_at_us=None if msg.get("retry_at") is None else _micros(msg["retry_at"]),
        probe_allowance=float(msg.get("probe_allowance") or 0.0),
        sequence=int(msg["sequence"]),
        reason=msg.get("reason") or "",
        measurements=dict(msg.get("measurements") or {}),
        actor=msg.get("actor") or "processors",
    )


def _micros(v: Any) -> int:
    if isinstance(v, int):
        return v
    from fleetpulse.contract.events.codec import to_epoch_micros

    return int(to_epoch_micros(v))
