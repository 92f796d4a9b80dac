"""The processors' state and arithmetic, free of Kafka: feed it decoded events, take out
MetricSnapshots and the partial aggregates to repartition. Pure (the clock is injected).

Scopes come in two kinds:

* **local** scopes (agent, agent x version, agent x task type, agent x integration) belong to one
  agent, and task events are keyed by agent id, so a single task-events partition holds all of
  a local scope's events and its owner computes the windows alone.
* **global** scopes (integration, model) gather events from every partition. Each task-events
  owner keeps its partition's *contribution* per bucket and publishes the buckets that changed
  as cells on the internal partials topic, keyed so that every cell of one scope lands in the
  same partition. That partition's owner keeps the latest cell per (scope, source partition,
  level, bucket) and sums them into the scope's windows.

A cell carries the source offset it is complete up to (``as_of``). Cells are replacements, not
increments, so replaying the input after a crash republishes the same cells and changes nothing
downstream: the integration windows are exact without transactions.

Event time is the task's ``ended_at``. Each source partition keeps a watermark (the newest
event time seen); an event older than ``watermark - allowed lateness`` is late: it is counted in
``late_events`` (in the bucket of the watermark) and left out of the windows.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from sys import intern
from typing import Any

import orjson

from fleetpulse.contract import semantics
from fleetpulse.contract.clock import Clock
from fleetpulse.processors.figures.aggregate import Agg, figures_of
from fleetpulse.processors.ingest.cells import Partials, dims_of
from fleetpulse.processors.ingest.params import IngestParams
from fleetpulse.processors.ingest.reference import aggregate_events
from fleetpulse.processors.windows.buckets import (
    US,
    LevelBounds,
    ScopeWindows,
    WindowConfig,
    level_bounds,
)
from fleetpulse.processors.windows.checkpoint import SourceCheckpoint

# (scope_type, ((dimension, value), ...)) -- dimensions in a fixed order per scope type
ScopeKey = tuple[str, tuple[tuple[str, str], ...]]

LOCAL_SCOPES = ("agent", "agent_version", "agent_task_type", "agent_integration")
GLOBAL_SCOPES = ("integration", "model")


def scope_id(key: ScopeKey) -> str:
    """``agent=triage|integration=salesforce`` (``semantics.scope_id`` of the key's dims)."""
    return semantics.scope_id(key[1])


def partials_partition(key: ScopeKey, partitions: int) -> int:
    """Where every cell of a global scope goes: a stable hash of the scope, not of the cell."""
    return zlib.crc32(f"{key[0]}/{scope_id(key)}".encode()) % partitions


@dataclass(frozen=True)
class EngineConfig:
    """``long_every_us``: how often the snapshots of *long* horizons (those built of buckets
    longer than ``cadence_us``, the snapshot rounds' interval) go out. Such a window's edge
    moves once per bucket, so re-sending it every round mostly repeats it; its new events wait
    at most ``long_every_us`` instead. 0: every horizon at every round."""

    window: WindowConfig = field(default_factory=WindowConfig)
    partials_partitions: int = 6
    cadence_us: int = 5 * US
    long_every_us: int = 0


@dataclass
class SourceState:
    """One task-events partition: its watermark, position and windows."""

    ready: bool = True  # False while its history is being replayed
    offset: int = -1  # last offset applied
    watermark_us: int | None = None
    local: dict[ScopeKey, ScopeWindows] = field(default_factory=dict)
    glob: dict[ScopeKey, ScopeWindows] = field(default_factory=dict)
    dirty_local: set[ScopeKey] = field(default_factory=set)
    dirty_cells: set[tuple[ScopeKey, int, int]] = field(default_factory=set)
    # local scopes changed since their long horizons were last sent
    stale_local: set[ScopeKey] = field(default_factory=set)


@dataclass
class GlobalState:
    """One partials partition: the latest cell per source and the scopes' summed windows."""

    ready: bool = True
    cells: dict[ScopeKey, dict[tuple[int, int, int], tuple[int, Agg]]] = field(default_factory=dict)
    merged: dict[ScopeKey, ScopeWindows] = field(default_factory=dict)
    dirty: set[ScopeKey] = field(default_factory=set)
    stale: set[ScopeKey] = field(default_factory=set)


@dataclass
class Counters:
    events: int = 0
    late: int = 0
    duplicates: int = 0
    cells_applied: int = 0
    cells_stale: int = 0
    snapshots: int = 0


class Engine:
    """Windows for the partitions this worker owns. Not thread-safe: one caller at a time."""

    def __init__(self, clock: Clock, config: EngineConfig | None = None):
        self.clock = clock
        self.cfg = config or EngineConfig()
        self.wcfg = self.cfg.window
        self._n_levels = len(self.wcfg.levels)
        self._lateness_us = self.wcfg.allowed_lateness_s * US
        self.sources: dict[int, SourceState] = {}
        self.globals: dict[int, GlobalState] = {}
        self.counters = Counters()
        self._keys: dict[tuple[str, str, str], ScopeKey] = {}
        every = self.cfg.long_every_us
        self._short = tuple(
            hi
            for hi, h in enumerate(self.wcfg.horizons)
            if not every or h.bucket_s * US <= self.cfg.cadence_us
        )
        self._next_long = 0

    # -- ownership ------------------------------------------------------------------------

    def assign_source(self, partition: int, *, ready: bool = True) -> SourceState:
        state = self.sources[partition] = SourceState(ready=ready)
        return state

    def checkpoint_source(self, partition: int) -> SourceCheckpoint:
        """What restores partition ``partition``'s windows (``checkpoint.py``). It shares the
        engine's arrays: encode it before the engine moves on."""
        src = self.sources[partition]
        return SourceCheckpoint(
            partition=partition,
            offset=src.offset,
            watermark_us=src.watermark_us,
            local=src.local,
            glob=src.glob,
            dirty_local=set(src.dirty_local),
            dirty_cells=set(src.dirty_cells),
            stale_local=set(src.stale_local),
        )

    def restore_source(self, cp: SourceCheckpoint, *, ready: bool = False) -> SourceState:
        """Adopt a checkpoint's windows for its partition, with the scopes and cells that had
        changed since they were last published. Each scope is due to slide where it would
        have been had the worker not stopped: the first rounds after a restart visit the
        scopes that changed or reach a bucket edge, not all of them."""
        for w in cp.local.values():  # (the global contributions are read, never slid)
            if w.slid_us is not None:
                w.due_us = w.next_due(self.wcfg, w.slid_us)
        state = self.sources[cp.partition] = SourceState(
            ready=ready,
            offset=cp.offset,
            watermark_us=cp.watermark_us,
            local=cp.local,
            glob=cp.glob,
            dirty_local=set(cp.dirty_local),
            dirty_cells=set(cp.dirty_cells),
            stale_local=set(cp.local if cp.stale_local is None else cp.stale_local),
        )
        return state

    def revoke_source(self, partition: int) -> None:
        self.sources.pop(partition, None)

    def assign_partials(self, partition: int, *, ready: bool = True) -> GlobalState:
        state = self.globals[partition] = GlobalState(ready=ready)
        return state

    def revoke_partials(self, partition: int) -> None:
        self.globals.pop(partition, None)

    # -- task events ----------------------------------------------------------------------

    def ingest_batch(self, partition: int, items: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Apply decoded TaskEvents of one partition, in offset order (aggregated in Python:
        tests and tools; the processors feed ``apply_partials`` from the native pass)."""
        src = self.sources.get(partition)
        if src is None:
            src = self.assign_source(partition)
        given = list(items)
        fresh = [(o, ev) for o, ev in given if o > src.offset]
        self.counters.duplicates += len(given) - len(fresh)
        if not fresh:
            return
        partials = aggregate_events([(partition, ev) for _, ev in fresh], self.params())
        self.apply_partials(partials, {partition: fresh[-1][0]})

    def params(self, watermarks: dict[int, int] | None = None) -> IngestParams:
        """What phase 1 needs to know of this engine: now, the finest bucket, lateness and the
        watermark of every source partition (``watermarks``: a caller that keeps them itself,
        ahead of the windows, gives them)."""
        if watermarks is None:
            watermarks = {
                p: s.watermark_us for p, s in self.sources.items() if s.watermark_us is not None
            }
        return IngestParams(
            now_us=self.clock.time_us(),
            bucket_us=self.wcfg.levels[0] * US,
            lateness_us=self._lateness_us,
            watermarks=watermarks,
        )

    def apply_partials(self, partials: Partials, offsets: dict[int, int]) -> None:
        """Add one batch's cells to the buckets of every level, and move each source
        partition's watermark and offset (``offsets``: the last offset the batch held)."""
        bounds = level_bounds(self.wcfg, self.clock.time_us())
        for p, prog in partials.progress.items():
            src = self.sources.get(p)
            if src is not None:
                src.watermark_us = prog.watermark_us
            self.counters.events += prog.events
            self.counters.late += prog.late
        for p, offset in offsets.items():
            src = self.sources.get(p)
            if src is not None:
                src.offset = max(src.offset, offset)
        keys = self._keys
        for (scope, d1, d2, p, bucket), counters, zero, bins, counts in partials.cells:
            src = self.sources.get(p)
            if src is None:
                continue  # revoked meanwhile
            ck = (scope, d1, d2)
            key = keys.get(ck)
            if key is None:
                if len(keys) > 100_000:  # a cache, not state: bounded
                    keys.clear()
                # interned: the scopes of one agent share its strings
                key = keys[ck] = (intern(scope), dims_of(scope, intern(d1), intern(d2)))
            glob = scope in GLOBAL_SCOPES
            scopes = src.glob if glob else src.local
            windows = scopes.get(key)
            if windows is None:
                windows = scopes[key] = ScopeWindows(self._n_levels)
            cell = (counters, zero, bins, counts)
            for li, w, oldest_kept in bounds:
                start = bucket - bucket % w
                if start < oldest_kept:
                    continue
                windows.add_cell(self.wcfg, li, start, cell)
                if glob:
                    src.dirty_cells.add((key, li, start))
            if not glob:
                src.dirty_local.add(key)

    # -- repartitioning -------------------------------------------------------------------

    def take_partials(self) -> list[tuple[int, bytes, bytes]]:
        """The global cells changed since the last call: (partials partition, key, value).

        Sources still replaying their history publish nothing until they are ready.
        """
        out: list[tuple[int, bytes, bytes]] = []
        n = self.cfg.partials_partitions
        for p, src in self.sources.items():
            if not src.ready or not src.dirty_cells:
                continue
            for key, li, start in src.dirty_cells:
                windows = src.glob.get(key)
                agg = windows.bucket(li, start) if windows else None
                if agg is None:
                    continue  # evicted meanwhile
                k = orjson.dumps([key[0], key[1], p, self.wcfg.levels[li], start])
                v = orjson.dumps([src.offset, agg.to_list()])
                out.append((partials_partition(key, n), k, v))
            src.dirty_cells.clear()
        return out

    def apply_cell(self, partition: int, key: bytes, value: bytes) -> bool:
        """Apply one cell from the partials topic; False when it is stale or out of range.

        Raises:
            ValueError: the cell is malformed (the caller sends it to the DLQ).
        """
        g = self.globals.get(partition)
        if g is None:
            g = self.assign_partials(partition)
        try:
            scope_type, dims, src_p, width_s, start = orjson.loads(key)
            as_of, agg_list = orjson.loads(value)
            skey: ScopeKey = (str(scope_type), tuple((str(d), str(v)) for d, v in dims))
            li = self.wcfg.levels.index(int(width_s))
            agg = Agg.from_list(agg_list)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"malformed partial aggregate: {exc}") from exc
        if start < level_bounds(self.wcfg, self.clock.time_us())[li][2]:
            self.counters.cells_stale += 1
            return False
        cells = g.cells.setdefault(skey, {})
        ck = (int(src_p), li, int(start))
        old = cells.get(ck)
        if old is not None and old[0] > as_of:
            self.counters.cells_stale += 1
            return False
        merged = g.merged.get(skey)
        if merged is None:
            merged = g.merged[skey] = ScopeWindows(self._n_levels)
        merged.replace(self.wcfg, li, ck[2], old[1] if old is not None else None, agg)
        cells[ck] = (int(as_of), agg)
        g.dirty.add(skey)
        self.counters.cells_applied += 1
        return True

    # -- output ---------------------------------------------------------------------------

    def snapshots(self, *, force: bool = False) -> list[dict[str, Any]]:
        """MetricSnapshot records, one per horizon, for every scope that changed since the last
        call: new events, or a window that slid past data. Evicts expired buckets. Long
        horizons (``EngineConfig.long_every_us``) only when due, or ``force``."""
        return list(self.iter_snapshots(force=force))

    def iter_snapshots(self, *, force: bool = False) -> Iterator[dict[str, Any]]:
        """``snapshots()`` one record at a time, for a caller that encodes and drops each: the
        records of 90,000 scopes x 4 horizons take more memory than the windows themselves.
        Consume it to the end (eviction runs as it goes)."""
        now = self.clock.time_us()
        bounds = level_bounds(self.wcfg, now)
        long_due = force or now >= self._next_long
        if long_due:
            self._next_long = now + self.cfg.long_every_us
        for src in self.sources.values():
            if not src.ready:
                continue
            yield from self._emit(
                src.local, src.dirty_local, src.stale_local, now, bounds, long_due
            )
            src.dirty_local.clear()
            _evict_scopes(src.glob, bounds)
        for g in self.globals.values():
            if not g.ready:
                continue
            yield from self._emit(g.merged, g.dirty, g.stale, now, bounds, long_due)
            g.dirty.clear()
            _evict_cells(g, bounds)

    def _emit(
        self,
        scopes: dict[ScopeKey, ScopeWindows],
        dirty: set[ScopeKey],
        stale: set[ScopeKey],
        now: int,
        bounds: LevelBounds,
        long_due: bool,
    ) -> Iterator[dict[str, Any]]:
        """Each changed scope's short horizons; its long ones when they are due (then also those
        of the scopes that changed since they were last sent), else it is remembered.

        Only the scopes that changed, are due to slide (``ScopeWindows.next_due``) or owe their
        long horizons are visited: the others' windows would slide to the same figures. A
        visited scope drops its expired buckets, and is dropped when none is left."""
        short = self._short
        every = tuple(range(len(self.wcfg.horizons)))
        which: tuple[int, ...]
        gone = []
        for key, windows in scopes.items():
            changed = key in dirty
            if not changed and windows.due_us > now and not (long_due and key in stale):
                continue
            # slide first, always (``changed or slide()`` would skip it): True if a window
            # lost data
            changed = windows.slide(self.wcfg, now) or changed
            if long_due:
                which = every if changed or key in stale else ()
            elif changed:
                which = short
                if len(short) < len(every):
                    stale.add(key)
            else:
                which = ()
            if which:
                records = self._snapshot(key, windows, now, which)
                self.counters.snapshots += len(records)
                yield from records
            windows.evict(bounds)
            if windows.is_empty():
                gone.append(key)
            else:
                windows.due_us = windows.next_due(self.wcfg, now)
        for key in gone:
            del scopes[key]
        if long_due:
            stale.clear()

    def _snapshot(
        self, key: ScopeKey, windows: ScopeWindows, now: int, which: Iterable[int]
    ) -> list[dict[str, Any]]:
        sid = scope_id(key)
        dims = dict(key[1])
        out = []
        horizons = self.wcfg.horizons
        for hi in which:
            h = horizons[hi]
            start, end, (counters, zero, keys, counts) = windows.total_parts(self.wcfg, hi)
            rec: dict[str, Any] = {
                "scope_type": key[0],
                "scope_id": sid,
                "dimensions": dims,
                "horizon_s": h.seconds,
                "window_start": start,
                "window_end": end,
                "emitted_at": now,
            }
            rec.update(figures_of(counters, zero, keys, counts))
            out.append(rec)
        return out

    # -- introspection (Prometheus, tests) ------------------------------------------------

    def scope_count(self) -> int:
        return sum(len(s.local) for s in self.sources.values()) + sum(
            len(g.merged) for g in self.globals.values()
        )


def _evict_scopes(scopes: dict[ScopeKey, ScopeWindows], bounds: LevelBounds) -> None:
    """Drop expired buckets, and scopes left with none."""
    for key, windows in list(scopes.items()):
        windows.evict(bounds)
        if windows.is_empty():
            del scopes[key]


def _evict_cells(g: GlobalState, bounds: LevelBounds) -> None:
    """Drop cells whose bucket every window has left (the merged buckets went with them)."""
    for skey, cells in list(g.cells.items()):
        for ck in [ck for ck in cells if ck[2] < bounds[ck[1]][2]]:
            del cells[ck]
        if not cells:
            del g.cells[skey]
