"""Window checkpoints (processors/windows/checkpoint.py): a partition's windows restored from a
checkpoint, then fed the events after it, equal the windows fed every event from the start."""

from __future__ import annotations

import random
from typing import Any

import pytest

from fleetpulse.contract.clock import ManualClock
from fleetpulse.processors.windows.buckets import US
from fleetpulse.processors.windows.checkpoint import decode_source, encode_source
from fleetpulse.processors.windows.engine import Engine, EngineConfig

T0 = 1_800_000_000 * US


def events(rng: random.Random, n: int, now: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        calls = [
            {
                "integration": f"int-{rng.randrange(5)}",
                "status": rng.choice(("ok", "ok", "error", "denied")),
                "latency_ms": rng.lognormvariate(4, 1),
                "cost_micros": rng.randrange(10),
            }
            for _ in range(rng.randrange(3))
        ]
        out.append(
            {
                "agent_id": f"agent-{rng.randrange(20)}",
                "agent_version": rng.choice(("1", "2")),
                "task_type": rng.choice(("triage", "refund")),
                "model": rng.choice(("gpt-4o", None)),
                "outcome": rng.choice(("success", "success", "failure", "timeout")),
                "duration_ms": 0.0 if i % 31 == 0 else rng.lognormvariate(6, 1),
                # mostly recent, a few far behind the watermark (late)
                "ended_at": now - rng.randrange(0, 3000 if i % 17 else 400) * US // 10 * 10,
                "cost_micros": rng.randrange(2**20) * (2**12 if i == 7 else 1),  # widens a row
                "input_tokens": 5,
                "output_tokens": 7,
                "tool_calls": calls,
            }
        )
    return out


def feed(engine: Engine, clock: ManualClock, batches: list[tuple[int, list[Any]]]) -> None:
    for at, evs in batches:
        clock.advance(ms=(at - clock.time_us()) / 1000)
        for p in (0, 1):
            mine = [(o, ev) for o, ev in evs if hash(ev["agent_id"]) % 2 == p]
            if mine:
                engine.ingest_batch(p, mine)


def snapshots(engine: Engine) -> list[dict[str, Any]]:
    return sorted(
        (s for s in engine.snapshots() if s["scope_type"] not in ("integration", "model")),
        key=lambda s: (s["scope_type"], s["scope_id"], s["horizon_s"]),
    )


@pytest.mark.parametrize(("seed", "published"), [(1, True), (2, True), (3, False)])
def test_restored_windows_continue_exactly_like_the_original(seed: int, published: bool) -> None:
    """``published``: a snapshot round ran just before the checkpoint (else the checkpoint
    carries the scopes and cells changed since the last one)."""
    rng = random.Random(seed)
    batches = []
    now, offset = T0, 0
    for _ in range(40):
        now += rng.choice((1, 3, 30, 400)) * US
        evs = events(rng, rng.randrange(1, 40), now)
        batches.append((now, [(offset + i, ev) for i, ev in enumerate(evs)]))
        offset += len(evs)
    half = len(batches) // 2

    clock_a = ManualClock(T0)
    original = Engine(clock_a, EngineConfig())
    feed(original, clock_a, batches[:half])
    if published:
        original.snapshots()  # slides and evicts, as the worker's rounds do

    clock_b = ManualClock(clock_a.time_us())
    restored = Engine(clock_b, EngineConfig())
    for p in (0, 1):
        data = encode_source(original.checkpoint_source(p))
        cp = decode_source(data)
        assert encode_source(cp) == data
        restored.restore_source(cp, ready=True)
        assert restored.sources[p].offset == original.sources[p].offset
        assert restored.sources[p].watermark_us == original.sources[p].watermark_us

    feed(original, clock_a, batches[half:])
    feed(restored, clock_b, batches[half:])
    assert snapshots(restored) == snapshots(original)
    assert sorted(restored.take_partials()) == sorted(original.take_partials())


def test_a_damaged_checkpoint_is_refused_with_a_reason() -> None:
    clock = ManualClock(T0)
    engine = Engine(clock, EngineConfig())
    engine.ingest_batch(0, enumerate(events(random.Random(3), 50, T0)))
    data = encode_source(engine.checkpoint_source(0))
    with pytest.raises(ValueError, match="checkpoint"):
        decode_source(data[:-3])
    with pytest.raises(ValueError, match="checkpoint"):
        decode_source(data + b"x")


def test_the_scopes_whose_long_horizons_wait_survive_a_restore() -> None:
    """With long horizons on a cadence of their own, the scopes that changed since they were
    last sent are in the checkpoint: a restored worker sends those, not every scope's."""
    clock = ManualClock(T0)
    config = EngineConfig(cadence_us=5 * US, long_every_us=60 * US)
    engine = Engine(clock, config)
    engine.ingest_batch(0, [(0, events(random.Random(4), 1, T0)[0])])
    engine.snapshots()  # the first round sends every horizon
    clock.advance(s=5)
    later = {**events(random.Random(5), 1, T0 + 5 * US)[0], "agent_id": "agent-late"}
    engine.ingest_batch(0, [(1, later)])
    engine.snapshots()  # a short round: agent-late's long horizons wait
    cp = decode_source(encode_source(engine.checkpoint_source(0)))

    assert {dict(k[1])["agent_id"] for k in cp.stale_local or ()} == {"agent-late"}
    restored = Engine(clock, config)
    restored.restore_source(cp, ready=True)
    long = [s for s in restored.snapshots() if s["horizon_s"] == 86400]
    assert {s["dimensions"]["agent_id"] for s in long} == {"agent-late"}
