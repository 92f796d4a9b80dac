"""Fleet-wide circuit breakers as pure code: call classification, windows, state machine
(the ids and the records on fleetpulse.control are in ``contract/breakers.py``).

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

from dataclasses import dataclass, replace

from fleetpulse.contract.breakers import (
    OPERATOR_STATES,
    BreakerKey,
    BreakerState,
    State,
    next_sequence,
)
from fleetpulse.contract.policy import BreakerPolicy
from fleetpulse.contract.semantics import FAILED_OUTCOMES, UNCOUNTED_OUTCOMES

US = 1_000_000
PROBE_PERIOD_S = 5.0  # HALF_OPEN aims to collect its probes within about this long
MIN_PROBE_SHARE = 0.01


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


class Breaker:
    """One breaker's machine: feed it counts through ``window``, call ``evaluate`` with the time.

            Example:
                >>> from fleetpulse.contract.breakers import (
        OPERATOR_STATES,
        BreakerKey,
        BreakerState,
        State,
        next_sequence,
    )
    from fleetpulse.contract.policy import BreakerPolicy
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
