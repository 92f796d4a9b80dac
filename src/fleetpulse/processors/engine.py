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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fleetpulse.clock import Clock
from fleetpulse.processors.aggregate import Agg
from fleetpulse.processors.sketch import bin_key
from fleetpulse.processors.windows import US, LevelBounds, ScopeWindows, WindowConfig, level_bounds

# (scope_type, ((dimension, value), ...)) -- dimensions in a fixed order per scope type
ScopeKey = tuple[str, tuple[tuple[str, str], ...]]

LOCAL_SCOPES = ("agent", "agent_version", "agent_task_type", "agent_integration")
GLOBAL_SCOPES = ("integration", "model")
_SHORT = {
    "agent_id": "agent",
    "agent_version": "version",
    "task_type": "task_type",
    "integration": "integration",
    "model": "model",
}


def scope_id(key: ScopeKey) -> str:
    """``agent=triage|integration=salesforce``; ``|``, ``=`` and ``%`` in values are escaped."""
    return "|".join(f"{_SHORT[d]}={_escape(v)}" for d, v in key[1])


def _escape(v: str) -> str:
    return v.replace("%", "%25").replace("|", "%7C").replace("=", "%3D")


def partials_partition(key: ScopeKey, partitions: int) -> int:
    """Where every cell of a global scope goes: a stable hash of the scope, not of the cell."""
    return zlib.crc32(f"{key[0]}/{scope_id(key)}".encode()) % partitions


@dataclass(frozen=True)
class EngineConfig:
    window: WindowConfig = field(default_factory=WindowConfig)
    partials_partitions: int = 6


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


@dataclass
class GlobalState:
    """One partials partition: the latest cell per source and the scopes' summed windows."""

    ready: bool = True
    cells: dict[ScopeKey, dict[tuple[int, int, int], tuple[int, Agg]]] = field(default_factory=dict)
    merged: dict[ScopeKey, ScopeWindows] = field(default_factory=dict)
    dirty: set[ScopeKey] = field(default_factory=set)


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
        self._last_tick_us: int | None = None
        self._keys: dict[tuple[str, str, str, str | None], tuple[ScopeKey, ...]] = {}

    # -- ownership ------------------------------------------------------------------------

    def assign_source(self, partition: int, *, ready: bool = True) -> SourceState:
        state = self.sources[partition] = SourceState(ready=ready)
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
        """Apply decoded TaskEvents of one partition, in offset order."""
        src = self.sources.get(partition)
        if src is None:
            src = self.assign_source(partition)
        now = self.clock.time_us()
        bounds = level_bounds(self.wcfg, now)
        for offset, event in items:
            self._ingest(src, offset, event, now, bounds)

    def _task_keys(self, ev: dict[str, Any]) -> tuple[ScopeKey, ...]:
        agent, version, task_type, model = (
            ev["agent_id"],
            ev["agent_version"],
            ev["task_type"],
            ev["model"],
        )
        ck = (agent, version, task_type, model)
        keys = self._keys.get(ck)
        if keys is None:
            a = ("agent_id", agent)
            keys = (
                ("agent", (a,)),
                ("agent_version", (a, ("agent_version", version))),
                ("agent_task_type", (a, ("task_type", task_type))),
            )
            if model:
                keys = (*keys, ("model", (("model", model),)))
            if len(self._keys) > 100_000:  # a cache, not state: bounded
                self._keys.clear()
            self._keys[ck] = keys
        return keys

    def _ingest(
        self, src: SourceState, offset: int, ev: dict[str, Any], now: int, bounds: LevelBounds
    ) -> None:
        if offset <= src.offset:
            self.counters.duplicates += 1
            return
        src.offset = offset
        self.counters.events += 1
        ts = ev["ended_at"]
        wm = src.watermark_us
        task_keys = self._task_keys(ev)
        calls = ev["tool_calls"]
        # per integration: [calls, errors, denied, short-circuited, cost, latency bins]
        per_int: dict[str, list[Any]] = {}
        errors = denied = short = 0
        for call in calls:
            summary = per_int.get(call["integration"])
            if summary is None:
                summary = per_int[call["integration"]] = [0, 0, 0, 0, 0, []]
            summary[0] += 1
            summary[4] += call["cost_micros"]
            st = call["status"]
            if st == "ok":
                summary[5].append(bin_key(call["latency_ms"]))
            elif st == "error" or st == "timeout":
                summary[5].append(bin_key(call["latency_ms"]))
                summary[1] += 1
                errors += 1
            elif st == "denied":
                summary[2] += 1
                denied += 1
            else:
                summary[3] += 1
                short += 1
        agent_dim = ("agent_id", ev["agent_id"])
        if wm is not None and ts < wm - self._lateness_us:
            self.counters.late += 1
            for key in task_keys:
                self._late(src, key, wm, bounds)
            for name in per_int:
                self._late(
                    src, ("agent_integration", (agent_dim, ("integration", name))), wm, bounds
                )
                self._late(src, ("integration", (("integration", name),)), wm, bounds)
            return
        if wm is None or ts > wm:
            src.watermark_us = ts

        outcome = ev["outcome"]
        lat = bin_key(ev["duration_ms"])
        n_calls = len(calls)
        cost, tin, tout = ev["cost_micros"], ev["input_tokens"], ev["output_tokens"]
        local, glob, dirty_cells = src.local, src.glob, src.dirty_cells
        for key in task_keys:
            if key[0] in GLOBAL_SCOPES:
                windows = glob.get(key)
                if windows is None:
                    windows = glob[key] = ScopeWindows(self._n_levels)
                for li, start, agg in windows.buckets_at(bounds, ts):
                    _add_task(agg, outcome, lat, cost, tin, tout, n_calls, errors, denied, short)
                    dirty_cells.add((key, li, start))
            else:
                windows = local.get(key)
                if windows is None:
                    windows = local[key] = ScopeWindows(self._n_levels)
                for _, _, agg in windows.buckets_at(bounds, ts):
                    _add_task(agg, outcome, lat, cost, tin, tout, n_calls, errors, denied, short)
                src.dirty_local.add(key)
        for name, summary in per_int.items():
            akey: ScopeKey = ("agent_integration", (agent_dim, ("integration", name)))
            windows = local.get(akey)
            if windows is None:
                windows = local[akey] = ScopeWindows(self._n_levels)
            for _, _, agg in windows.buckets_at(bounds, ts):
                _add_calls(agg, outcome, summary)
            src.dirty_local.add(akey)
            gkey: ScopeKey = ("integration", (("integration", name),))
            windows = glob.get(gkey)
            if windows is None:
                windows = glob[gkey] = ScopeWindows(self._n_levels)
            for li, start, agg in windows.buckets_at(bounds, ts):
                _add_calls(agg, outcome, summary)
                dirty_cells.add((gkey, li, start))

    def _late(self, src: SourceState, key: ScopeKey, wm: int, bounds: LevelBounds) -> None:
        """Count a late event in the buckets of the watermark (where it was seen late)."""
        if key[0] in GLOBAL_SCOPES:
            windows = src.glob.setdefault(key, ScopeWindows(self._n_levels))
            for li, start, agg in windows.buckets_at(bounds, wm):
                agg.late_events += 1
                src.dirty_cells.add((key, li, start))
        else:
            windows = src.local.setdefault(key, ScopeWindows(self._n_levels))
            for _, _, agg in windows.buckets_at(bounds, wm):
                agg.late_events += 1
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
                agg = windows.levels[li].get(start) if windows else None
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
        bucket = merged.levels[li].get(ck[2])
        if bucket is None:
            bucket = merged.levels[li][ck[2]] = Agg()
        if old is not None:
            bucket.subtract(old[1])
        bucket.merge(agg)
        cells[ck] = (int(as_of), agg)
        g.dirty.add(skey)
        self.counters.cells_applied += 1
        return True

    # -- output ---------------------------------------------------------------------------

    def snapshots(self) -> list[dict[str, Any]]:
        """MetricSnapshot records, one per horizon, for every scope that changed since the last
        call: new events, or a window that slid past data. Evicts expired buckets."""
        now = self.clock.time_us()
        before = self._last_tick_us if self._last_tick_us is not None else now
        bounds = level_bounds(self.wcfg, now)
        out: list[dict[str, Any]] = []
        for src in self.sources.values():
            if not src.ready:
                continue
            self._emit(src.local, src.dirty_local, before, now, out)
            src.dirty_local.clear()
            _evict_scopes(src.local, bounds)
            _evict_scopes(src.glob, bounds)
        for g in self.globals.values():
            if not g.ready:
                continue
            self._emit(g.merged, g.dirty, before, now, out)
            g.dirty.clear()
            _evict_scopes(g.merged, bounds)
            _evict_cells(g, bounds)
        self._last_tick_us = now
        self.counters.snapshots += len(out)
        return out

    def _emit(
        self,
        scopes: dict[ScopeKey, ScopeWindows],
        dirty: set[ScopeKey],
        before: int,
        now: int,
        out: list[dict[str, Any]],
    ) -> None:
        for key, windows in scopes.items():
            if key in dirty or windows.slid_past_data(self.wcfg, before, now):
                out.extend(self._snapshot(key, windows, now))

    def _snapshot(self, key: ScopeKey, windows: ScopeWindows, now: int) -> list[dict[str, Any]]:
        sid = scope_id(key)
        dims = dict(key[1])
        out = []
        for h in self.wcfg.horizons:
            start, end, total = windows.window(self.wcfg, h, now)
            rec: dict[str, Any] = {
                "scope_type": key[0],
                "scope_id": sid,
                "dimensions": dims,
                "horizon_s": h.seconds,
                "window_start": start,
                "window_end": end,
                "emitted_at": now,
            }
            rec.update(total.figures())
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


def _add_task(
    agg: Agg,
    outcome: str,
    lat: int | None,
    cost: int,
    tin: int,
    tout: int,
    calls: int,
    errors: int,
    denied: int,
    short: int,
) -> None:
    agg.task_count += 1
    setattr(agg, outcome, getattr(agg, outcome) + 1)
    agg.latency.add_key(lat)
    agg.cost_micros += cost
    agg.input_tokens += tin
    agg.output_tokens += tout
    if calls:
        agg.tool_calls += calls
        agg.tool_errors += errors
        agg.tool_denied += denied
        agg.tool_short_circuited += short


def _add_calls(agg: Agg, outcome: str, summary: list[Any]) -> None:
    """One task's calls to one integration: [calls, errors, denied, short, cost, bins]."""
    agg.task_count += 1
    setattr(agg, outcome, getattr(agg, outcome) + 1)
    agg.tool_calls += summary[0]
    agg.tool_errors += summary[1]
    agg.tool_denied += summary[2]
    agg.tool_short_circuited += summary[3]
    agg.cost_micros += summary[4]
    add = agg.latency.add_key
    for key in summary[5]:
        add(key)
