"""Time, injected: production code asks a Clock, tests hand it a ManualClock."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time_us(self) -> int:
        """Wall-clock time, microseconds since the Unix epoch (UTC)."""
        ...

    def perf_ns(self) -> int:
        """A monotonic reading in nanoseconds, for durations."""
        ...


class SystemClock:
    """The real clock."""

    def time_us(self) -> int:
        return time.time_ns() // 1000

    def perf_ns(self) -> int:
        return time.perf_counter_ns()


class ManualClock:
    """A clock that moves only when told to.

    Example:
        >>> clock = ManualClock(start_us=1_700_000_000_000_000)
        >>> clock.advance(ms=250)
        >>> clock.time_us()
        1700000000250000
    """

    def __init__(self, start_us: int = 1_700_000_000_000_000):
        self._us = start_us
        self._perf_ns = 0

    def time_us(self) -> int:
        return self._us

    def perf_ns(self) -> int:
        return self._perf_ns

    def advance(self, *, ms: float = 0, s: float = 0) -> None:
        delta_ns = int(ms * 1_000_000 + s * 1_000_000_000)
        self._us += delta_ns // 1000
        self._perf_ns += delta_ns
