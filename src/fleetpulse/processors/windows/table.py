"""The storage of one scope's windows: rows of integers in five flat arrays, no object per row.

A row is what one bucket (or one running total) holds: the integer counters of ``Agg`` and a
latency sketch. Rows are sorted by an integer *row key* and stored column-wise::

    keys        array('q')  row key, ascending                        one per row
    cells       array('i')  COUNTERS in wire order, then the sketch's  ROW (15) per row
                            zero-bin count
    bin_end     array('i')  where the row's sketch bins end in the     one per row
                            two arrays below (they start where the
                            previous row's end: compressed sparse rows)
    bin_keys    array('i')  sketch bin keys, in arrival order within  one per bin
                            a row
    bin_counts  array('i')  their counts (never zero: an emptied bin  one per bin
                            is removed)

``cells`` and ``bin_counts`` start 32-bit and widen to 64-bit (``'q'``), for that scope only,
the first time a value does not fit (``array`` raises OverflowError, the value unchanged): an
agent's day of tokens fits in 32 bits, a busy model scope's does not. Bin keys fit in 32 bits
whatever the value (about +-35,000 at 1% accuracy).

Why: a scope holds up to 216 buckets and a worker 90,000 scopes; as an ``Agg`` object with a
``LatencySketch`` and a dict per bucket, one bucket cost about 1.2 kB of Python objects. Here
it costs 8 + 60 + 4 bytes plus 8 bytes per sketch bin, and a scope's fixed cost is five array
headers. Every number is an integer, so adding and subtracting rows stays exact.

Rows are added to, subtracted from, inserted and deleted in place; ``buckets.ScopeWindows``
says what the row keys mean. Pure: no I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from functools import partial

from fleetpulse.processors.figures.aggregate import COUNTERS, Agg
from fleetpulse.processors.figures.sketch import LatencySketch

N_COUNTERS = len(COUNTERS)
ROW = N_COUNTERS + 1  # a row's cells: the counters, then the zero-bin count
_EMPTY_ROW = {code: array(code, [0] * ROW) for code in "iq"}  # by the cells' typecode

# one row's content as plain values: counters (COUNTERS order), zero-bin count, bin keys (each
# once, in any order) and their counts -- the shape of an ingest cell
Parts = tuple[Sequence[int], int, Sequence[int], Sequence[int]]


def parts_of(agg: Agg) -> Parts:
    """An ``Agg`` as row content."""
    keys = sorted(agg.latency.bins)
    counters = [getattr(agg, name) for name in COUNTERS]
    return counters, agg.latency.zero, keys, [agg.latency.bins[k] for k in keys]


class RowTable:
    """Integer rows sorted by key, stored column-wise (see the module docstring)."""

    __slots__ = ("bin_counts", "bin_end", "bin_keys", "cells", "keys")

    def __init__(self) -> None:
        self.keys = array("q")
        self.cells = array("i")  # widened to "q" on the first overflow
        self.bin_end = array("i")
        self.bin_keys = array("i")
        self.bin_counts = array("i")  # widened to "q" on the first overflow

    # -- finding and making rows ----------------------------------------------------------

    def find(self, key: int) -> int:
        """Index of the row ``key``, or -1."""
        i = bisect_left(self.keys, key)
        return i if i < len(self.keys) and self.keys[i] == key else -1

    def row(self, key: int) -> int:
        """Index of the row ``key``, inserted empty when missing."""
        keys = self.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return i
        keys.insert(i, key)
        self.cells[i * ROW : i * ROW] = _EMPTY_ROW[self.cells.typecode]
        self.bin_end.insert(i, self.bin_end[i - 1] if i else 0)
        return i

    def span(self, lo_key: int, hi_key: int) -> range:
        """Indexes of the rows with ``lo_key <= key < hi_key``."""
        return range(bisect_left(self.keys, lo_key), bisect_left(self.keys, hi_key))

    def delete(self, rows: range) -> None:
        """Delete a contiguous run of rows."""
        a, b = rows.start, rows.stop
        if a >= b:
            return
        lo = self.bin_end[a - 1] if a else 0
        hi = self.bin_end[b - 1]
        del self.keys[a:b]
        del self.cells[a * ROW : b * ROW]
        del self.bin_end[a:b]
        del self.bin_keys[lo:hi]
        del self.bin_counts[lo:hi]
        self._shift_bins(a, lo - hi)

    # -- arithmetic -----------------------------------------------------------------------

    def add(self, i: int, parts: Parts, sign: int = 1) -> None:
        """Add (``sign`` 1) or subtract (-1) row content to row ``i``."""
        counters, zero, keys, counts = parts
        cells, base, j = self.cells, i * ROW, 0
        try:
            for j, v in enumerate(counters):  # j is read after an overflow
                if v:
                    cells[base + j] += sign * v
        except OverflowError:  # counter j was not written: widen, then go on from it
            cells = self.cells = array("q", cells)
            for jj in range(j, N_COUNTERS):
                cells[base + jj] += sign * counters[jj]
        if zero:
            try:
                cells[base + N_COUNTERS] += sign * zero
            except OverflowError:
                cells = self.cells = array("q", cells)
                cells[base + N_COUNTERS] += sign * zero
        if keys:
            self._add_bins(i, keys, counts, sign)

    def add_row(self, dst: int, src: int, sign: int = 1) -> None:
        """Add (or subtract) row ``src`` to row ``dst``."""
        self.add(dst, self.parts(src), sign)

    def parts(self, i: int) -> Parts:
        base = i * ROW
        lo = self.bin_end[i - 1] if i else 0
        hi = self.bin_end[i]
        return (
            self.cells[base : base + N_COUNTERS],
            self.cells[base + N_COUNTERS],
            self.bin_keys[lo:hi],
            self.bin_counts[lo:hi],
        )

    def agg(self, i: int) -> Agg:
        """Row ``i`` as an ``Agg`` (a copy: for snapshots, the wire and tests)."""
        counters, zero, keys, counts = self.parts(i)
        a = Agg()
        for name, v in zip(COUNTERS, counters, strict=True):
            setattr(a, name, v)
        s = a.latency = LatencySketch()
        s.zero = zero
        s.bins = dict(zip(keys, counts, strict=True))
        s.count = zero + sum(counts)
        return a

    def row_is_empty(self, i: int) -> bool:
        """No task, call or late event (``Agg.is_empty``)."""
        c, base = self.cells, i * ROW
        return not (c[base] or c[base + _TOOL_CALLS] or c[base + _LATE])

    # -- the sketch columns ---------------------------------------------------------------

    def _add_bins(self, i: int, keys: Sequence[int], counts: Sequence[int], sign: int) -> None:
        """Bins into row ``i``. A row's bins are kept in arrival order: a bin it has is found
        (a scan in C, or a dict of the row's keys) and updated in place; new bins are
        appended to the row in one slice, so the rows after it shift once, not once per bin.
        Bins that drop to zero are removed."""
        lo = self.bin_end[i - 1] if i else 0
        hi = self.bin_end[i]
        new_keys: list[int] = []
        new_counts: list[int] = []
        emptied = False
        if lo == hi:  # an empty row takes the bins as they are
            new_keys.extend(keys)
            new_counts.extend(sign * n for n in counts)
        else:
            if len(keys) * 16 < hi - lo:  # a few bins into a long row: scan for each (in C)
                at: Callable[[int], int | None] = partial(_find, self.bin_keys, lo, hi)
            else:  # else one dict of the row's keys, built in C
                at = dict(zip(self.bin_keys[lo:hi], range(lo, hi), strict=True)).get
            bin_counts = self.bin_counts
            for k, n in zip(keys, counts, strict=True):
                p = at(k)
                if p is None:
                    new_keys.append(k)
                    new_counts.append(sign * n)
                    continue
                left = bin_counts[p] + sign * n
                try:
                    bin_counts[p] = left
                except OverflowError:  # nothing was written
                    bin_counts = self.bin_counts = array("q", bin_counts)
                    bin_counts[p] = left
                emptied = emptied or not left
        if new_keys:
            self._write_bins(i, hi, hi, new_keys, new_counts)
            hi += len(new_keys)
        if emptied:
            kept = [
                kv for kv in zip(self.bin_keys[lo:hi], self.bin_counts[lo:hi], strict=True) if kv[1]
            ]
            self._write_bins(i, lo, hi, [k for k, _ in kept], [n for _, n in kept])

    def _write_bins(self, i: int, lo: int, hi: int, keys: list[int], counts: list[int]) -> None:
        """Replace the bins at [lo, hi) (inside row ``i``, or empty at its end) by these."""
        try:
            counts_col = array(self.bin_counts.typecode, counts)
        except OverflowError:
            self.bin_counts = array("q", self.bin_counts)
            counts_col = array("q", counts)
        self.bin_keys[lo:hi] = array("i", keys)
        self.bin_counts[lo:hi] = counts_col
        if len(keys) != hi - lo:
            self._shift_bins(i, len(keys) - (hi - lo))

    def _shift_bins(self, i: int, d: int) -> None:
        """Rows from ``i`` on gained (lost) ``d`` bins before their end."""
        be = self.bin_end
        for j in range(i, len(be)):
            be[j] += d


def _find(keys: array[int], lo: int, hi: int, key: int) -> int | None:
    """Where ``key`` is in ``keys[lo:hi]``, or None."""
    try:
        return keys.index(key, lo, hi)
    except ValueError:
        return None


_TOOL_CALLS = COUNTERS.index("tool_calls")
_LATE = COUNTERS.index("late_events")
