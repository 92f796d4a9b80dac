"""Sliding windows over event time, built from fixed buckets. Pure: no I/O, no clock reads.

Each horizon reads the buckets of one *level* (a bucket width). Short horizons share fine
buckets, long ones use coarse buckets, so memory per scope is bounded by the sum over levels of
``longest horizon at that level / width`` buckets: with the defaults 60 + 60 + 96 = 216 buckets,
whatever the event rate. A scope stores its buckets and running totals as rows of a few flat
integer arrays (``table.py``), not as an object per bucket.

The window of horizon ``h`` (bucket width ``w``) at time ``now`` covers the bucket holding
``now`` and the buckets before it, ``h / w`` buckets in all:

    end   = (now // w + 1) * w
    start = end - h

so a 1-minute window with 5-second buckets spans 55 to 60 seconds of history plus the part of the
current bucket already seen. Snapshots carry ``start`` and ``end`` so a reader knows exactly which
events a figure covers.

Lateness is decided by the caller (the engine keeps a watermark per source partition); a bucket
only ever receives events the caller accepted.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from fleetpulse.contract.horizons import Horizon
from fleetpulse.processors.figures.aggregate import Agg
from fleetpulse.processors.windows.table import Parts, RowTable, parts_of

US = 1_000_000


DEFAULT_HORIZONS = (Horizon(60, 5), Horizon(300, 5), Horizon(3600, 60), Horizon(86400, 900))


@dataclass(frozen=True)
class WindowConfig:
    """Horizons and lateness. Invalid combinations raise ValueError naming the horizon."""

    horizons: tuple[Horizon, ...] = DEFAULT_HORIZONS
    allowed_lateness_s: int = 120
    levels: tuple[int, ...] = field(init=False)  # distinct bucket widths, finest first
    retention_s: tuple[int, ...] = field(init=False)  # per level: its longest horizon
    _horizons_at: tuple[tuple[int, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.horizons:
            raise ValueError("at least one horizon is needed")
        if self.allowed_lateness_s < 0:
            raise ValueError("allowed_lateness_s must be >= 0")
        levels = tuple(sorted({h.bucket_s for h in self.horizons}))
        for w in levels[1:]:
            if w % levels[0]:
                raise ValueError(
                    f"bucket width {w}s is not a multiple of the finest width {levels[0]}s"
                )
        retention = tuple(max(h.seconds for h in self.horizons if h.bucket_s == w) for w in levels)
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "retention_s", retention)
        at = tuple(tuple(i for i, h in enumerate(self.horizons) if h.bucket_s == w) for w in levels)
        object.__setattr__(self, "_horizons_at", at)

    @property
    def longest_s(self) -> int:
        return max(h.seconds for h in self.horizons)

    def level_of(self, horizon: Horizon) -> int:
        return self.levels.index(horizon.bucket_s)

    def horizons_at(self, level: int) -> tuple[int, ...]:
        """Indexes of the horizons read from bucket level ``level``."""
        return self._horizons_at[level]

    def max_buckets_per_scope(self) -> int:
        return sum(r // w for w, r in zip(self.levels, self.retention_s, strict=True))


# per batch: ((level, width_us, oldest kept bucket start), ...) for the batch's `now`
LevelBounds = tuple[tuple[int, int, int], ...]


def level_bounds(cfg: WindowConfig, now_us: int) -> LevelBounds:
    """Per level: its index, bucket width and the oldest bucket start any window still reads
    at ``now_us`` (the one place that rule is written)."""
    out = []
    for i, (w_s, keep_s) in enumerate(zip(cfg.levels, cfg.retention_s, strict=True)):
        w = w_s * US
        out.append((i, w, (now_us // w + 1) * w - keep_s * US))
    return tuple(out)


LEVEL_SHIFT = 56  # row key = level << LEVEL_SHIFT | bucket start (epoch us < 2**56)
TOTALS_LEVEL = 127  # the pseudo-level of the running totals: row key = 127 << 56 | horizon


def bucket_key(level: int, start_us: int) -> int:
    """The row key of the bucket of level ``level`` starting at ``start_us``."""
    return level << LEVEL_SHIFT | start_us


_TOTALS = TOTALS_LEVEL << LEVEL_SHIFT
_NEVER = 1 << 62  # a due time no clock reaches


class ScopeWindows(RowTable):
    """The buckets of one scope at every level, and, once the scope is read, a running total
    per horizon, all as rows of one ``RowTable`` (``table.py``: five flat integer arrays):

    * the bucket of level ``li`` starting at ``start`` is the row ``li << 56 | start``, so the
      buckets of a level are contiguous and in time order, and a window is a run of rows;
    * the running total of horizon ``hi`` is the row ``127 << 56 | hi`` (after every bucket):
      the sum of the buckets inside that horizon's window as of the last ``slide``
      (``slid_us``; every horizon slides to the same instant).

    A cell added to a bucket inside a window is added to its total too; ``slide`` subtracts
    the buckets a window leaves and adds those it enters, so a snapshot costs one read per
    horizon instead of a merge of up to 96 buckets. Counters and sketch bins are integers: a
    running total is exactly the sum computed afresh."""

    __slots__ = ("due_us", "slid_us")

    def __init__(self, n_levels: int = 0) -> None:  # n_levels: kept for callers; rows need none
        super().__init__()
        self.slid_us: int | None = None  # the instant the totals were last slid to
        self.due_us = 0  # sliding before this instant changes nothing (``next_due``)

    def add_cell(
        self,
        cfg: WindowConfig,
        li: int,
        start: int,
        cell: tuple[tuple[int, ...], int, list[int], list[int]],
    ) -> None:
        """Add one ingest cell (counters, zero-bin count, bin keys, bin counts) to the bucket
        of level ``li`` starting at ``start``, and to the totals whose window holds it."""
        self.add(self.row(bucket_key(li, start)), cell)
        for t in self._totals_holding(cfg, li, start):
            self.add(t, cell)

    def replace(self, cfg: WindowConfig, li: int, start: int, old: Agg | None, new: Agg) -> None:
        """Swap one source's contribution ``old`` (None: first) for ``new`` in a bucket."""
        rows = [self.row(bucket_key(li, start)), *self._totals_holding(cfg, li, start)]
        old_parts = parts_of(old) if old is not None else None
        new_parts = parts_of(new)
        for r in rows:
            if old_parts is not None:
                self.add(r, old_parts, -1)
            self.add(r, new_parts)

    def _totals_holding(self, cfg: WindowConfig, li: int, start: int) -> list[int]:
        """The rows of the running totals whose window holds the bucket of level ``li`` at
        ``start`` (call after the bucket's row exists: inserting a row moves the totals)."""
        if self.slid_us is None:
            return []
        first = len(self.keys) - len(cfg.horizons)
        out = []
        for hi in cfg.horizons_at(li):
            s, e = cfg.horizons[hi].bounds(self.slid_us)
            if s <= start < e:
                out.append(first + hi)
        return out

    def slide(self, cfg: WindowConfig, now_us: int) -> bool:
        """Move every horizon's window to ``now_us``; True when a window lost a bucket that
        held data (its figures changed although no event arrived)."""
        if self.slid_us is None:
            for hi in range(len(cfg.horizons)):
                self.row(_TOTALS | hi)
        first = len(self.keys) - len(cfg.horizons)
        lost = False
        for hi, h in enumerate(cfg.horizons):
            s1, e1 = h.bounds(self.slid_us) if self.slid_us is not None else (0, 0)
            s2, e2 = h.bounds(now_us)
            if (s1, e1) == (s2, e2):
                continue
            li, total = cfg.level_of(h), first + hi
            for lo, hi_ in ((s1, min(e1, s2)), (max(s1, e2), e1)):  # buckets leaving
                if lo < hi_:
                    for r in self.span(bucket_key(li, lo), bucket_key(li, hi_)):
                        self.add_row(total, r, -1)
                        lost = lost or not self.row_is_empty(r)
            for lo, hi_ in ((s2, min(e2, s1)), (max(s2, e1), e2)):  # buckets entering
                if lo < hi_:
                    for r in self.span(bucket_key(li, lo), bucket_key(li, hi_)):
                        self.add_row(total, r)
        self.slid_us = now_us
        return lost

    def next_due(self, cfg: WindowConfig, now_us: int) -> int:
        """The first instant after ``now_us`` at which sliding could change a total: the next
        bucket edge of a level holding a bucket. A window only gains or loses a bucket at an
        edge of its level, and a level without buckets has nothing to gain or lose (new cells
        mark the scope changed, and a changed scope is slid anyway). So a scope last seen an
        hour ago, with day buckets only, is slid every 15 minutes instead of at every snapshot
        round: a round's cost follows what changed, not the fleet's size."""
        keys, due = self.keys, _NEVER
        for li, w_s in enumerate(cfg.levels):
            lo = bisect_left(keys, bucket_key(li, 0))
            if lo < len(keys) and keys[lo] < bucket_key(li + 1, 0):
                w = w_s * US
                due = min(due, (now_us // w + 1) * w)
        return due

    @property
    def totals(self) -> list[Agg] | None:
        """The running totals, one per horizon, as of ``slid_us`` (None before a slide)."""
        if self.slid_us is None:
            return None
        return [self.agg(r) for r in self.span(_TOTALS, _TOTALS + (1 << LEVEL_SHIFT))]

    def total(self, cfg: WindowConfig, hi: int) -> tuple[int, int, Agg]:
        """(start, end, total) of horizon ``hi`` as of the last slide."""
        start, end, row = self._total_row(cfg, hi)
        return start, end, self.agg(row)

    def total_parts(self, cfg: WindowConfig, hi: int) -> tuple[int, int, Parts]:
        """``total`` as row content (counters, zero bin, bins), without building an ``Agg``:
        what a snapshot reads."""
        start, end, row = self._total_row(cfg, hi)
        return start, end, self.parts(row)

    def _total_row(self, cfg: WindowConfig, hi: int) -> tuple[int, int, int]:
        assert self.slid_us is not None, "slide() first"
        start, end = cfg.horizons[hi].bounds(self.slid_us)
        return start, end, len(self.keys) - len(cfg.horizons) + hi

    def bucket(self, li: int, start: int) -> Agg | None:
        """A copy of one bucket, None when it holds nothing."""
        r = self.find(bucket_key(li, start))
        return self.agg(r) if r >= 0 else None

    def window(self, cfg: WindowConfig, horizon: Horizon, now_us: int) -> tuple[int, int, Agg]:
        """(start, end, total) of ``horizon`` at ``now_us``, summed afresh from the buckets."""
        start, end = horizon.bounds(now_us)
        li = cfg.level_of(horizon)
        total = Agg()
        for r in self.span(bucket_key(li, start), bucket_key(li, end)):
            total.merge(self.agg(r))
        return start, end, total

    def evict(self, bounds: LevelBounds) -> None:
        """Drop buckets older than every window of their level (``bounds`` from
        ``level_bounds(cfg, now)``)."""
        for i, _, oldest_kept in bounds:
            self.delete(self.span(bucket_key(i, 0), bucket_key(i, oldest_kept)))

    def is_empty(self) -> bool:
        return self.bucket_count() == 0

    def bucket_count(self) -> int:
        return bisect_left(self.keys, _TOTALS)
