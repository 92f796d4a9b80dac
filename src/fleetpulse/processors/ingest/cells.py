"""What phase 1 (ingest) produces from a batch of task events: partial aggregates, one *cell*
per (scope, source partition, finest bucket), plus what each source partition learned.

The native pass (``native.py``) and the pure-Python reference (``reference.py``) both return a
``Partials``; a unit test proves they agree exactly on a seeded batch. The window engine adds
cells into its buckets at every level (a coarse bucket is the sum of the fine ones it holds).

Scopes and what their counters mean are those of ``processors/figures/aggregate.py``:

* task scopes (``agent``, ``agent_version``, ``agent_task_type``, ``model``) count tasks;
* integration scopes (``integration``, ``agent_integration``) count each task that called the
  integration once, with the task's outcome, plus that integration's calls, their cost and the
  latency of the calls that reached it (ok, error, timeout).

A late event (older than its partition's watermark minus the allowed lateness) is counted only
in ``late_events``, in the bucket of the watermark it was seen against.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Generic, TypeVar, cast

import numpy as np
import orjson

from fleetpulse.processors.figures.aggregate import COUNTERS

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

# what the breakers count, per second of the call's (or task's) end, for every accepted event
# whether late or not: (source partition, agent, integration, status, error type, second,
# calls, calls at least as slow as each of BreakerSpec.call_slow_ms); short-circuited calls
# never reached the integration and are left out
CallGroup = tuple[int, str, str, str, str | None, int, int, tuple[int, ...]]
# (source partition, agent, outcome, second, tasks, tasks as slow as each task_slow_ms)
TaskGroup = tuple[int, str, str, int, int, tuple[int, ...]]

# what the alert rules count, per step of the task's end (``AlertSpec.step_s`` seconds; "second"
# below is the step's first), for every accepted event (the alert windows decide what is too
# old): a task scope's figures
#   (scope, agent, version or task type or "", second, tasks, failed tasks, cost micros,
#    zero-latency tasks, latency bin keys, their counts,
#    integrations with a failing call in failed tasks, how many such tasks,
#    upstream agents named by failed tasks, how many such tasks)
AlertTaskRow = tuple[
    str, str, str, int, int, int, int, int, list[int], list[int], list[str], list[int],
    list[str], list[int],
]  # fmt: skip
# and the calls, finely enough for permissions and approval gates to be decided per group:
#   (agent, integration, agent role, operation, access, approved, second,
#    tasks calling the integration (once per task), attempted calls, attempted calls not ok,
#    denied calls, calls)
AlertCallRow = tuple[str, str, str, str, str, bool, int, int, int, int, int, int]


Row = TypeVar("Row", bound=tuple[Any, ...])


class Csr:
    """A column whose value in each row is a list: row i's is ``items[bounds[i]:bounds[i+1]]``
    (compressed sparse rows)."""

    __slots__ = ("bounds", "items")

    def __init__(self, items: np.ndarray, bounds: np.ndarray) -> None:
        self.items, self.bounds = items, bounds


Column = np.ndarray | Csr


class RowColumns(Generic[Row]):
    """Rows of fixed fields kept as columns until they are read: numpy arrays (strings as
    object arrays), and ``Csr`` for a field holding a list. A sparse fleet has an alert rule
    group per event, and a pass of 50,000 events made ~150,000 rows: as Python tuples of
    lists they held ~110 MB and raised the worker's peak by ~300 MB. As columns they are
    routed (``take``) and turned into tuples a chunk at a time (``rows``), as they are sent.
    """

    __slots__ = ("cols", "n")

    CHUNK = 2048

    def __init__(self, cols: Sequence[Column]) -> None:
        self.cols = list(cols)
        first = self.cols[0]
        self.n = len(first.bounds) - 1 if isinstance(first, Csr) else len(first)

    @classmethod
    def of_rows(cls, rows: Sequence[Row], width: int, lists: Iterable[int]) -> RowColumns[Row]:
        """Rows (tuples of ``width`` fields; the fields ``lists`` hold lists) as columns."""
        listed = set(lists)
        cols: list[Column] = []
        for j in range(width):
            if j in listed:
                lengths = np.fromiter((len(r[j]) for r in rows), np.int64, len(rows))
                bounds = np.zeros(len(rows) + 1, np.int64)
                np.cumsum(lengths, out=bounds[1:])
                cols.append(Csr(object_array([x for r in rows for x in r[j]]), bounds))
            else:
                cols.append(object_array([r[j] for r in rows]))
        return cls(cols)

    @classmethod
    def concat(cls, parts: Sequence[RowColumns[Row]]) -> RowColumns[Row]:
        cols: list[Column] = []
        for j, first in enumerate(parts[0].cols):
            if isinstance(first, Csr):
                csrs = [cast(Csr, p.cols[j]) for p in parts]
                shift = np.cumsum([0] + [int(c.bounds[-1]) for c in csrs[:-1]])
                bounds = np.concatenate(
                    [c.bounds[:-1] + k for c, k in zip(csrs, shift, strict=True)]
                    + [np.array([shift[-1] + csrs[-1].bounds[-1]], np.int64)]
                )
                cols.append(Csr(np.concatenate([c.items for c in csrs]), bounds))
            else:
                cols.append(np.concatenate([cast(np.ndarray, p.cols[j]) for p in parts]))
        return cls(cols)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Row]:
        for lo in range(0, self.n, self.CHUNK):
            yield from self.rows(lo, min(self.n, lo + self.CHUNK))

    def column(self, j: int) -> np.ndarray:
        col = self.cols[j]
        assert not isinstance(col, Csr), f"field {j} holds lists"
        return col

    def rows(self, lo: int, hi: int) -> list[Row]:
        """Rows ``lo`` to ``hi`` as tuples of Python values."""
        fields: list[list[Any]] = []
        for col in self.cols:
            if isinstance(col, Csr):
                edge = col.bounds[lo : hi + 1]
                first = int(edge[0]) if len(edge) else 0
                items = col.items[first : int(edge[-1]) if len(edge) else 0].tolist()
                fields.append([items[a:b] for a, b in pairwise((edge - first).tolist())])
            else:
                fields.append(col[lo:hi].tolist())
        return cast(list[Row], list(zip(*fields, strict=True)))

    def take(self, idx: np.ndarray) -> RowColumns[Row]:
        """The rows ``idx`` (ascending), as columns."""
        cols: list[Column] = []
        for col in self.cols:
            if isinstance(col, Csr):
                start = col.bounds[idx]
                lengths = col.bounds[idx + 1] - start
                bounds = np.zeros(len(idx) + 1, np.int64)
                np.cumsum(lengths, out=bounds[1:])
                at = np.repeat(start - bounds[:-1], lengths) + np.arange(int(bounds[-1]))
                cols.append(Csr(col.items[at], bounds))
            else:
                cols.append(col[idx])
        return RowColumns(cols)


def object_array(values: Sequence[Any]) -> np.ndarray:
    """Python values as an object array (kept as they are: ints, bools, strings), to index by
    codes or to take rows from."""
    out = np.empty(len(values), object)
    out[:] = values
    return out


# the fields of an AlertTaskRow that hold lists
TASK_LISTS = (8, 9, 10, 11, 12, 13)
TASK_WIDTH, CALL_WIDTH = 14, 12


def _slice(rows: Sequence[Row] | RowColumns[Row], lo: int, hi: int) -> list[Row]:
    return rows.rows(lo, hi) if isinstance(rows, RowColumns) else list(rows[lo:hi])


@dataclass
class AlertGroups:
    """The alert stage's input from one batch (``processors.alert-cells``). ``runs``: per
    agent, the starts of its runs in the batch (a start further than the run gap from the
    previous run's start, in time order); ``versions``: (agent, version) in the order the
    batch first shows them."""

    # the native pass gives columns (``RowColumns``), the reference and the records rows
    tasks: list[AlertTaskRow] | RowColumns[AlertTaskRow] = field(default_factory=list)
    calls: list[AlertCallRow] | RowColumns[AlertCallRow] = field(default_factory=list)
    runs: list[tuple[str, list[int]]] = field(default_factory=list)
    versions: list[tuple[str, str]] = field(default_factory=list)

    events: int = 0  # how many events the groups count

    def records(self, max_rows: int = 2000) -> list[bytes]:
        """The groups as JSON records of at most ``max_rows`` rows each, tasks then calls
        (the last one carries the runs, the versions and the event count). Rows kept as
        columns become tuples one record at a time."""
        tasks, calls = self.tasks, self.calls
        nt, n = len(tasks), len(tasks) + len(calls)
        out: list[bytes] = []
        for i in range(0, max(n, 1), max_rows):
            j = min(n, i + max_rows)
            doc: dict[str, Any] = {
                "tasks": _slice(tasks, min(i, nt), min(j, nt)),
                "calls": _slice(calls, max(i - nt, 0), max(j - nt, 0)),
            }
            if j >= n:
                doc.update(runs=self.runs, versions=self.versions, events=self.events)
            out.append(orjson.dumps(doc))
        return out

    @classmethod
    def from_record(cls, value: bytes) -> AlertGroups:
        """One record of ``records()``.

        Raises:
            ValueError: the record is not one.
        """
        try:
            doc = orjson.loads(value)
            return cls(
                tasks=[tuple(r) for r in doc["tasks"]],
                calls=[tuple(r) for r in doc["calls"]],
                runs=[(str(a), [int(x) for x in r]) for a, r in doc.get("runs", ())],
                versions=[(str(a), str(v)) for a, v in doc.get("versions", ())],
                events=int(doc.get("events", 0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an alert-cells record: {exc}") from None

    def canonical(self) -> dict[str, Any]:
        """Order-free form for comparing two passes (versions keep their order per agent)."""
        per_agent: dict[str, list[str]] = {}
        for agent, version in self.versions:
            per_agent.setdefault(agent, []).append(version)
        return {
            "tasks": sorted(map(repr, self.tasks)),
            "calls": sorted(map(repr, self.calls)),
            "runs": sorted(self.runs),
            "versions": per_agent,
        }


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

    # any iterable of cells: the reference builds a list, the native pass blocks of columns
    # that make each cell's tuple only when phase 2 reads it (``columns._Cells``)
    cells: Iterable[Cell] = field(default_factory=list)
    progress: dict[int, PartitionProgress] = field(default_factory=dict)
    # (index of the record in the batch, why it cannot be counted): for the DLQ
    rejected: list[tuple[int, str]] = field(default_factory=list)
    # for the breakers, when IngestParams.breakers asks for them
    breaker_calls: list[CallGroup] = field(default_factory=list)
    breaker_tasks: list[TaskGroup] = field(default_factory=list)
    # for the alert rules, when IngestParams.alerts asks for them
    alerts: AlertGroups | None = None

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
