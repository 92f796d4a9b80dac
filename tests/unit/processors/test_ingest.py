"""The native ingest pass (chDB) against the pure-Python reference: every figure of every scope
of a seeded batch agrees exactly, late events and bad records included."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.events.container import container_parts
from fleetpulse.processors.ingest import IngestParams, NativeIngest, reference_partials
from fleetpulse.processors.ingest.columns import BatchError, aggregate
from fleetpulse.processors.ingest.native import _probe_ids
from fleetpulse.processors.ingest.params import AlertSpec, BreakerSpec
from fleetpulse.processors.ingest.sql import decode_sql

US = 1_000_000
NOW = 1_800_000_000 * US
STATUSES = ["ok"] * 12 + ["error", "timeout", "denied", "short_circuited"]
OUTCOMES = ["success"] * 10 + ["failure", "timeout", "cancelled", "denied"]


@pytest.fixture(scope="module")
def native() -> Iterator[NativeIngest]:
    n = NativeIngest(native_min=0)  # every batch natively, however small
    yield n
    n.close()


def fleet_batch(n: int, seed: int) -> tuple[list[int], list[dict[str, Any]]]:
    """Events of 40 agents over 6 partitions, 10 minutes, with the awkward cases: zero and
    sub-bin latencies, no model, no calls, two calls to one integration, events behind their
    partition's watermark by more than the allowed lateness."""
    rng = random.Random(seed)
    parts, events = [], []
    t = NOW - 600 * US
    for i in range(n):
        t += rng.randrange(0, 400_000)
        a = rng.randrange(40)
        ended = t - (200 * US if i % 37 == 0 else rng.randrange(0, 3 * US))
        calls = []
        for j in range(rng.choice((0, 1, 2, 2, 3))):
            integration = f"int-{(a + j * rng.randrange(1, 4)) % 7}"
            calls.append(
                {
                    "call_id": f"c{i}-{j}",
                    "integration": integration if j < 2 or i % 3 else calls[0]["integration"],
                    "operation": rng.choice(("get", "refund")),
                    "access": rng.choice(("read", "write")),
                    "target": None,
                    "status": rng.choice(STATUSES),
                    "error_type": rng.choice((None, None, "HTTP500", "HTTP429")),
                    "started_at": ended - 50_000,
                    "latency_ms": 0.0 if i % 29 == 0 else rng.lognormvariate(4, 1.5),
                    "cost_micros": rng.randrange(0, 500),
                }
            )
        events.append(
            {
                "event_id": f"e{i}",
                "agent_id": f"agent-{a:02d}",
                "agent_version": f"v{a % 3}",
                "agent_role": rng.choice(("worker", "support")),
                "task_id": f"t{i}",
                "task_type": ("triage", "refund", "summarize")[(a + i) % 3],
                "trace_id": f"tr{i}",
                "parent_task_id": None,
                "upstream_agent_id": rng.choice((None, None, "agent-01", "agent-07")),
                "input_hash": "0" * 64,
                "outcome": rng.choice(OUTCOMES),
                "error_type": None,
                "started_at": ended - 900_000,
                "ended_at": ended,
                "duration_ms": 0.0 if i % 23 == 0 else rng.lognormvariate(6, 1.2),
                "model": None if i % 11 == 0 else ("gpt-4o", "claude-sonnet-4")[a % 2],
                "provider": None,
                "input_tokens": rng.randrange(1000),
                "output_tokens": rng.randrange(500),
                "cached_tokens": 0,
                "cost_micros": rng.randrange(5000),
                "price_table_version": "test",
                "tool_calls": calls,
                "attributes": {"approval:int-1.refund": "u:approved"} if i % 4 else {},
            }
        )
        parts.append(a % 6)
    return parts, events


def params(watermarks: dict[int, int] | None = None) -> IngestParams:
    return IngestParams(now_us=NOW, lateness_us=60 * US, watermarks=watermarks or {})


@pytest.mark.parametrize("seed", [1, 2])
def test_native_pass_equals_the_reference_on_every_figure_of_every_scope(native, seed):
    parts, events = fleet_batch(4000, seed)
    enc = AvroCodec().encoder("TaskEvent")
    values = [enc(e) for e in events]
    marks = {0: NOW - 300 * US, 3: NOW - 900 * US}  # one partition already far ahead

    got = native.run(parts, values, params(marks))
    want = reference_partials(parts, values, params(marks))

    assert got.canonical() == want.canonical()
    assert got.progress == want.progress
    assert sum(p.late for p in got.progress.values()) > 20  # the late path was exercised
    scopes = {key[0] for key in got.canonical()}
    assert scopes == {
        "agent",
        "agent_version",
        "agent_task_type",
        "model",
        "integration",
        "agent_integration",
    }
    assert got.rejected == want.rejected == []


def test_bad_records_are_rejected_with_the_reference_reasons_and_the_rest_counted(native):
    parts, events = fleet_batch(300, 3)
    codec = AvroCodec()
    enc = codec.encoder("TaskEvent")
    values = [enc(e) for e in events]
    values[5] = b"\x00garbage"
    values[9] = b""
    values[14] = b"\xc3\x01" + b"\x00" * 8 + b"body"  # an unknown writer fingerprint
    values[20] = enc({**events[20], "duration_ms": -5.0})
    values[33] = enc({**events[33], "agent_id": ""})
    values[40] = enc({**events[40], "ended_at": NOW + 3600 * US})
    values[41] = enc({**events[41], "cached_tokens": -1})
    call = {"call_id": "x", "integration": "int-1", "operation": "get", "access": "read",
            "target": None, "status": "ok", "error_type": None, "started_at": NOW - US,
            "latency_ms": 5.0, "cost_micros": 0}  # fmt: skip
    values[42] = enc({**events[42], "tool_calls": [{**call, "latency_ms": float("nan")}]})
    values[43] = enc({**events[43], "tool_calls": [call, {**call, "integration": ""}]})
    values[44] = enc({**events[44], "tool_calls": [{**call, "cost_micros": -3}, call]})

    got = native.run(parts, values, params())
    want = reference_partials(parts, values, params())

    assert [i for i, _ in got.rejected] == [5, 9, 14, 20, 33, 40, 41, 42, 43, 44]
    assert got.rejected == want.rejected
    assert "duration_ms is -5.0" in dict(got.rejected)[20]
    assert got.canonical() == want.canonical()
    assert sum(p.events for p in got.progress.values()) == 290


def test_junk_after_a_valid_body_is_rejected_not_misread(native):
    parts, events = fleet_batch(200, 4)
    enc = AvroCodec().encoder("TaskEvent")
    values = [enc(e) for e in events]
    values[50] += b"\x02\x04junk"

    got = native.run(parts, values, params())

    want = reference_partials(parts, values, params())
    assert [i for i, _ in got.rejected] == [50]
    assert "trailing bytes after the TaskEvent body" in got.rejected[0][1]
    assert got.rejected == want.rejected
    assert got.canonical() == want.canonical()


def test_breaker_counts_per_second_equal_the_reference(native):
    """Calls per (partition, agent, integration, status, error type, second) and tasks per
    (partition, agent, outcome, second), with slow counts at several thresholds, late events
    included and short-circuited calls left out."""
    parts, events = fleet_batch(3000, 5)
    enc = AvroCodec().encoder("TaskEvent")
    values = [enc(e) for e in events]
    values[7] = b"\x00garbage"  # a rejected record counts nowhere
    spec = BreakerSpec(call_slow_ms=(50.0, 1000.0), task_slow_ms=(400.0,))
    p = IngestParams(now_us=NOW, lateness_us=60 * US, breakers=spec)

    got = native.run(parts, values, p)
    want = reference_partials(parts, values, p)

    assert sorted(got.breaker_calls, key=repr) == sorted(want.breaker_calls, key=repr)
    assert sorted(got.breaker_tasks) == sorted(want.breaker_tasks)
    calls = sum(g[6] for g in got.breaker_calls)
    assert calls == sum(
        1
        for i, e in enumerate(events)
        if i != 7
        for c in e["tool_calls"]
        if c["status"] != "short_circuited"
    )
    assert {g[4] for g in got.breaker_calls} == {None, "HTTP500", "HTTP429"}
    assert 0 < sum(g[7][1] for g in got.breaker_calls) < sum(g[7][0] for g in got.breaker_calls)
    assert sum(g[4] for g in got.breaker_tasks) == 2999
    assert got.canonical() == want.canonical()  # the cells are unchanged by the breakers


@pytest.mark.parametrize("step_s", [1, 5])
def test_alert_groups_equal_the_reference(native, step_s):
    """The alert rules' groups: task scopes per second with failing integrations and upstream
    agents, calls per (agent, integration, role, operation, access, approval, second), runs
    and first-seen versions."""
    parts, events = fleet_batch(3000, 6)
    for i, e in enumerate(events):  # some agents run in bursts: runs are more than 1 task
        if i % 5 == 0:
            e["started_at"] -= 400 * US
    enc = AvroCodec().encoder("TaskEvent")
    values = [enc(e) for e in events]
    values[3] = enc({**events[3], "duration_ms": -1.0})  # rejected: counts nowhere
    p = IngestParams(
        now_us=NOW, lateness_us=60 * US, alerts=AlertSpec(run_gap_us=30 * US, step_s=step_s)
    )

    got = native.run(parts, values, p)
    want = reference_partials(parts, values, p)

    assert got.alerts is not None and want.alerts is not None
    assert got.alerts.canonical() == want.alerts.canonical()
    a = got.alerts
    assert sum(r[4] for r in a.tasks if r[0] == "agent") == 2999
    assert any(r[10] for r in a.tasks) and any(r[12] for r in a.tasks)
    assert {r[5] for r in a.calls} == {True, False}
    assert all(len(runs) >= 1 for _, runs in a.runs)
    assert {agent for agent, _ in a.versions} == {f"agent-{i:02d}" for i in range(40)}
    assert {r[3] % step_s for r in a.tasks} == {r[6] % step_s for r in a.calls} == {0}


@pytest.mark.parametrize("shape", ["one event", "no calls", "no model", "all late but one"])
def test_small_and_degenerate_batches_equal_the_reference(native, shape):
    """The columnar grouping on batches where some column or scope is empty."""
    parts, events = fleet_batch(60, 7)
    if shape == "one event":
        parts, events = parts[:1], events[:1]
    for e in events:
        if shape == "no calls":
            e["tool_calls"] = []
        if shape == "no model":
            e["model"] = None
    marks = {p: NOW for p in range(6)} if shape == "all late but one" else {}
    if marks:
        events[0]["ended_at"] = NOW
    enc = AvroCodec().encoder("TaskEvent")
    values = [enc(e) for e in events]
    p = IngestParams(
        now_us=NOW,
        lateness_us=60 * US,
        watermarks=marks,
        breakers=BreakerSpec(call_slow_ms=(50.0,), task_slow_ms=(400.0,)),
        alerts=AlertSpec(run_gap_us=30 * US),
    )

    got = native.run(parts, values, p)
    want = reference_partials(parts, values, p)

    assert got.canonical() == want.canonical()
    assert got.progress == want.progress
    assert sorted(got.breaker_calls, key=repr) == sorted(want.breaker_calls, key=repr)
    assert sorted(got.breaker_tasks) == sorted(want.breaker_tasks)
    assert got.alerts is not None and want.alerts is not None
    assert got.alerts.canonical() == want.alerts.canonical()


def test_a_batch_the_engine_returns_in_several_blocks_equals_the_reference(native):
    """Over 8,192 rows the engine returns several blocks (``sql.decode_sql``): rows stay in
    order, and strings first seen in a later block (here every agent of the second half, and
    a rejected record there) are grouped with the same codes as in one block."""
    parts, events = fleet_batch(4200, 8)
    more_parts, more = fleet_batch(4200, 9)
    for e in more:
        e["agent_id"] = e["agent_id"].replace("agent-", "late-")
    enc = AvroCodec().encoder("TaskEvent")
    values = [enc(e) for e in events + more]
    values[8_300] = b"\x00garbage"
    p = IngestParams(
        now_us=NOW,
        lateness_us=60 * US,
        breakers=BreakerSpec(call_slow_ms=(50.0,), task_slow_ms=(400.0,)),
        alerts=AlertSpec(run_gap_us=30 * US),
    )

    got = native.run(parts + more_parts, values, p)
    want = reference_partials(parts + more_parts, values, p)

    assert [i for i, _ in got.rejected] == [8_300]
    assert got.rejected == want.rejected
    assert got.canonical() == want.canonical()
    assert got.progress == want.progress
    assert sorted(got.breaker_calls, key=repr) == sorted(want.breaker_calls, key=repr)
    assert got.alerts is not None and want.alerts is not None
    assert got.alerts.canonical() == want.alerts.canonical()


def test_rows_the_engine_returned_out_of_order_are_caught(native):
    """Every row has the same header, so the order is checked by the event id at each block's
    edges: a table whose rows were swapped is refused, not counted against other partitions."""
    parts, events = fleet_batch(300, 10)
    enc = AvroCodec().encoder("TaskEvent")
    bodies = native._bodies(parts, [enc(e) for e in events], [])
    kept = list(range(len(bodies)))
    path = native._path
    with path.open("wb") as f:
        f.writelines(container_parts(native._schema_json, [*bodies, native._sentinel], b"s" * 16))
    table = native._open().query(decode_sql(str(path)), "ArrowTable")
    ids = _probe_ids(bodies, kept)

    aggregate(table, native._prefix, kept, parts, params(), ids=ids)  # in order: accepted
    swapped = table.take([1, 0, *range(2, table.num_rows)])
    with pytest.raises(BatchError, match="row 0 holds another record"):
        aggregate(swapped, native._prefix, kept, parts, params(), ids=ids)
