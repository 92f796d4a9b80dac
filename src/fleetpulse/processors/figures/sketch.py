"""Latency quantiles: DDSketch's logarithmic mapping over bins we keep in a plain dict.

ddsketch (DataDog's maintained library) supplies the part that decides accuracy: the
logarithmic mapping from a value to a bin and back, which guarantees the relative error of every
quantile (1% here). We keep the bin counts ourselves, in a dict, for one reason: sliding windows
*subtract* a bucket that leaves the window, and ``ddsketch.DDSketch`` can merge but not subtract.
With the same mapping and the same rank rule, ``quantile()`` returns exactly what
``DDSketch.get_quantile_value`` returns for the same values; a unit test pins that.

Counts are integers, so adding and subtracting are exact: a window total built incrementally is
identical to one summed from scratch.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate

from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.01
MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
# values at or below this (zero, negative clock noise) are counted in the zero bin, as DDSketch does
_MIN_INDEXABLE = MAPPING.min_possible


# MAPPING.key(v) inlined (the hot path maps every latency once): same arithmetic, same keys;
# a unit test checks bin_key against MAPPING.key
_MULTIPLIER = MAPPING._multiplier
_OFFSET = MAPPING._offset
_log, _ceil = math.log, math.ceil


def bin_key(value: float) -> int | None:
    """The bin of ``value``; None for the zero bin."""
    if value <= _MIN_INDEXABLE:
        return None
    return int(_ceil(_log(value, 2) * _MULTIPLIER) + _OFFSET)


class LatencySketch:
    """Mergeable and subtractable latency distribution with 1% relative quantile error.

    Example:
        >>> s = LatencySketch()
        >>> for v in (10.0, 20.0, 30.0, 40.0):
        ...     s.add(v)
        >>> round(s.quantile(0.5))
        20
    """

    __slots__ = ("bins", "count", "zero")

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.zero = 0
        self.count = 0

    def add(self, value: float) -> None:
        self.add_key(bin_key(value))

    def add_key(self, key: int | None, n: int = 1) -> None:
        """Add ``n`` values already mapped to ``key`` (map once, add to many sketches)."""
        self.count += n
        if key is None:
            self.zero += n
        else:
            bins = self.bins
            bins[key] = bins.get(key, 0) + n

    def add_bins(self, zero: int, keys: list[int], counts: list[int]) -> None:
        """Add ``zero`` values to the zero bin and ``counts[i]`` values to bin ``keys[i]``."""
        self.zero += zero
        self.count += zero
        bins = self.bins
        for k, n in zip(keys, counts, strict=True):
            bins[k] = bins.get(k, 0) + n
            self.count += n

    def merge(self, other: LatencySketch) -> None:
        self.count += other.count
        self.zero += other.zero
        bins = self.bins
        for k, n in other.bins.items():
            bins[k] = bins.get(k, 0) + n

    def subtract(self, other: LatencySketch) -> None:
        """Remove ``other``'s values; ``other`` must have been merged into this sketch."""
        self.count -= other.count
        self.zero -= other.zero
        bins = self.bins
        for k, n in other.bins.items():
            left = bins[k] - n
            if left:
                bins[k] = left
            else:
                del bins[k]

    def quantile(self, q: float) -> float:
        """The value at quantile ``q`` (0..1), DDSketch's rank rule; 0.0 when empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """Several quantiles with ``quantile``'s rule (see ``quantiles_of``)."""
        return quantiles_of(self.zero, list(self.bins), list(self.bins.values()), qs)

    def copy(self) -> LatencySketch:
        c = LatencySketch()
        c.bins = dict(self.bins)
        c.zero = self.zero
        c.count = self.count
        return c

    def to_list(self) -> list[int]:
        """Compact form for the wire: [zero, k1, n1, k2, n2, ...]."""
        out = [self.zero]
        for k, n in self.bins.items():
            out.append(k)
            out.append(n)
        return out

    @classmethod
    def from_list(cls, data: list[int]) -> LatencySketch:
        s = cls()
        s.zero = data[0]
        it = iter(data[1:])
        s.bins = dict(zip(it, it, strict=True))
        s.count = s.zero + sum(s.bins.values())
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencySketch):
            return NotImplemented
        return self.count == other.count and self.zero == other.zero and self.bins == other.bins

    __hash__ = None  # type: ignore[assignment]


def quantiles_of(
    zero: int, keys: Sequence[int], counts: Sequence[int], qs: Iterable[float]
) -> list[float]:
    """``LatencySketch.quantile`` at each of ``qs`` for a sketch given as its zero-bin count
    and its bins (keys in any order, their counts), as the windows store it: the running counts
    of the sorted bins are summed and searched in C (a snapshot round asks this of every scope
    and horizon, and a wide sketch has hundreds of bins)."""
    qs = list(qs)
    if not keys:
        return [0.0] * len(qs)
    bins = dict(zip(keys, counts, strict=True))
    ordered = sorted(bins)
    # running[j]: how many values are in the zero bin and the first j bins in key order
    running = list(accumulate(map(bins.__getitem__, ordered), initial=zero))
    out = []
    for q in qs:
        rank = q * (running[-1] - 1)
        if rank < zero:
            out.append(0.0)
            continue
        j = bisect_right(running, rank)  # the first bin whose running count passes rank
        out.append(float(MAPPING.value(ordered[min(j, len(ordered)) - 1])))
    return out
