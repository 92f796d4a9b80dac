"""The SDK's guard: fleet-wide breakers and pauses, checked before every task and tool call.

The guard holds only the breakers that are not CLOSED (and pauses that are on), so the common
case, every breaker closed, costs one empty-dict test per call. A `ControlFollower` thread
keeps it current from ``fleetpulse.control``.

    OPEN, FORCED_OPEN   the call is not made: CircuitOpenError, recorded as short_circuited
    HALF_OPEN           a random share (probe_allowance) of calls goes through as probes; the
                        share is set fleet-wide by the processors
    agent_pause PAUSED  fleet.task(...) raises AgentPausedError (or waits, see pause_wait_s)
    agent breaker OPEN  the same, with the breaker's reason
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from fleetpulse.contract.control_state import ControlRecord, ControlView
from fleetpulse.contract.errors import AgentPausedError, CircuitOpenError

# breakers the guard must look at on every call: the ones that can stop it
_GUARDED = ("OPEN", "FORCED_OPEN", "HALF_OPEN")


class Guard:
    """What the SDK checks; fed by a `ControlView` (filled by a follower, or by hand in tests).

    Example:
        >>> view = ControlView()
        >>> guard = Guard(view)
        >>> guard.check_tool("triage", "crm")       # nothing open: returns at once
        >>> _ = view.apply({"kind": "breaker", "target_id": "integration:crm",
        ...                 "state": "OPEN", "sequence": 1, "retry_at": None})
        >>> guard.check_tool("triage", "crm")
        Traceback (most recent call last):
        ...
        fleetpulse.contract.errors.CircuitOpenError: circuit integration:crm is OPEN: ...
    """

    def __init__(
        self,
        view: ControlView,
        *,
        rng: Callable[[], float] = random.random,
        now_us: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self.view = view
        self._rng = rng
        self._now_us = now_us
        self._active: dict[str, ControlRecord] = {}  # breakers not CLOSED / DISABLED
        self._paused: dict[str, ControlRecord] = {}  # agents paused by an operator
        self._changed = threading.Condition()
        # target id -> (state, wall-clock micros when this process first saw it)
        self.observed: dict[str, tuple[str, int]] = {}
        view.on_change(self._on_change)
        for rec in view.records():
            self._on_change(rec)

    def _on_change(self, rec: ControlRecord) -> None:
        target, state = rec["target_id"], rec["state"]
        if rec["kind"] == "breaker":
            if state in _GUARDED:
                self._active[target] = rec
            else:
                self._active.pop(target, None)
        elif state == "PAUSED":
            self._paused[target] = rec
        else:
            self._paused.pop(target, None)
        self.observed[target] = (state, self._now_us())
        with self._changed:
            self._changed.notify_all()

    # -- the checks -----------------------------------------------------------------------

    def check_tool(self, agent_id: str, integration: str) -> None:
        """Raise CircuitOpenError if the integration's breaker (fleet-wide, or this agent's
        own) does not let this call through."""
        if not self._active:
            return
        # one draw per call: a probe let through by both breakers (the integration's and this
        # agent's, HALF_OPEN together after one outage) counts for both, so the call goes
        # through with the smaller share, not with the product of the two
        draw = self._rng()
        for breaker_id in (
            f"integration:{integration}",
            f"agent:{agent_id}|integration:{integration}",
        ):
            rec = self._active.get(breaker_id)
            if rec is not None and not self._lets_through(rec, draw):
                raise CircuitOpenError(
                    integration,
                    breaker_id=breaker_id,
                    state=rec["state"],
                    retry_at=_when(rec.get("retry_at")),
                    agent_id=agent_id,
                )

    def check_agent(self, agent_id: str, *, wait_s: float = 0.0) -> None:
        """Raise AgentPausedError if the agent is paused (by an operator or by its breaker);
        with ``wait_s`` > 0, first wait up to that long for a resume."""
        deadline = time.monotonic() + wait_s
        while True:
            why = self._paused_because(agent_id)
            if why is None:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise AgentPausedError(agent_id, why[0], why[1])
            with self._changed:
                self._changed.wait(min(left, 1.0))

    def _paused_because(self, agent_id: str) -> tuple[str, str] | None:
        if not self._paused and not self._active:
            return None
        rec = self._paused.get(agent_id)
        if rec is not None:
            return rec.get("reason") or "", rec.get("actor") or ""
        rec = self._active.get(f"agent:{agent_id}")
        if rec is not None and not self._lets_through(rec):
            reason = f"breaker agent:{agent_id} is {rec['state']}: {rec.get('reason') or ''}"
            return reason, rec.get("actor") or "processors"
        return None

    def _lets_through(self, rec: ControlRecord, draw: float | None = None) -> bool:
        if rec["state"] != "HALF_OPEN":
            return False
        u = self._rng() if draw is None else draw
        return u < float(rec.get("probe_allowance") or 0.0)

    def state_of(self, target_id: str) -> str | None:
        """The state this process holds for a breaker or paused agent (None: never seen)."""
        seen = self.observed.get(target_id)
        return seen[0] if seen else None


def _when(v: object) -> datetime | None:
    if isinstance(v, int):
        return datetime.fromtimestamp(v / 1e6, tz=UTC)
    if isinstance(v, datetime):
        return v
    return None
