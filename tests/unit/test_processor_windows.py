"""Window math, roll-over, lateness, sketch accuracy and partial-aggregate merge (pure code)."""

from __future__ import annotations

import random

import pytest
from ddsketch import DDSketch

from fleetpulse.contract.clock import ManualClock
from fleetpulse.processors.figures.aggregate import Agg
from fleetpulse.processors.figures.sketch import LatencySketch
from fleetpulse.processors.windows.buckets import (
    US,
    Horizon,
    ScopeWindows,
    WindowConfig,
    bucket_key,
    level_bounds,
)
from fleetpulse.processors.windows.checkpoint import decode_source, encode_source
from fleetpulse.processors.windows.engine import Engine, EngineConfig, scope_id

T0 = 1_800_000_000 * US  # a whole multiple of every bucket width


def event(ts_us, *, agent="a1", outcome="success", ms=100.0, calls=(), model="gpt-4o", **kw):
    ev = {
        "agent_id": agent,
        "agent_version": kw.get("version", "1"),
        "task_type": kw.get("task_type", "triage"),
        "model": model,
        "outcome": outcome,
        "duration_ms": ms,
        "ended_at": ts_us,
        "cost_micros": kw.get("cost", 10),
        "input_tokens": 5,
        "output_tokens": 7,
        "tool_calls": [
            {"integration": i, "status": st, "latency_ms": lat, "cost_micros": 1}
            for i, st, lat in calls
        ],
    }
    return ev


@pytest.mark.parametrize(
    ("horizon", "now_offset_s", "start_offset_s", "end_offset_s"),
    [
        (Horizon(60, 5), 0, -55, 5),
        (Horizon(60, 5), 4.999, -55, 5),
        (Horizon(60, 5), 5, -50, 10),
        (Horizon(300, 5), 7, -290, 10),
        (Horizon(3600, 60), 61, -3480, 120),
        (Horizon(86400, 900), 899, -85500, 900),
    ],
)
def test_window_bounds(horizon, now_offset_s, start_offset_s, end_offset_s):
    start, end = horizon.bounds(T0 + int(now_offset_s * US))
    assert (start - T0) / US == start_offset_s
    assert (end - T0) / US == end_offset_s


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Horizon(60, 7), "not a whole number"),
        (lambda: Horizon(0, 5), "must be positive"),
        (lambda: WindowConfig(horizons=()), "at least one"),
        (lambda: WindowConfig(allowed_lateness_s=-1), "allowed_lateness_s"),
    ],
)
def test_invalid_window_config(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_memory_is_bounded_by_levels():
    cfg = WindowConfig()
    assert cfg.levels == (5, 60, 900)
    assert cfg.max_buckets_per_scope() == 60 + 60 + 96
    w = ScopeWindows(len(cfg.levels))
    now = T0
    for i in range(30 * 3600 // 5):  # 30 hours, one event every 5 s
        now = T0 + i * 5 * US
        bounds = level_bounds(cfg, now)
        for li, width, oldest_kept in bounds:
            start = now - now % width
            if start >= oldest_kept:
                w.add_cell(cfg, li, start, ((1,) + (0,) * 13, 0, [], []))
        w.evict(bounds)
    assert w.bucket_count() <= cfg.max_buckets_per_scope()
    # the 24h window holds exactly the events of its buckets
    start, end, total = w.window(cfg, Horizon(86400, 900), now)
    expected = sum(1 for i in range(30 * 3600 // 5) if start <= T0 + i * 5 * US < end)
    assert total.task_count == expected


@pytest.mark.parametrize(
    ("event_offsets_s", "now_s", "horizon_s", "expected"),
    [
        ([0, 1, 2], 3, 60, 3),
        ([0, 30, 59], 59, 60, 3),
        ([0, 30, 59], 60, 60, 2),  # roll-over: the window is now [5, 65), bucket [0, 5) left
        ([0, 30, 59], 65, 60, 2),
        ([0, 30, 59], 125, 60, 0),
        ([0, 30, 59], 125, 300, 3),
        ([0, 299], 299, 300, 2),
        ([0, 299], 300, 300, 1),
        ([0, 3599], 3599, 3600, 2),
        ([0, 3599], 3600, 3600, 1),  # 1-minute buckets roll over too
    ],
)
def test_bucket_roll_over(event_offsets_s, now_s, horizon_s, expected):
    clock = ManualClock(T0)
    eng = Engine(clock, EngineConfig())
    for i, off in enumerate(event_offsets_s):
        clock.advance(s=(T0 + off * US - clock.time_us()) / US)
        eng.ingest_batch(0, [(i, event(T0 + off * US))])
    clock.advance(s=(T0 + now_s * US - clock.time_us()) / US)
    snaps = {
        (s["scope_type"], s["horizon_s"]): s for s in eng.snapshots() if s["scope_type"] == "agent"
    }
    if expected == 0 and ("agent", horizon_s) not in snaps:
        return  # scope evicted or not emitted: nothing in its windows
    assert snaps[("agent", horizon_s)]["task_count"] == expected


@pytest.mark.parametrize(
    ("offsets_s", "late_expected", "counted"),
    [
        ([100, 0], 1, 1),  # 100 s ahead, then 100 s back: beyond 60 s lateness -> late
        ([100, 50], 0, 2),  # 50 s back: within lateness, counted in its own bucket
        ([100, 40, 39], 1, 2),  # watermark stays at 100; 39 is 61 s back -> late
        ([0, 60, 0], 0, 3),  # exactly at the lateness edge is on time
    ],
)
def test_lateness_against_watermark(offsets_s, late_expected, counted):
    clock = ManualClock(T0 + 200 * US)
    cfg = EngineConfig(window=WindowConfig(allowed_lateness_s=60))
    eng = Engine(clock, cfg)
    eng.ingest_batch(0, [(i, event(T0 + off * US)) for i, off in enumerate(offsets_s)])
    snap = next(s for s in eng.snapshots() if s["scope_type"] == "agent" and s["horizon_s"] == 300)
    assert snap["late_events"] == late_expected
    assert snap["task_count"] == counted
    assert eng.counters.late == late_expected


def test_replayed_offsets_are_not_counted_twice():
    eng = Engine(ManualClock(T0), EngineConfig())
    eng.ingest_batch(0, [(0, event(T0)), (1, event(T0))])
    eng.ingest_batch(0, [(1, event(T0)), (2, event(T0))])
    assert eng.counters.events == 3 and eng.counters.duplicates == 1


def exact_quantile(values, q):
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "dist",
    [
        lambda r: r.lognormvariate(5, 1.5),
        lambda r: r.uniform(0.5, 60_000),
        lambda r: r.expovariate(1 / 250),
    ],
)
def test_sketch_within_one_percent_of_exact(seed, dist):
    r = random.Random(seed)
    values = [dist(r) for _ in range(20_000)]
    s = LatencySketch()
    dd = DDSketch(0.01)
    for v in values:
        s.add(v)
        dd.add(v)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = exact_quantile(values, q)
        assert abs(s.quantile(q) - exact) <= 0.01 * exact
        # same mapping, same rank rule: identical to the library's own sketch
        assert s.quantile(q) == pytest.approx(dd.get_quantile_value(q), rel=1e-12)
    assert s.quantiles((0.5, 0.9, 0.95, 0.99)) == [s.quantile(q) for q in (0.5, 0.9, 0.95, 0.99)]


def test_sketch_zero_and_empty():
    s = LatencySketch()
    assert s.quantile(0.5) == 0.0
    for v in (0.0, 0.0, 5.0):
        s.add(v)
    assert s.quantile(0.5) == 0.0
    assert s.quantile(1.0) == pytest.approx(5.0, rel=0.01)
    qs = (0.0, 0.5, 0.66, 0.67, 0.9, 1.0)
    for extra in ((), (7.0, 7.0), (1e-9, 3.0, 90_000.0)):
        for v in extra:
            s.add(v)
        assert s.quantiles(qs) == [s.quantile(q) for q in qs]


def test_merge_then_subtract_is_exact():
    r = random.Random(7)
    a, b = Agg(), Agg()
    for agg in (a, b):
        for _ in range(500):
            agg.task_count += 1
            agg.cost_micros += r.randrange(1000)
            agg.latency.add(r.uniform(1, 1000))
    total = a.copy()
    total.merge(b)
    assert total.task_count == 1000
    total.subtract(b)
    assert total == a
    assert Agg.from_list(total.to_list()) == a


def test_partial_aggregates_merge_to_one_worker_numbers():
    """Two source partitions publish cells; the owner's sums equal one engine seeing all."""
    clock = ManualClock(T0 + 30 * US)
    r = random.Random(3)
    events = []
    for i in range(400):
        calls = [
            (
                r.choice(["crm", "mail", "db"]),
                r.choice(["ok", "ok", "error", "denied"]),
                r.uniform(1, 500),
            )
            for _ in range(2)
        ]
        events.append(event(T0 + r.randrange(30) * US, agent=f"a{i % 7}", calls=calls))
    whole = Engine(clock)
    whole.ingest_batch(0, list(enumerate(events)))
    whole_cells = whole.take_partials()
    split = Engine(clock)
    split.ingest_batch(0, [(i, e) for i, e in enumerate(events) if i % 2 == 0])
    split.ingest_batch(1, [(i, e) for i, e in enumerate(events) if i % 2 == 1])
    split_cells = split.take_partials()
    owner_whole, owner_split = Engine(clock), Engine(clock)
    for part, k, v in whole_cells:
        owner_whole.apply_cell(part, k, v)
    for part, k, v in split_cells:
        owner_split.apply_cell(part, k, v)
    # replaying the same cells (a restarted source) changes nothing
    for part, k, v in split_cells:
        owner_split.apply_cell(part, k, v)
    a = {(s["scope_id"], s["horizon_s"]): s for s in owner_whole.snapshots()}
    b = {(s["scope_id"], s["horizon_s"]): s for s in owner_split.snapshots()}
    assert a.keys() == b.keys()
    assert {k[0] for k in a} == {
        "integration=crm",
        "integration=mail",
        "integration=db",
        "model=gpt-4o",
    }
    for k in a:
        assert {f: v for f, v in a[k].items()} == b[k]
    crm = a[("integration=crm", 300)]
    calls = [c for e in events for c in e["tool_calls"] if c["integration"] == "crm"]
    assert crm["tool_calls"] == len(calls)
    assert crm["tool_errors"] == sum(c["status"] == "error" for c in calls)
    assert crm["tool_denied"] == sum(c["status"] == "denied" for c in calls)


def test_stale_cell_is_ignored():
    clock = ManualClock(T0 + 10 * US)
    src = Engine(clock)
    src.ingest_batch(0, [(0, event(T0, calls=[("crm", "ok", 5.0)]))])
    first = [c for c in src.take_partials() if b"crm" in c[1]]
    src.ingest_batch(0, [(1, event(T0, calls=[("crm", "ok", 5.0)]))])
    second = [c for c in src.take_partials() if b"crm" in c[1]]
    owner = Engine(clock)
    for part, k, v in second + first:  # newer first, then the older cells arrive
        owner.apply_cell(part, k, v)
    snap = next(s for s in owner.snapshots() if s["scope_id"] == "integration=crm")
    assert snap["tool_calls"] == 2


def test_scope_ids_escape_separators():
    assert scope_id(("agent", (("agent_id", "a|b=c"),))) == "agent=a%7Cb%3Dc"


def test_window_slide_emits_until_empty_then_forgets_scope():
    clock = ManualClock(T0)
    eng = Engine(clock, EngineConfig(window=WindowConfig(horizons=(Horizon(10, 5),))))
    eng.ingest_batch(0, [(0, event(T0))])
    assert [s["task_count"] for s in eng.snapshots() if s["scope_type"] == "agent"] == [1]
    assert [s for s in eng.snapshots() if s["scope_type"] == "agent"] == []  # unchanged
    clock.advance(s=10)
    assert [s["task_count"] for s in eng.snapshots() if s["scope_type"] == "agent"] == [0]
    assert eng.scope_count() == 0


def test_inlined_bin_key_matches_the_library_mapping():
    from fleetpulse.processors.figures.sketch import MAPPING, bin_key

    r = random.Random(5)
    for v in [r.lognormvariate(3, 3) for _ in range(10_000)] + [1e-9, 1.0, 2.0, 1e6]:
        assert bin_key(v) == MAPPING.key(v)
    assert bin_key(0.0) is None


def test_bucket_widths_must_nest():
    with pytest.raises(ValueError, match="multiple of the finest"):
        WindowConfig(horizons=(Horizon(60, 4), Horizon(60, 6)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_running_totals_equal_the_window_summed_afresh(seed):
    """Cells land inside, before and after each window while the clock moves in uneven steps
    (and jumps a day once); every horizon's running total stays exactly the sum of its
    buckets."""
    rng = random.Random(seed)
    cfg = WindowConfig()
    w = ScopeWindows(len(cfg.levels))
    now = T0
    for step in range(300):
        now += rng.choice([0, 1, 2, 5, 7, 61]) * US + (86400 * US if step == 150 else 0)
        for _ in range(rng.randrange(4)):
            ts = now - rng.randrange(-30, 4000) * US
            for li, width, oldest in level_bounds(cfg, now):
                start = ts - ts % width
                if start >= oldest:
                    n = rng.randrange(1, 4)
                    cell = (
                        (n, n, 0, 0, 0, 0, 7 * n, 0, 0, 0, 0, 0, 0, 0),
                        0,
                        [rng.randrange(50)],
                        [n],
                    )
                    w.add_cell(cfg, li, start, cell)
        if rng.random() < 0.3:
            w.slide(cfg, now)
            w.evict(level_bounds(cfg, now))
            assert w.totals is not None
            for hi, h in enumerate(cfg.horizons):
                _, _, fresh = w.window(cfg, h, now)
                assert w.totals[hi] == fresh, (step, h)


def test_rows_widen_to_64_bits_when_a_figure_outgrows_32():
    """A busy scope's cost or a bin's count passes 2**31: the scope's columns widen, the sums
    stay exact, and subtracting gives back the small figures."""
    cfg = WindowConfig()
    w = ScopeWindows(len(cfg.levels))
    small = ((1,) + (0,) * 5 + (7,) + (0,) * 7, 0, [10], [1])
    big = ((1,) + (0,) * 5 + (3_000_000_000,) + (0,) * 7, 0, [10, 20], [2**31, 5])
    w.add_cell(cfg, 0, T0, small)
    w.slide(cfg, T0)
    assert w.cells.typecode == "i" and w.bin_counts.typecode == "i"
    w.add_cell(cfg, 0, T0, big)
    assert w.cells.typecode == "q" and w.bin_counts.typecode == "q"
    [total] = [t for hi, t in enumerate(w.totals or []) if cfg.horizons[hi].seconds == 60]
    assert total.task_count == 2 and total.cost_micros == 3_000_000_007
    assert total.latency.bins == {10: 2**31 + 1, 20: 5}
    agg = w.bucket(0, T0)
    assert agg is not None
    from fleetpulse.processors.windows.table import parts_of

    w.add(w.find(bucket_key(0, T0)), parts_of(agg), -1)  # empty the bucket again
    assert w.bucket(0, T0) == Agg()


def test_streamed_snapshots_are_the_list_one_at_a_time():
    """``iter_snapshots`` yields exactly what ``snapshots`` returns, and evicts alike."""
    clock = ManualClock(T0 + 30 * US)
    engines = [Engine(clock), Engine(clock)]
    r = random.Random(4)
    events = [
        event(T0 + r.randrange(30) * US, agent=f"a{i % 5}", calls=[("crm", "ok", 9.0)])
        for i in range(200)
    ]
    for eng in engines:
        eng.ingest_batch(0, list(enumerate(events)))
    listed, streamed = engines[0].snapshots(), list(engines[1].iter_snapshots())
    assert listed and listed == streamed
    assert engines[0].counters.snapshots == engines[1].counters.snapshots == len(listed)
    clock.advance(s=3 * 86400)
    assert engines[0].snapshots() == list(engines[1].iter_snapshots())
    assert engines[0].scope_count() == engines[1].scope_count() == 0


def test_long_horizons_go_out_at_their_own_cadence_with_what_came_meanwhile():
    """With snapshot rounds every 5 s and long horizons every 60 s, a round sends the 1 min and
    5 min windows of the scopes that changed; the 1 h and 24 h windows go out at the first
    round and then once a minute, for every scope that changed since, new events included."""
    clock = ManualClock(T0 + 10 * US)
    eng = Engine(clock, EngineConfig(cadence_us=5 * US, long_every_us=60 * US))

    def agent_round(force: bool = False) -> dict[int, int]:
        snaps = eng.snapshots(force=force)
        return {s["horizon_s"]: s["task_count"] for s in snaps if s["scope_type"] == "agent"}

    eng.ingest_batch(0, [(0, event(T0 + 9 * US))])
    assert agent_round() == {60: 1, 300: 1, 3600: 1, 86400: 1}  # the first round: all
    clock.advance(s=5)
    eng.ingest_batch(0, [(1, event(T0 + 14 * US))])
    assert agent_round() == {60: 2, 300: 2}  # the long horizons wait
    for _ in range(10):  # the 1 min window slides (its figures change), the long ones wait
        clock.advance(s=5)
        assert set(agent_round()) <= {60, 300}
    clock.advance(s=5)  # 60 s after the first round
    assert agent_round() == {60: 0, 300: 2, 3600: 2, 86400: 2}  # with the second event
    clock.advance(s=5)
    eng.ingest_batch(0, [(2, event(T0 + 74 * US))])
    assert agent_round(force=True) == {60: 1, 300: 3, 3600: 3, 86400: 3}  # shutdown: all


def test_rounds_visit_only_due_scopes_and_send_what_sliding_every_scope_sends():
    """A round slides only the scopes that changed or reach a bucket edge of a level they
    hold; the snapshots are exactly those of rounds that slide every scope (the oracle: every
    scope made due before each round), over an hour of sparse, irregular traffic with late,
    early and out-of-window events, one agent after another falling silent: local scopes of
    two source partitions, the integration scopes merged from their cells, and the windows
    restored from a checkpoint halfway."""
    rng = random.Random(11)

    def engines() -> tuple[ManualClock, Engine]:
        clock = ManualClock(T0 + 3 * US)
        eng = Engine(clock, EngineConfig(cadence_us=5 * US, long_every_us=60 * US))
        for p in range(eng.cfg.partials_partitions):
            eng.assign_partials(p)
        return clock, eng

    (c1, lazy), (c2, eager) = engines(), engines()
    offsets, visited = [0, 0], []
    for r in range(900):  # rounds 1 to 7 s apart, about an hour
        step = rng.choice((1, 2, 3, 7))
        for clock in (c1, c2):
            clock.advance(s=step)
        now = c1.time_us()
        batches: list[list] = [[], []]
        for _ in range(rng.choice((0, 0, 0, 1, 3))):
            n = rng.randrange(40 if r < 400 else 8)  # most agents fall silent
            ts = now - rng.choice((0, 1, 4, 30, 200)) * US + rng.randrange(US)
            integration = rng.choice(("crm", "mail"))
            calls = [(integration, rng.choice(("ok", "error")), float(rng.randrange(1, 900)))]
            ev = event(ts, agent=f"a{n}", ms=float(rng.randrange(1, 5000)), calls=calls)
            batches[n % 2].append((offsets[n % 2], ev))
            offsets[n % 2] += 1
        for eng in (lazy, eager):
            for p, batch in enumerate(batches):
                if batch:
                    eng.ingest_batch(p, batch)
            for part, key, value in eng.take_partials():
                eng.apply_cell(part, key, value)
        if r == 450:  # a restart: the windows come back from their checkpoints
            for p in list(lazy.sources):
                data = encode_source(lazy.checkpoint_source(p))
                lazy.restore_source(decode_source(data), ready=True)
        for scopes in [s.local for s in eager.sources.values()] + [
            g.merged for g in eager.globals.values()
        ]:
            for w in scopes.values():
                w.due_us = 0
        visited.append(
            sum(1 for src in lazy.sources.values() for w in src.local.values() if w.due_us <= now)
        )
        a = sorted(map(repr, lazy.snapshots(force=r % 97 == 0)))
        b = sorted(map(repr, eager.snapshots(force=r % 97 == 0)))
        assert a == b, f"round {r}"
    assert lazy.scope_count() == eager.scope_count()
    assert sum(len(g.merged) for g in lazy.globals.values()) == 3  # crm, mail, the model
    assert min(visited[-300:]) < lazy.scope_count()  # quiet scopes were left alone
