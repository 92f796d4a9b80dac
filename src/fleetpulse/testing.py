"""Fakes for testing code that uses fleetpulse without Kafka.

Example:
    >>> from fleetpulse.testing import memory_fleet
    >>> fleet, sink = memory_fleet("triage")
    >>> with fleet.task("triage", input={"id": 1}):
    ...     pass
    >>> sink.events[0]["outcome"]
    'success'
"""

from __future__ import annotations

from typing import Any

from fleetpulse.contract.clock import Clock
from fleetpulse.contract.config import SdkSettings
from fleetpulse.contract.events.codec import AvroCodec, to_epoch_micros
from fleetpulse.sdk.fleet import Fleet
from fleetpulse.sdk.guard import Guard
from fleetpulse.sdk.pricing import PriceTable

__all__ = ["MemoryTransport", "memory_fleet", "to_micros"]


class MemoryTransport:
    """Keeps produced records in a list; `events` decodes them back."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []
        self.closed = False
        self._codec = AvroCodec()

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.records.append((topic, key, value))

    def flush(self, timeout: float = 0.0) -> int:
        return 0

    def close(self, timeout: float = 0.0) -> None:
        self.closed = True

    @property
    def events(self) -> list[dict[str, Any]]:
        return [self._codec.decode(v, "TaskEvent") for _, _, v in self.records]


def memory_fleet(
    agent_id: str,
    *,
    clock: Clock | None = None,
    prices: PriceTable | None = None,
    guard: Guard | None = None,
    **settings: Any,
) -> tuple[Fleet, MemoryTransport]:
    """A Fleet that produces into memory; settings are `SdkSettings` fields. Pass
    ``guard=Guard(view)`` and apply ControlMessage records to ``view`` to act as the control
    topic."""
    transport = MemoryTransport()
    fleet = Fleet(
        agent_id,
        settings=SdkSettings(bootstrap_servers="memory:0", **settings),
        transport=transport,
        clock=clock,
        prices=prices,
        guard=guard,
    )
    return fleet, transport


def to_micros(value: Any) -> Any:
    """Turn decoded timestamps (aware datetimes) back into exact epoch microseconds, recursively,
    so a decoded event compares equal to the dict the SDK built (``task.event``)."""
    return to_epoch_micros(value)
