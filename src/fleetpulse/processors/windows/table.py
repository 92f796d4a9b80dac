"""The storage of one scope's windows: rows of integers in five flat arrays, no object per row.

A row is what one bucket (or one running total) holds: the integer counters of ``Agg`` and a
latency sketch. Rows are sorted by an integer *row key* and stored column-wise::

    keys        array('q')  row key, ascending                        one per row
    cells       array('i')  COUNTERS in wire order, then the sketch's  ROW (15) per row
                            zero-bin count
    bin_end     array('i')  where the row's sketch bins end in the     one per row
                            two arrays below (they start where the
                            previous row's end: compressed sparse rows)
    bin_keys    array('i')  sketch bin keys, ascending within a row   one per bin
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
from collections.abc import Sequence

from fleetpulse.processors.windows.aggregate import COUNTERS, Agg
from fleetpulse.processors.windows.sketch import LatencySketch

N_COUNTERS = len(COUNTERS)
ROW = N_COUNTERS + 1  # a row's cells: the counters, then the zero-bin count
_EMPTY_ROW = {code: array(code, [0] * ROW) for code in "iq"}  # by the cells' typecode

# one row's content as plain values: counters (COUNTERS order), zero-bin count, bin keys
# (ascending) and their counts -- the shape of an ingest cell
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
        base = i * ROW
        for j, v in enumerate(counters):
            if v:
                self._add_cell(base + j, sign * v)
        if zero:
            self._add_cell(base + N_COUNTERS, sign * zero)
        for k, n in zip(keys, counts, strict=True):
            self._add_bin(i, k, sign * n)

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

    # -- writing a value that may not fit 32 bits ------------------------------------------

    def _add_cell(self, at: int, v: int) -> None:
        try:
            self.cells[at] += v
        except OverflowError:  # nothing was written
            self.cells = array("q", self.cells)
            self.cells[at] += v

    def _set_count(self, p: int, n: int, insert: bool) -> None:
        try:
            if insert:
                self.bin_counts.insert(p, n)
            else:
                self.bin_counts[p] = n
        except OverflowError:  # nothing was written
            self.bin_counts = array("q", self.bin_counts)
            self._set_count(p, n, insert)

    # -- the sketch columns ---------------------------------------------------------------

    def _add_bin(self, i: int, key: int, n: int) -> None:
        lo = self.bin_end[i - 1] if i else 0
        hi = self.bin_end[i]
        bin_keys = self.bin_keys
        p = bisect_left(bin_keys, key, lo, hi)
        if p < hi and bin_keys[p] == key:
            left = self.bin_counts[p] + n
            if left:
                self._set_count(p, left, insert=False)
            else:
                del bin_keys[p]
                del self.bin_counts[p]
                self._shift_bins(i, -1)
        elif n:
            self._set_count(p, n, insert=True)
            bin_keys.insert(p, key)
            self._shift_bins(i, 1)

    def _shift_bins(self, i: int, d: int) -> None:
        """Rows from ``i`` on gained (lost) ``d`` bins before their end."""
        be = self.bin_end
        for j in range(i, len(be)):
            be[j] += d


_TOOL_CALLS = COUNTERS.index("tool_calls")
_LATE = COUNTERS.index("late_events")
