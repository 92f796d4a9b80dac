"""The figures kept per bucket, per scope: integer counters plus a latency sketch.

Everything is an integer (cost in micro-USD, counts, sketch bins), so buckets add and subtract
exactly and a window's total never drifts.

Two kinds of scope share this record:

- task scopes (agent, agent x version, agent x task type, model) count *tasks*: outcomes and
  latency are the task's, tool figures are the task's calls summed.
- integration scopes (integration, agent x integration) count the *calls* to that integration:
  latency is the call latency (calls that were attempted: ok, error, timeout); the task counters
  count each task that called the integration once, with the task's outcome; cost is the calls'
  cost.

``tool_error_rate`` = tool_errors / attempted calls, where attempted excludes denied and
short-circuited calls (they never reached the integration). ``failure_rate`` = (failure +
timeout) / task_count, as the MetricSnapshot schema documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fleetpulse.contract.semantics import OUTCOMES
from fleetpulse.processors.figures.sketch import LatencySketch, quantiles_of

__all__ = ["COUNTERS", "COUNTER_AT", "OUTCOMES", "Agg", "figures_of"]

# the integer counters, in wire order
COUNTERS = (
    "task_count",
    "success",
    "failure",
    "timeout",
    "cancelled",
    "denied",
    "cost_micros",
    "input_tokens",
    "output_tokens",
    "tool_calls",
    "tool_errors",
    "tool_denied",
    "tool_short_circuited",
    "late_events",
)
# each counter's index in COUNTERS (and in a cell's or a row's counters)
COUNTER_AT = {name: i for i, name in enumerate(COUNTERS)}


class Agg:
    """Counters and latency of one scope over one bucket (or a whole window)."""

    __slots__ = (*COUNTERS, "latency")

    def __init__(self) -> None:
        self.task_count = 0
        self.success = 0
        self.failure = 0
        self.timeout = 0
        self.cancelled = 0
        self.denied = 0
        self.cost_micros = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.tool_calls = 0
        self.tool_errors = 0
        self.tool_denied = 0
        self.tool_short_circuited = 0
        self.late_events = 0
        self.latency = LatencySketch()

    def is_empty(self) -> bool:
        return self.task_count == 0 and self.tool_calls == 0 and self.late_events == 0

    def merge(self, other: Agg) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency.merge(other.latency)

    def add_counts(
        self, counters: tuple[int, ...], zero: int, bins: list[int], counts: list[int]
    ) -> None:
        """Add one cell of the ingest pass: COUNTERS in order, then the latency sketch as its
        zero-bin count and (bin key, count) pairs."""
        (
            task_count, success, failure, timeout, cancelled, denied, cost, tin, tout,
            calls, errors, tool_denied, short, late,
        ) = counters  # fmt: skip
        self.task_count += task_count
        self.success += success
        self.failure += failure
        self.timeout += timeout
        self.cancelled += cancelled
        self.denied += denied
        self.cost_micros += cost
        self.input_tokens += tin
        self.output_tokens += tout
        self.tool_calls += calls
        self.tool_errors += errors
        self.tool_denied += tool_denied
        self.tool_short_circuited += short
        self.late_events += late
        self.latency.add_bins(zero, bins, counts)

    def subtract(self, other: Agg) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) - getattr(other, name))
        self.latency.subtract(other.latency)

    def copy(self) -> Agg:
        c = Agg()
        for name in COUNTERS:
            setattr(c, name, getattr(self, name))
        c.latency = self.latency.copy()
        return c

    # -- derived figures ------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """The MetricSnapshot fields this aggregate fills."""
        bins = self.latency.bins
        counters = [getattr(self, name) for name in COUNTERS]
        return figures_of(counters, self.latency.zero, list(bins), list(bins.values()))

    # -- wire form (the repartition topic) ------------------------------------------------

    def to_list(self) -> list[Any]:
        return [*(getattr(self, name) for name in COUNTERS), self.latency.to_list()]

    @classmethod
    def from_list(cls, data: list[Any]) -> Agg:
        if len(data) != len(COUNTERS) + 1:
            raise ValueError(f"expected {len(COUNTERS) + 1} fields, got {len(data)}")
        a = cls()
        for name, value in zip(COUNTERS, data, strict=False):
            setattr(a, name, int(value))
        a.latency = LatencySketch.from_list(data[-1])
        return a

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Agg):
            return NotImplemented
        return self.to_list()[:-1] == other.to_list()[:-1] and self.latency == other.latency

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Agg(tasks={self.task_count}, calls={self.tool_calls}, late={self.late_events})"


def figures_of(
    counters: Sequence[int], zero: int, keys: Sequence[int], counts: Sequence[int]
) -> dict[str, Any]:
    """The MetricSnapshot fields of an aggregate given as the windows store it: its counters
    (``COUNTERS`` order), zero-bin count and sketch bins. ``Agg.figures`` is this of an Agg."""
    at = COUNTER_AT
    out: dict[str, Any] = dict(zip(COUNTERS, counters, strict=True))
    tasks = counters[at["task_count"]]
    failed = counters[at["failure"]] + counters[at["timeout"]]  # semantics.FAILED_OUTCOMES
    attempted = (
        counters[at["tool_calls"]] - counters[at["tool_denied"]]
        - counters[at["tool_short_circuited"]]
    )  # fmt: skip
    p50, p90, p95, p99 = quantiles_of(zero, keys, counts, (0.5, 0.9, 0.95, 0.99))
    out.update(
        failure_rate=failed / tasks if tasks else 0.0,
        tool_error_rate=counters[at["tool_errors"]] / attempted if attempted else 0.0,
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
    )
    return out
