"""Phase 1's grouping, in columns: a decoded batch (an Arrow table, a row per record, from
``native.py``) in, every scope's partial aggregates out, with numpy doing the work.

Why numpy and not more SQL: the engine decodes a batch at C++ speed, but each grouping query
costs it 5 to 30 ms of analysis and planning whatever the batch's size, and nine of them made a
pass of 1,000 events cost ~170 ms (slower than aggregating it record by record in Python).
Here a grouping is a sort of integer keys and ``reduceat`` over a matrix of per-row
contributions: a few hundred microseconds on a small batch, and linear on a large one.

How a grouping goes (``_Groups``):

* every string column is dictionary-encoded once (``_Codes``), its codes ranked in the strings'
  order, so that lists of names come out sorted as the reference sorts them;
* a group's key is its columns' codes combined into one integer (re-densified with
  ``np.unique`` whenever the combined range grows too large), and rows are sorted by it;
* counters are sums of per-row (or per-call) contribution columns over the sorted runs;
* latency sketch bins are counted per (group, bin) the same way, so they come out run-length
  encoded and in bin order.

Before grouping, each row is checked as ``events/task_event.py``'s ``check_task_event`` does
(``_refused``), and latencies get their sketch bins with the arithmetic of ``sketch.bin_key``
(``_bins``: the logarithm is Arrow's, the C library's as in Python's ``math.log``), so they are
bit-identical to the reference's.

``reference.py`` is the definition; ``tests/unit/processors/test_ingest.py`` proves this equals
it on seeded batches, every figure of every scope.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fleetpulse.contract.events.codec import HEADER_LEN
from fleetpulse.contract.semantics import (
    ATTEMPTED_STATUSES,
    CALL_ERROR_STATUSES,
    FAILED_OUTCOMES,
    FAILING_CALL_STATUSES,
)
from fleetpulse.processors.figures.aggregate import COUNTER_AT, COUNTERS, OUTCOMES
from fleetpulse.processors.figures.sketch import _MIN_INDEXABLE, _MULTIPLIER, _OFFSET
from fleetpulse.processors.ingest.cells import (
    AlertCallRow,
    AlertGroups,
    AlertTaskRow,
    Cell,
    Csr,
    Partials,
    PartitionProgress,
    RowColumns,
    object_array,
)
from fleetpulse.processors.ingest.params import AlertSpec, BreakerSpec, IngestParams

US = 1_000_000
_AT = COUNTER_AT
_DENSE = 1 << 40  # combined keys are re-densified before they can grow past this


# the closing sentinel's header: a row with it is the last the engine read (``native.py``)
SENTINEL_HEAD = bytes(HEADER_LEN)


class BatchError(Exception):
    """The decoded table is not the batch that was sent (rows missing, reordered...)."""


class _Codes:
    """A string column as integer codes ranked in the strings' order; ``None`` (a null) has
    the code after every string."""

    __slots__ = ("_flags", "codes", "values")

    def __init__(self, arr: pa.Array | pa.ChunkedArray) -> None:
        d = pc.dictionary_encode(arr)
        if isinstance(d, pa.ChunkedArray):
            d = d.combine_chunks()
        words: list[Any] = d.dictionary.to_pylist()
        order = sorted(range(len(words)), key=words.__getitem__)
        rank = np.empty(len(words) + 1, np.int64)
        rank[order] = np.arange(len(words))
        rank[len(words)] = len(words)
        idx = d.indices
        if idx.null_count:
            idx = idx.fill_null(len(words))
        self.codes = rank[idx.to_numpy(zero_copy_only=False).astype(np.int64)]
        self.values = [words[i] for i in order] + [None]
        self._flags: dict[frozenset[str], np.ndarray] = {}

    @property
    def size(self) -> int:
        return len(self.values)

    def flags(self, accepted: frozenset[str] | set[str]) -> np.ndarray:
        """Per row: whether its string is one of ``accepted`` (computed once per set)."""
        key = frozenset(accepted)
        found = self._flags.get(key)
        if found is None:
            found = self._flags[key] = np.array([v in key for v in self.values], bool)[self.codes]
        return found

    def take(self, mask: np.ndarray) -> _Codes:
        out = _Codes.__new__(_Codes)
        out.codes, out.values, out._flags = self.codes[mask], self.values, {}
        return out


def _narrow(a: np.ndarray) -> np.ndarray:
    """``a`` as 32-bit integers when every value fits (a copy), else ``a``."""
    if a.size and (a.min() < -(2**31) or a.max() >= 2**31):
        return a
    return a.astype(np.int32)


def _dense(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer keys as codes 0..k-1 in the keys' order, and k."""
    uniq, inv = np.unique(codes, return_inverse=True)
    return inv.astype(np.int64), len(uniq)


class _Groups:
    """Rows grouped by the combination of some integer key columns (each with its size)."""

    def __init__(self, keys: Sequence[tuple[np.ndarray, int]]) -> None:
        key, size = keys[0]
        key = key.astype(np.int64, copy=False)
        for codes, n in keys[1:]:
            if size * n >= _DENSE:
                key, size = _dense(key)
            key, size = key * n + codes, size * n
        self.n_rows = len(key)
        # not stable: a group's rows are summed and counted, never read in order (and a
        # group's keys are the same in each of its rows), and numpy's quicksort of int64 is
        # ~5x faster than its stable sort
        self.order = np.argsort(key)
        sk = key[self.order]
        edge = np.empty(len(sk), bool)
        if len(sk):
            edge[0] = True
            np.not_equal(sk[1:], sk[:-1], out=edge[1:])
        self.starts = np.flatnonzero(edge)
        self.first = self.order[self.starts]  # a row of each group, to read its keys from
        self.gid = np.empty(len(key), np.int64)  # each row's group, in group order
        self.gid[self.order] = np.cumsum(edge) - 1

    def __len__(self) -> int:
        return len(self.starts)

    def sums(self, matrix: np.ndarray) -> np.ndarray:
        """Per group, the column sums of ``matrix`` (a row per row)."""
        if not len(self.starts):
            return np.zeros((0, *matrix.shape[1:]), np.int64)
        return np.add.reduceat(matrix[self.order], self.starts, axis=0)

    def counts(self) -> np.ndarray:
        return np.diff(np.append(self.starts, self.n_rows))

    def keys(self, codes: _Codes | np.ndarray) -> list[Any]:
        """Per group, its value of one key column."""
        if isinstance(codes, _Codes):
            words = codes.values
            return [words[c] for c in codes.codes[self.first].tolist()]
        return codes[self.first].tolist()

    def key_array(self, codes: _Codes | np.ndarray) -> np.ndarray:
        """``keys`` as an array (strings as an object array), for ``RowColumns``."""
        if isinstance(codes, _Codes):
            return object_array(codes.values)[codes.codes[self.first]]
        return codes[self.first]

    def spread(self, gid: np.ndarray, items: np.ndarray, valid: np.ndarray) -> _Spread:
        """Per group, how many of its rows (``gid``: each row's group) hold each item (an
        integer), counting the rows where ``valid``."""
        return _Spread(gid[valid], items[valid], len(self))


class _Spread:
    """Counted (group, item) pairs, run-length encoded per group: group i's items, in order,
    are ``items[bounds[i]:bounds[i + 1]]`` and ``counts`` says how many rows hold each."""

    def __init__(self, gid: np.ndarray, items: np.ndarray, groups: int) -> None:
        lo = int(items.min()) if len(items) else 0
        width = int(items.max()) - lo + 1 if len(items) else 1
        pair, counts = np.unique(gid * width + (items - lo), return_counts=True)
        self.items = pair % width + lo
        self.counts = counts
        self.bounds = np.searchsorted(pair // width, np.arange(groups + 1))

    def csr(self, names: Sequence[str] | None = None) -> tuple[Csr, Csr]:
        """Every group's items (as ``names[item]`` when given) and counts, as two list columns
        of ``RowColumns``."""
        items = object_array(names)[self.items] if names is not None else self.items
        return Csr(items, self.bounds), Csr(self.counts, self.bounds)


class _CellBlock:
    """One scope type's cells of a pass, kept as columns until phase 2 reads them one by one
    (``Partials.cells`` iterates the blocks). As Python tuples a cell costs ~600 bytes, and a
    pass of 25,000 events of a sparse fleet is ~200,000 cells: built all at once they were
    most of a catching-up worker's peak memory, and of the ingest thread's time."""

    __slots__ = ("a", "bins", "c", "part", "scope", "start", "sums")

    CHUNK = 2048  # cells turned into Python values at a time

    def __init__(
        self,
        g: _Groups,
        scope: str,
        d1: _Codes,
        d2: _Codes | None,
        p: np.ndarray,
        bucket: np.ndarray,
        sums: np.ndarray,
        bins: _Spread,
    ) -> None:
        self.scope = scope
        # held until phase 2 has read them (a pass waiting for the windows, and the one they
        # add): 32-bit where the values fit, half of a sparse 50,000-event pass's ~67 MB
        self.a = (_narrow(d1.codes[g.first]), d1.values)
        self.c = (_narrow(d2.codes[g.first]), d2.values) if d2 is not None else None
        self.part, self.start = _narrow(p[g.first]), bucket[g.first]
        self.sums = _narrow(sums)
        bins.items, bins.counts = _narrow(bins.items), _narrow(bins.counts)
        bins.bounds = _narrow(bins.bounds)
        self.bins = bins

    def __len__(self) -> int:
        return len(self.sums)

    def __iter__(self) -> Iterator[Cell]:
        scope, bins = self.scope, self.bins
        for lo in range(0, len(self.sums), self.CHUNK):
            hi = min(lo + self.CHUNK, len(self.sums))
            codes, words = self.a
            a = [words[k] for k in codes[lo:hi].tolist()]
            if self.c is not None:
                codes, words = self.c
                c = [words[k] for k in codes[lo:hi].tolist()]
            else:
                c = [""] * (hi - lo)
            parts, starts = self.part[lo:hi].tolist(), self.start[lo:hi].tolist()
            counters = list(map(tuple, self.sums[lo:hi, :-1].tolist()))
            zeros = self.sums[lo:hi, -1].tolist()
            edge = bins.bounds[lo : hi + 1].tolist()
            first = edge[0]
            items = bins.items[first : edge[-1]].tolist()
            counts = bins.counts[first : edge[-1]].tolist()
            for i in range(hi - lo):
                x, y = edge[i] - first, edge[i + 1] - first
                yield (
                    (scope, a[i], c[i], parts[i], starts[i]),
                    counters[i],
                    zeros[i],
                    items[x:y],
                    counts[x:y],
                )


class _Cells:
    """A pass's cells, block after block (``_CellBlock``): what ``Partials.cells`` holds."""

    __slots__ = ("blocks",)

    def __init__(self, blocks: list[_CellBlock]) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return sum(len(b) for b in self.blocks)

    def __iter__(self) -> Iterator[Cell]:
        for b in self.blocks:
            yield from b


class _Batch:
    """The accepted rows of a decoded batch and their calls, as numpy columns."""

    def __init__(self, t: pa.Table, rows: np.ndarray, params: IngestParams) -> None:
        # the leading rows (every one but the sentinel, as a rule): a slice, no copy
        dense = rows[-1] == len(rows) - 1
        self.t = t.slice(0, len(rows)) if dense else t.take(pa.array(rows))
        t = self.t
        self.n = t.num_rows
        self.p = _ints(t, "p")
        self.ts = _ints(t, "ts")
        self.dur = _floats(t, "dur")
        self.dbin = _bins(self.dur)
        self._strings: dict[str, _Codes] = {}
        self.agent = self.strings("agent")
        self.outcome = self.strings("outcome")
        self.late, self.wm = _lateness(self.p, self.ts, params)
        self.bucket, self.bucket_starts = _buckets(self.late, self.wm, self.ts, params)
        # the calls, flattened: ``parent`` is each call's row
        ci = t.column("ci").combine_chunks()
        self.parent = pc.list_parent_indices(ci).to_numpy().astype(np.int64)
        self.integ = _Codes(pc.list_flatten(ci))
        self.status = _Codes(_flat(t, "cs"))
        self.lat = _flat(t, "cl").to_numpy()
        self.cbin = _bins(self.lat)
        self.ncalls = np.bincount(self.parent, minlength=self.n)
        # the first call of its row to each integration (a task counts once per integration)
        pair = self.parent * self.integ.size + self.integ.codes
        _, at = np.unique(pair, return_index=True)
        self.first = np.zeros(len(pair), bool)
        self.first[at] = True

    def strings(self, name: str) -> _Codes:
        """A string column of the rows as codes, encoded once per pass."""
        found = self._strings.get(name)
        if found is None:
            found = self._strings[name] = _Codes(self.t.column(name))
        return found

    def per_row(self, flags: np.ndarray) -> np.ndarray:
        """Per row, how many of its calls have ``flags``."""
        return np.bincount(self.parent, weights=flags, minlength=self.n).astype(np.int64)


def aggregate(
    table: pa.Table,
    head: bytes,
    kept: Sequence[int],
    partitions: Sequence[int],
    params: IngestParams,
    *,
    ids: dict[int, bytes] | None = None,
) -> Partials:
    """Partials of a decoded batch. ``kept``: the records (their index in the batch) given to
    the engine, in order; their rows must come back once each, in that order, each with the
    header ``head``, and the closing sentinel's row (header ``SENTINEL_HEAD``) last. A row's
    source partition is its record's in ``partitions``. ``ids``: the event id some rows must
    hold (by row), which shows rows out of order (every header is the same).

    Raises:
        BatchError: they did not.
    """
    heads = table.column("head")
    n = len(kept)
    if (
        table.num_rows != n + 1
        or heads[n].as_py() != SENTINEL_HEAD
        or (n and not pc.all(pc.equal(heads.slice(0, n), pa.scalar(head, heads.type))).as_py())
    ):
        raise BatchError(f"{table.num_rows} rows came back for {n} records and the sentinel")
    if ids:
        eids = table.column("eid")
        for j, want in ids.items():
            got = eids[j].as_py()
            if (got.encode() if isinstance(got, str) else got) != want:
                raise BatchError(f"row {j} holds another record than the batch's {kept[j]}")
    row = np.append(np.asarray(kept, np.int64), -1)
    p = np.append(np.asarray(partitions, np.int64)[row[:-1]], -1)
    table = table.append_column("row", pa.array(row)).append_column("p", pa.array(p))
    bad = _refused(table, params)
    out = Partials()
    out.rejected = [(int(r), "") for r in row[bad & (p >= 0)]]
    good = np.flatnonzero(~bad)
    if not len(good):
        return out
    b = _Batch(table, good, params)
    out.progress = _progress(b, params)
    out.cells = _Cells(_task_cells(b, params) + _call_cells(b, params))
    if params.breakers is not None:
        out.breaker_calls, out.breaker_tasks = _breaker_groups(b, params.breakers)
    if params.alerts is not None:
        out.alerts = _alert_groups(b, params.alerts)
    return out


# -- the batch's columns ------------------------------------------------------------------------


def _ints(t: pa.Table, name: str) -> np.ndarray:
    return t.column(name).to_numpy().astype(np.int64, copy=False)


def _floats(t: pa.Table, name: str) -> np.ndarray:
    return t.column(name).to_numpy().astype(np.float64, copy=False)


def _flat(t: pa.Table, name: str) -> pa.Array:
    return pc.list_flatten(t.column(name).combine_chunks())


def _refused(t: pa.Table, params: IngestParams) -> np.ndarray:
    """Per row, whether ``check_task_event`` refuses it (the sentinel, partition -1, too)."""
    dur = _floats(t, "dur")
    bad = (_ints(t, "p") < 0) | (_lengths(t.column("agent")) == 0)
    bad |= ~(np.isfinite(dur) & (dur >= 0))
    for name in ("tin", "tout", "tcached", "cost"):
        bad |= _ints(t, name) < 0
    bad |= _ints(t, "ts") > params.now_us + params.max_future_us
    ci = t.column("ci").combine_chunks()
    lat = _flat(t, "cl").to_numpy()
    wrong = ~(np.isfinite(lat) & (lat >= 0))
    wrong |= _lengths(pc.list_flatten(ci)) == 0
    wrong |= _flat(t, "cc").to_numpy() < 0
    if wrong.any():
        bad[pc.list_parent_indices(ci).to_numpy()[wrong]] = True
    return bad


def _lengths(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.binary_length(strings).to_numpy(zero_copy_only=False)


_LN2 = math.log(2)


def _bins(values: np.ndarray) -> np.ndarray:
    """Each value's sketch bin, as ``sketch.bin_key`` computes it (``ceil(log(v, 2) *
    multiplier) + offset``); values too small to index get the bin of 1.0, never read."""
    safe = np.where(values > _MIN_INDEXABLE, values, 1.0)
    logs = pc.ln(pa.array(safe, pa.float64())).to_numpy()
    return (np.ceil(logs / _LN2 * _MULTIPLIER) + _OFFSET).astype(np.int64)


def _lateness(p: np.ndarray, ts: np.ndarray, params: IngestParams) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether it is late, and its partition's watermark before it (the newest event
    time of the partition's earlier rows, or of the batches before; 0 if none)."""
    wm = np.zeros(len(ts), np.int64)
    for part in np.unique(p).tolist():
        at = np.flatnonzero(p == part)
        seen = np.maximum.accumulate(ts[at])
        before = params.watermarks.get(part, 0)
        wm[at[0]] = before
        wm[at[1:]] = np.maximum(seen[:-1], before)
    late = (wm > 0) & (ts < wm - params.lateness_us)
    return late, wm


def _progress(b: _Batch, params: IngestParams) -> dict[int, PartitionProgress]:
    out = {}
    for part in np.unique(b.p).tolist():
        at = b.p == part
        late = int(np.count_nonzero(at & b.late))
        before = params.watermarks.get(part)
        events = int(np.count_nonzero(at))
        newest = int(b.ts[at & ~b.late].max()) if events > late else None
        wm = newest if newest is not None and (before is None or newest > before) else before
        out[part] = PartitionProgress(watermark_us=wm, events=events, late=late)
    return out


def _buckets(
    late: np.ndarray, wm: np.ndarray, ts: np.ndarray, params: IngestParams
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the code of its finest bucket (a late row's is its watermark's), and the
    bucket starts by code."""
    at = np.where(late, wm, ts)
    start = at - at % params.bucket_us
    uniq, code = np.unique(start, return_inverse=True)
    return code.astype(np.int64), uniq


# -- the metric cells --------------------------------------------------------------------------


def _outcome_columns(b: _Batch, rows_of: np.ndarray | None, m: np.ndarray, on: np.ndarray) -> None:
    """Add to the contribution matrix ``m`` one count per outcome where ``on``."""
    codes = b.outcome.codes if rows_of is None else b.outcome.codes[rows_of]
    for name in OUTCOMES:
        if name in b.outcome.values:
            m[:, _AT[name]] = on & (codes == b.outcome.values.index(name))


def _task_cells(b: _Batch, params: IngestParams) -> list[_CellBlock]:
    """The task scopes: agent, agent x version, agent x task type, model."""
    on = ~b.late
    m = np.zeros((b.n, len(COUNTERS) + 1), np.int64)  # the counters, then the zero bin
    m[:, _AT["task_count"]] = on
    _outcome_columns(b, None, m, on)
    for name, col in (("cost_micros", "cost"), ("input_tokens", "tin"), ("output_tokens", "tout")):
        m[:, _AT[name]] = np.where(on, _ints(b.t, col), 0)
    m[:, _AT["tool_calls"]] = np.where(on, b.ncalls, 0)
    for name, statuses in (
        ("tool_errors", CALL_ERROR_STATUSES),
        ("tool_denied", {"denied"}),
        ("tool_short_circuited", {"short_circuited"}),
    ):
        m[:, _AT[name]] = np.where(on, b.per_row(b.status.flags(statuses)), 0)
    m[:, _AT["late_events"]] = b.late
    indexable = b.dur > _MIN_INDEXABLE
    m[:, -1] = on & ~indexable
    binned = on & indexable
    bucket, starts = b.bucket, b.bucket_starts
    part = (b.p, int(b.p.max()) + 1)
    version, task_type, model = (b.strings(c) for c in ("version", "task_type", "model"))
    agent = (b.agent.codes, b.agent.size)
    sets: list[tuple[str, list[tuple[np.ndarray, int]], _Codes, _Codes | None, Any]] = [
        ("agent", [agent], b.agent, None, None),
        ("agent_version", [agent, (version.codes, version.size)], b.agent, version, None),
        ("agent_task_type", [agent, (task_type.codes, task_type.size)], b.agent, task_type, None),
        (
            "model",
            [(model.codes, model.size)],
            model,
            None,
            model.codes != model.values.index("") if "" in model.values else None,
        ),
    ]
    out: list[_CellBlock] = []
    for scope, keys, d1, d2, only in sets:
        rows = np.arange(b.n) if only is None else np.flatnonzero(only)
        if not len(rows):
            continue
        g = _Groups(
            [(k[rows], n) for k, n in keys]
            + [(part[0][rows], part[1]), (bucket[rows], len(starts))]
        )
        bins = g.spread(g.gid, b.dbin[rows], binned[rows])
        out.append(
            _CellBlock(
                g,
                scope,
                d1.take(rows),
                d2.take(rows) if d2 else None,
                b.p[rows],
                starts[bucket[rows]],
                g.sums(m[rows]),
                bins,
            )
        )
    return out


def _call_cells(b: _Batch, params: IngestParams) -> list[_CellBlock]:
    """The integration scopes, a row per call: integration, agent x integration."""
    if not len(b.parent):
        return []
    row = b.parent
    late = b.late[row]
    on = ~late
    lead = on & b.first
    m = np.zeros((len(row), len(COUNTERS) + 1), np.int64)
    m[:, _AT["task_count"]] = lead
    _outcome_columns(b, row, m, lead)
    m[:, _AT["cost_micros"]] = np.where(on, _flat(b.t, "cc").to_numpy(), 0)
    m[:, _AT["tool_calls"]] = on
    m[:, _AT["tool_errors"]] = on & b.status.flags(CALL_ERROR_STATUSES)
    m[:, _AT["tool_denied"]] = on & b.status.flags({"denied"})
    m[:, _AT["tool_short_circuited"]] = on & b.status.flags({"short_circuited"})
    m[:, _AT["late_events"]] = late & b.first
    attempted = on & b.status.flags(ATTEMPTED_STATUSES)
    indexable = b.lat > _MIN_INDEXABLE
    m[:, -1] = attempted & ~indexable
    binned = attempted & indexable
    bucket, starts = b.bucket, b.bucket_starts
    bucket = bucket[row]
    p = b.p[row]
    integ = (b.integ.codes, b.integ.size)
    agent = _Codes.take(b.agent, row)
    part, buckets = (p, int(p.max()) + 1), (bucket, len(starts))
    out: list[_CellBlock] = []
    for scope, keys, d1, d2 in (
        ("integration", [integ, part, buckets], b.integ, None),
        ("agent_integration", [(agent.codes, agent.size), integ, part, buckets], agent, b.integ),
    ):
        g = _Groups(keys)
        bins = g.spread(g.gid, b.cbin, binned)
        out.append(_CellBlock(g, scope, d1, d2, p, starts[bucket], g.sums(m), bins))
    return out


# -- the breakers' counts ----------------------------------------------------------------------


def _slow(values: np.ndarray, thresholds: tuple[float, ...]) -> np.ndarray:
    """A row per value: 1, then whether it is at least as slow as each threshold."""
    m = np.empty((len(values), len(thresholds) + 1), np.int64)
    m[:, 0] = 1
    for i, t in enumerate(thresholds, 1):
        m[:, i] = values >= t
    return m


def _counted(g: _Groups, m: np.ndarray) -> tuple[list[int], list[tuple[int, ...]]]:
    sums = g.sums(m)
    return sums[:, 0].tolist(), list(map(tuple, sums[:, 1:].tolist()))


def _breaker_groups(b: _Batch, spec: BreakerSpec) -> tuple[list[Any], list[Any]]:
    """Calls per (partition, agent, integration, status, error type, second of the call's end),
    short-circuited calls left out; tasks per (partition, agent, outcome, second of the end).
    Late events count: a breaker reads the last seconds, whatever the watermark."""
    calls: list[Any] = []
    tasks: list[Any] = []
    part = (b.p, int(b.p.max()) + 1)
    if spec.call_slow_ms and len(b.parent):
        keep = ~b.status.flags({"short_circuited"})
        row = b.parent[keep]
        started = _flat(b.t, "cst").to_numpy().astype(np.int64)[keep]
        lat = b.lat[keep]
        sec = (started + (lat * 1000).astype(np.int64)) // US
        sec_code, secs = _dense(sec)
        agent, integ = b.agent.take(row), b.integ.take(keep)
        status, error = b.status.take(keep), _Codes(_flat(b.t, "ce")).take(keep)
        g = _Groups(
            [
                (part[0][row], part[1]),
                (agent.codes, agent.size),
                (integ.codes, integ.size),
                (status.codes, status.size),
                (error.codes, error.size),
                (sec_code, secs),
            ]
        )
        n, slow = _counted(g, _slow(lat, spec.call_slow_ms))
        calls = list(
            zip(
                g.keys(part[0][row]),
                g.keys(agent),
                g.keys(integ),
                g.keys(status),
                g.keys(error),
                g.keys(sec),
                n,
                slow,
                strict=True,
            )
        )
    if spec.task_slow_ms:
        sec = b.ts // US
        sec_code, secs = _dense(sec)
        g = _Groups(
            [
                part,
                (b.agent.codes, b.agent.size),
                (b.outcome.codes, b.outcome.size),
                (sec_code, secs),
            ]
        )
        n, slow = _counted(g, _slow(b.dur, spec.task_slow_ms))
        tasks = list(
            zip(g.keys(b.p), g.keys(b.agent), g.keys(b.outcome), g.keys(sec), n, slow, strict=True)
        )
    return calls, tasks


# -- the alert rules' groups -------------------------------------------------------------------


def _alert_groups(b: _Batch, spec: AlertSpec) -> AlertGroups:
    """See ``cells.AlertGroups``: every accepted event counts (the alert windows decide what
    is too old), per step of the task's end."""
    step = spec.step_s
    out = AlertGroups(
        tasks=_alert_tasks(b, step), calls=_alert_calls(b, step), versions=_versions(b)
    )
    if spec.run_gap_us is not None:
        out.runs = _runs(b, spec.run_gap_us)
    return out


def _alert_tasks(b: _Batch, step: int) -> RowColumns[AlertTaskRow]:
    sec = b.ts // US // step * step
    sec_code, secs = _dense(sec)
    failed = b.outcome.flags(FAILED_OUTCOMES)
    indexable = b.dur > _MIN_INDEXABLE
    m = np.empty((b.n, 4), np.int64)
    m[:, 0] = 1
    m[:, 1] = failed
    m[:, 2] = _ints(b.t, "cost")
    m[:, 3] = ~indexable
    # the integrations with a failing call in a failed task, each once per task
    failing = np.flatnonzero(b.status.flags(FAILING_CALL_STATUSES) & failed[b.parent])
    pair = b.parent[failing] * b.integ.size + b.integ.codes[failing]
    _, once = np.unique(pair, return_index=True)
    via_row, via = b.parent[failing[once]], b.integ.codes[failing[once]]
    up = b.strings("up")
    after = failed & (up.codes != up.values.index("")) if "" in up.values else failed
    agent = (b.agent.codes, b.agent.size)
    parts: list[RowColumns[AlertTaskRow]] = []
    for scope, d2 in (
        ("agent", None),
        ("agent_version", b.strings("version")),
        ("agent_task_type", b.strings("task_type")),
    ):
        keys = [agent] if d2 is None else [agent, (d2.codes, d2.size)]
        g = _Groups([*keys, (sec_code, secs)])
        sums = g.sums(m)
        bins = g.spread(g.gid, b.dbin, indexable)
        vias = g.spread(g.gid[via_row], via, np.ones(len(via), bool))
        afters = g.spread(g.gid, up.codes, after)
        parts.append(
            RowColumns(
                [
                    object_array([scope]).repeat(len(g)),
                    g.key_array(b.agent),
                    g.key_array(d2) if d2 is not None else object_array([""]).repeat(len(g)),
                    g.key_array(sec),
                    *sums.T,  # tasks, failed, cost, zero-latency tasks
                    *bins.csr(),
                    *vias.csr(b.integ.values),
                    *afters.csr(up.values),
                ]
            )
        )
    return RowColumns.concat(parts)


def _alert_calls(b: _Batch, step: int) -> RowColumns[AlertCallRow] | list[AlertCallRow]:
    """Calls per (agent, integration, role, operation, access, approved, second)."""
    if not len(b.parent):
        return []
    row = b.parent
    sec = b.ts[row] // US // step * step
    sec_code, secs = _dense(sec)
    agent, role = b.agent.take(row), b.strings("role").take(row)
    op, acc = _Codes(_flat(b.t, "co")), _Codes(_flat(b.t, "ca"))
    approved = _flat(b.t, "capp").to_numpy().astype(bool)
    g = _Groups(
        [
            (agent.codes, agent.size),
            (b.integ.codes, b.integ.size),
            (role.codes, role.size),
            (op.codes, op.size),
            (acc.codes, acc.size),
            (approved.astype(np.int64), 2),
            (sec_code, secs),
        ]
    )
    attempted = b.status.flags(ATTEMPTED_STATUSES)
    m = np.empty((len(row), 5), np.int64)
    m[:, 0] = b.first
    m[:, 1] = attempted
    m[:, 2] = attempted & ~b.status.flags({"ok"})
    m[:, 3] = b.status.flags({"denied"})
    m[:, 4] = 1
    return RowColumns(
        [
            g.key_array(agent),
            g.key_array(b.integ),
            g.key_array(role),
            g.key_array(op),
            g.key_array(acc),
            g.key_array(approved),
            g.key_array(sec),
            *g.sums(m).T,
        ]
    )


def _versions(b: _Batch) -> list[tuple[str, str]]:
    """(agent, version) in the order the batch first shows them."""
    version = b.strings("version")
    _, first = np.unique(b.agent.codes * version.size + version.codes, return_index=True)
    first.sort()
    return [
        (b.agent.values[a], version.values[v])
        for a, v in zip(b.agent.codes[first].tolist(), version.codes[first].tolist(), strict=True)
    ]


def _runs(b: _Batch, gap_us: int) -> list[tuple[str, list[int]]]:
    """Per agent, the starts of its runs: in time order, a start more than ``gap_us`` after the
    previous run's start begins a new run. An agent whose starts all fall within the gap of
    its first has one run, found without a loop; the others are walked run by run."""
    started = _ints(b.t, "started")
    order = np.lexsort((started, b.agent.codes))
    agents, at = np.unique(b.agent.codes[order], return_index=True)
    ends = np.append(at[1:], len(order))
    s = started[order]
    first, last = s[at], s[ends - 1]
    out: list[tuple[str, list[int]]] = []
    names = b.agent.values
    for a, lo, hi, x0, x1 in zip(
        agents.tolist(), at.tolist(), ends.tolist(), first.tolist(), last.tolist(), strict=True
    ):
        runs = [x0]
        if x1 - x0 > gap_us:
            seg = s[lo:hi]
            i = 0
            while True:
                i = int(np.searchsorted(seg, runs[-1] + gap_us, side="right"))
                if i >= len(seg):
                    break
                runs.append(int(seg[i]))
        out.append((names[a], runs))
    return out
