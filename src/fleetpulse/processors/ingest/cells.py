"""What phase 1 (ingest) produces from a batch of task events: partial aggregates, one *cell*
per (scope, source partition, finest bucket), plus what each source partition learned.

The native pass (``native.py``) and the pure-Python reference (``reference.py``) both return a
``Partials``; a unit test proves they agree exactly on a seeded batch. The window engine adds
cells into its buckets at every level (a coarse bucket is the sum of the fine ones it holds).

Scopes and what their counters mean are those of ``processors/windows/aggregate.py``:

* task scopes (``agent``, ``agent_version``, ``agent_task_type``, ``model``) count tasks;
* integration scopes (``integration``, ``agent_integration``) count each task that called the
  integration once, with the task's outcome, plus that integration's calls, their cost and the
  latency of the calls that reached it (ok, error, timeout).

A late event (older than its partition's watermark minus the allowed lateness) is counted only
in ``late_events``, in the bucket of the watermark it was seen against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleetpulse.processors.windows.aggregate import COUNTERS

# scope type -> its dimensions, in the order of the cell's (d1, d2)
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "agent": ("agent_id",),
    "agent_version": ("agent_id", "agent_version"),
    "agent_task_type": ("agent_id", "task_type"),
    "model": ("model",),
    "integration": ("integration",),
    "agent_integration": ("agent_id", "integration"),
}

# (scope type, d1, d2, source partition, bucket start us)
CellKey = tuple[str, str, str, int, int]


# one cell: key, counters (in COUNTERS order), zero-bin count, sketch bin keys, their counts
Cell = tuple[CellKey, tuple[int, ...], int, list[int], list[int]]


@dataclass
class PartitionProgress:
    """What one source partition's batch moved: its newest accepted event time (the watermark
    after the batch, None if it had none), and how many events it counted or found late."""

    watermark_us: int | None = None
    events: int = 0
    late: int = 0


@dataclass
class Partials:
    """Phase 1's output for one batch."""

    cells: list[Cell] = field(default_factory=list)
    progress: dict[int, PartitionProgress] = field(default_factory=dict)
    # (index of the record in the batch, why it cannot be counted): for the DLQ
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def canonical(self) -> dict[CellKey, dict[str, Any]]:
        """Cells as plain dicts keyed by cell, for comparing two passes exactly."""
        out: dict[CellKey, dict[str, Any]] = {}
        for key, counters, zero, keys, counts in self.cells:
            if key in out:
                raise ValueError(f"cell {key} appears twice")
            cell: dict[str, Any] = dict(zip(COUNTERS, counters, strict=True))
            cell.update(zero=zero, bins=dict(sorted(zip(keys, counts, strict=True))))
            out[key] = cell
        return dict(sorted(out.items()))


def dims_of(scope: str, d1: str, d2: str) -> tuple[tuple[str, str], ...]:
    """The engine's ((dimension, value), ...) for a cell's scope."""
    names = DIMENSIONS[scope]
    return tuple(zip(names, (d1, d2)[: len(names)], strict=True))
