"""What a breaker is on the wire: its id, its states, and its record on fleetpulse.control.

The processors' state machine (``processors/breakers/machine.py``) writes these records and the
control plane's operators (force-open, disable, reset) write the same ones, so both import them
from here. Ids::

    integration:NAME            one integration, fleet-wide
    agent:AGENT|integration:NAME   one agent's use of one integration
    agent:AGENT                 one agent's tasks
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fleetpulse.contract.events.codec import to_epoch_micros


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
    return int(to_epoch_micros(v))
