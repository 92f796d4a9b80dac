"""Processor throughput against its ceilings, and window memory, measured side by side in one run.

    python bench/processors.py [--events N] [--rss-events M] [--json FILE] [--rss-only]

Input: N TaskEvents with 2 tool calls each, from 1,000 agents over 20 integrations, pre-encoded
and produced to a fresh task-events topic (6 partitions). Then, on the same bytes:

1. fastavro decode alone (our codec, timestamps as ints): Python's decoding ceiling.
2. the embedded engine (chDB) decoding the same bytes, framed as one Avro container, into an
   Arrow table with every column and no aggregation: the native decoding ceiling.
3. phase 1 alone (``ingest_eps``): the native ingest pass (container, decode, grouping of
   every scope with sketch bins, the breakers' counts and the alert rules' groups of the
   default policy, all back in Python), in batches of 50,000. Then ``scaling_2w``: phase 1 in
   two worker processes side by side (each half of the batches) over one.
4. phase 2 alone (``windows_cells_per_s``): the window engine adding those cells to its
   buckets at every level.
5. the reference pass: the same aggregation per event in Python (what the engine did before).
6. a bare confluent-kafka consumer reading the topic: the consuming ceiling.
7. the plain runtime: ProcessorCore (native ingest + windows) in a confluent-kafka loop.
8. the faust runtime: `fleetpulse processors run --runtime faust`, one worker, timed from its
   first record to the last through its Prometheus counter.

Each runtime reads all 6 partitions with one worker, so events/s is "per worker". Then peak RSS
(VmHWM) of a child process holding the windows of 10,000 agents x 50 integrations (events
spread over the last 5 minutes, or over 24 hours so every level fills) after one round of
snapshots, taken as one list or streamed. ``--rss-only`` runs only this part (no broker) and
writes ``bench/results/processors-memory.md``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    Measured,
    broker,
    machine,
    measure,
    process_cpu_s,
    write_json,
    write_result,
)
from fleetpulse.contract.clock import SystemClock
from fleetpulse.contract.config import ProcessorSettings, load_settings
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.events.container import container
from fleetpulse.contract.kafka_config import consumer_config
from fleetpulse.contract.policy import load_policy
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack import ensure_topics, free_port
from fleetpulse.processors.alerts.evaluator import alert_spec
from fleetpulse.processors.breakers.counts import BreakerCounts
from fleetpulse.processors.ingest import IngestParams, NativeIngest, Partials
from fleetpulse.processors.ingest.sql import DECODE_SETTINGS
from fleetpulse.processors.loop import quiet_gc
from fleetpulse.processors.metrics.plain import PlainRunner
from fleetpulse.processors.metrics.worker import ProcessorCore
from fleetpulse.processors.windows.engine import Engine

STATUSES = ["ok"] * 17 + ["error", "timeout", "denied"]
OUTCOMES = ["success"] * 17 + ["failure", "timeout", "cancelled"]


def make_events(
    n: int,
    agents: int,
    integrations: int,
    *,
    spread_s: float = 60,
    seed: int = 1,
    per_agent: int = 1,
) -> list[dict[str, Any]]:
    """``per_agent``: how many integration pairs each agent draws its 2 calls from."""
    rng = random.Random(seed)
    now = int(time.time() * 1e6)
    out = []
    # events arrive roughly in time order, as from a live fleet
    times = sorted(now - int(rng.random() * spread_s * 1e6) for _ in range(n))
    for i in range(n):
        a = rng.randrange(agents)
        ended = times[i]
        calls = []
        for j in range(2):
            k = (a + j * 7 + 13 * rng.randrange(per_agent)) % integrations
            calls.append(
                {
                    "call_id": f"c{i}-{j}",
                    "integration": f"int-{k:02d}",
                    "operation": "call",
                    "access": "read",
                    "target": f"rec/{rng.randrange(1000)}",
                    "status": rng.choice(STATUSES),
                    "error_type": None,
                    "started_at": ended - 50_000,
                    "latency_ms": rng.lognormvariate(4, 1),
                    "cost_micros": 0,
                }
            )
        out.append(
            {
                "event_id": f"e{i}",
                "agent_id": f"agent-{a:05d}",
                "agent_version": f"v{a % 3}",
                "agent_role": "worker",
                "task_id": f"t{i}",
                "task_type": ("triage", "refund", "summarize")[a % 3],
                "trace_id": f"tr{i}",
                "parent_task_id": None,
                "upstream_agent_id": None,
                "input_hash": "0" * 64,
                "outcome": rng.choice(OUTCOMES),
                "error_type": None,
                "started_at": ended - 900_000,
                "ended_at": ended,
                "duration_ms": rng.lognormvariate(6, 1),
                "model": ("gpt-4o", "claude-sonnet-4")[a % 2],
                "provider": None,
                "input_tokens": 500,
                "output_tokens": 100,
                "cached_tokens": 0,
                "cost_micros": 1234,
                "price_table_version": "bench",
                "tool_calls": calls,
                "attributes": {},
            }
        )
    return out


INGEST_BATCH = 50_000


def native_decode(
    ingest: NativeIngest, parts: list[int], encoded: list[bytes], n: int, out: list[Measured]
) -> None:
    """The engine decoding the same records, as one container per batch, into Arrow tables,
    read as the ingest pass reads them (``DECODE_SETTINGS``: one thread, blocks of 8,192
    rows, which decode every column ~1.3x faster than the engine's defaults here)."""
    from chdb import session

    files = []
    for i in range(0, n, INGEST_BATCH):
        bodies = ingest._bodies(parts[i : i + INGEST_BATCH], encoded[i : i + INGEST_BATCH], [])
        path = Path(tempfile.mkdtemp()) / "batch.avro"
        path.write_bytes(container(ingest._schema_json, [b for b in bodies if b], b"\x00" * 16))
        files.append(path)
    s = ingest._open()
    assert isinstance(s, session.Session)
    s.query(f"SELECT * FROM file('{files[0]}', 'Avro') {DECODE_SETTINGS}", "ArrowTable")  # warm
    with measure("native decode alone (chDB: container -> Arrow table, every column)", n, out):
        for path in files:
            s.query(f"SELECT * FROM file('{path}', 'Avro') {DECODE_SETTINGS}", "ArrowTable")
    for path in files:
        path.unlink()


def worker_params() -> IngestParams:
    """What a metric worker asks of each pass with the default policy: the metric scopes, the
    breakers' counts and the alert rules' groups."""
    policy = load_policy(None)
    return IngestParams(
        now_us=int(time.time() * 1e6),
        breakers=BreakerCounts(policy.breakers, 6).spec,
        alerts=alert_spec(policy.alerts),
    )


def ingest_child(path: str, part: int, of: int, start_at: float) -> None:
    """Run in a child process: phase 1 over its share (every ``of``-th batch from ``part``) of
    the pickled (partitions, records), starting at ``start_at``; print the start and end."""
    with open(path, "rb") as f:
        parts, encoded = pickle.load(f)
    ingest = NativeIngest()
    params = worker_params()
    ingest.run(parts[:5000], encoded[:5000], params)  # the session open and warm, as in a worker
    quiet_gc()
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.time()
    for i in range(part * SCALING_BATCH, len(encoded), of * SCALING_BATCH):
        ingest.run(parts[i : i + SCALING_BATCH], encoded[i : i + SCALING_BATCH], params)
    print(f"{t0} {time.time()}", flush=True)
    ingest.close()


SCALING_BATCH = 10_000


def scaling(parts: list[int], encoded: list[bytes]) -> tuple[float, float]:
    """Phase-1 events/s of one worker process, then of two side by side (each its share of
    the batches), timed from the first start to the last end."""
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
        pickle.dump((parts, encoded), f)
    try:
        rates = []
        for workers in (1, 2):
            start_at = time.time() + 20  # after every child has imported and warmed up
            cmd = [sys.executable, __file__, "--ingest-child", f.name, "--start-at", str(start_at)]
            procs = [
                subprocess.Popen(
                    [*cmd, "--share", f"{i}/{workers}"], stdout=subprocess.PIPE, text=True
                )
                for i in range(workers)
            ]
            spans = [tuple(map(float, proc.communicate(timeout=600)[0].split())) for proc in procs]
            rates.append(len(encoded) / (max(e for _, e in spans) - min(s for s, _ in spans)))
        return rates[0], rates[1]
    finally:
        os.unlink(f.name)


def bare_consume(bootstrap: str, topic: str, n: int) -> None:
    c = Consumer(
        {**consumer_config(bootstrap, f"bench-{uuid.uuid4().hex[:8]}"), "fetch.max.bytes": 64 << 20}
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(6)])
    got = 0
    while got < n:
        got += sum(1 for m in c.consume(5000, timeout=1.0) if m.error() is None)
    c.close()


def settings_for(bootstrap: str, topics: Topics, home: Path, group: str) -> ProcessorSettings:
    return load_settings(
        ProcessorSettings,
        bootstrap_servers=bootstrap,
        topic_prefix=topics.prefix,
        home=home,
        processors_group=group,
        processors_web_port=0,
    )


def faust_run(bootstrap: str, topics: Topics, home: Path, n: int) -> tuple[float, float]:
    """(seconds from first to last record, worker CPU seconds) of a faust worker process."""
    port = free_port()
    env = {
        **os.environ,
        "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
        "FLEETPULSE_TOPIC_PREFIX": topics.prefix,
        "FLEETPULSE_HOME": str(home),
        "FLEETPULSE_PROCESSORS_GROUP": f"bench-faust-{uuid.uuid4().hex[:6]}",
        "FLEETPULSE_PROCESSORS_WEB_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetpulse.cli", "processors", "run", "--runtime", "faust"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        t_first = None
        deadline = time.monotonic() + 30 + n / 500
        while time.monotonic() < deadline:
            count = _records_ok(port)
            if count and t_first is None:
                t_first, c_first = time.perf_counter(), process_cpu_s(proc.pid)
                n_first = count
            if count >= n:
                assert t_first is not None
                return (time.perf_counter() - t_first) * n / (n - n_first), (
                    process_cpu_s(proc.pid) - c_first
                ) * n / (n - n_first)
            time.sleep(0.05)
        raise RuntimeError("the faust worker did not finish in time")
    finally:
        proc.terminate()
        proc.wait(30)


def _records_ok(port: int) -> int:
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return 0
    for line in page.decode().splitlines():
        if line.startswith('fleetpulse_processor_records_total{result="ok"}'):
            return int(float(line.split()[-1]))
    return 0


def rss_child(events: int, spread_s: float, stream: bool = False, batch: int = 20_000) -> None:
    """Run in a child process: fill the windows, take one round of snapshots, print peak RSS
    in MB and what the windows hold.

    Events are keyed by agent as the SDK keys them, so each agent lives in one of 6 partitions.
    ``stream``: take the snapshots one at a time (``Engine.iter_snapshots``) instead of as one
    list, so the peak is the windows' and not the 360,000 records of a first round.
    ``batch``: events generated (as Python dicts) and aggregated at a time; their transient
    memory is part of the peak.
    """
    base = _vm_hwm_kb()
    engine = Engine(SystemClock())
    offsets = [0] * 6
    for start in range(0, events, batch):
        evs = make_events(
            min(batch, events - start), 10_000, 50, spread_s=spread_s, seed=start, per_agent=3
        )
        by_partition: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        for e in evs:
            p = int(e["agent_id"][6:]) % 6
            by_partition.setdefault(p, []).append((offsets[p], e))
            offsets[p] += 1
        for p, items in by_partition.items():
            engine.ingest_batch(p, items)
        engine.take_partials()
    if stream:
        for _ in engine.iter_snapshots():
            pass
    else:
        engine.snapshots()
    peak = _vm_hwm_kb()
    buckets = sum(
        w.bucket_count()
        for s in engine.sources.values()
        for w in (*s.local.values(), *s.glob.values())
    )
    print(f"{peak / 1024:.0f} {base / 1024:.0f} {engine.scope_count()} {buckets}")


def _vm_hwm_kb() -> int:
    """Peak RSS of this process image. Not ru_maxrss: Linux carries that across fork+exec, so
    a child would report its (large) parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss(events: int, spread_s: float, stream: bool = False, batch: int = 20_000) -> tuple[int, ...]:
    cmd = [sys.executable, __file__, "--rss-child", str(events), "--rss-spread", str(spread_s)]
    out = subprocess.run(
        [*cmd, "--rss-batch", str(batch), *(["--rss-stream"] if stream else [])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return tuple(int(x) for x in out)


Memory = dict[str, tuple[int, ...]]


def window_memory(events: int) -> Memory:
    """Peak RSS of the window children: (peak MB, baseline MB, scopes, buckets) each."""
    return {
        "live_5min": rss(events, 300),
        "day_24h": rss(events, 86_000),
        "live_5min_streamed": rss(events, 300, stream=True),
        "live_5min_streamed_5k": rss(events, 300, stream=True, batch=5_000),
    }


def memory_figures(m: Memory) -> dict[str, int]:
    return {
        "live_5min": m["live_5min"][0],
        "day_24h": m["day_24h"][0],
        "live_5min_streamed": m["live_5min_streamed"][0],
        "live_5min_streamed_5k_batches": m["live_5min_streamed_5k"][0],
        "baseline": m["day_24h"][1],
        "windows_over_baseline": m["live_5min_streamed"][0] - m["live_5min_streamed"][1],
        "windows_over_baseline_5k_batches": m["live_5min_streamed_5k"][0]
        - m["live_5min_streamed_5k"][1],
    }


def memory_lines(events: int, m: Memory) -> list[str]:
    rows = [
        ("last 5 minutes", m["live_5min"]),
        ("last 24 hours", m["day_24h"]),
        ("last 5 minutes, snapshots streamed", m["live_5min_streamed"]),
        ("the same, events generated 5,000 at a time", m["live_5min_streamed_5k"]),
    ]
    out = [
        f"Window memory, {events:,} events from 10,000 agents x 50 integrations "
        "(each agent calls 6 of them), generated 20,000 at a time as Python dicts and "
        "aggregated by the Python reference (their transient memory counts in the peak), then "
        "one round of snapshots (a list of every record, as `Engine.snapshots()` returns, or "
        "one record at a time, `iter_snapshots()`); target <= 300 MB beyond the baseline:",
        "",
        "| events spread over | scopes | buckets | peak RSS | of which interpreter+imports "
        "| beyond baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, (peak, base, scopes, buckets) in rows:
        out.append(
            f"| {label} | {scopes:,} | {buckets:,} | {peak} MB | {base} MB | {peak - base} MB |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rss-events", type=int, default=200_000)
    ap.add_argument("--json", help="also write the figures as JSON to this file")
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--rss-spread", type=float, default=300, help=argparse.SUPPRESS)
    ap.add_argument("--rss-stream", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rss-batch", type=int, default=20_000, help=argparse.SUPPRESS)
    ap.add_argument(
        "--rss-only", action="store_true", help="measure only the window memory (no broker)"
    )
    ap.add_argument("--ingest-child", help=argparse.SUPPRESS)
    ap.add_argument("--share", default="0/1", help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ingest_child:
        part, of = (int(x) for x in args.share.split("/"))
        ingest_child(args.ingest_child, part, of, args.start_at)
        return
    if args.rss_child:
        rss_child(args.rss_child, args.rss_spread, args.rss_stream, args.rss_batch)
        return
    if args.rss_only:
        memory = window_memory(args.rss_events)
        text = "\n".join(memory_lines(args.rss_events, memory))
        print(text)
        write_result("processors-memory", text)
        write_json(args.json, {"rss_mb": memory_figures(memory)})
        return
    n = args.events
    events = make_events(n, 1000, 20)
    codec = AvroCodec()
    encoded = [codec.encode("TaskEvent", e) for e in events]
    quiet_gc()  # as every stage process runs (processors/loop.py): what exists now is frozen
    results: list[Measured] = []
    with broker() as bootstrap, tempfile.TemporaryDirectory() as home:
        topics = Topics(f"bench{uuid.uuid4().hex[:6]}.")
        ensure_topics(bootstrap, topics)
        p = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 20,
                "queue.buffering.max.messages": 1_000_000,
                "compression.type": "lz4",
            }
        )
        for e, data in zip(events, encoded, strict=True):
            p.produce(topics.task_events, data, e["agent_id"].encode())
            p.poll(0)
        p.flush(60)
        del p

        plain_codec = AvroCodec(logical_types=False)
        with measure("fastavro decode alone", n, results):
            decoded = [plain_codec.decode(b, "TaskEvent") for b in encoded]
        parts = [int(e["agent_id"][6:]) % 6 for e in events]
        ingest = NativeIngest()
        native_decode(ingest, parts, encoded, n, results)
        batches: list[Partials] = []
        params = worker_params()
        with measure("phase 1: native ingest pass (decode + group every scope)", n, results):
            for i in range(0, n, INGEST_BATCH):
                batches.append(
                    ingest.run(parts[i : i + INGEST_BATCH], encoded[i : i + INGEST_BATCH], params)
                )
        ingest.close()
        one, two = scaling(parts, encoded)
        cells = sum(len(b.cells) for b in batches)
        engine = Engine(SystemClock())
        for p in range(6):
            engine.assign_source(p)
        with measure("phase 2: windows adding the cells (cells/s)", cells, results):
            for b in batches:
                engine.apply_partials(b, {})
            engine.take_partials()
            engine.snapshots()
        del engine, batches
        engine = Engine(SystemClock())
        with measure("reference pass (the same aggregation per event in Python)", n, results):
            for i in range(0, n, 5000):
                engine.ingest_batch(i % 6, enumerate(decoded[i : i + 5000], i))
            engine.take_partials()
            engine.snapshots()
        del engine, decoded
        with measure("bare confluent-kafka consumer", n, results):
            bare_consume(bootstrap, topics.task_events, n)

        core = ProcessorCore(
            settings_for(bootstrap, topics, Path(home), f"bench-plain-{uuid.uuid4().hex[:6]}")
        )
        runner = PlainRunner(core, core.settings)
        with measure("plain runtime (confluent-kafka loop + core)", n, results):
            runner.run(max_records=n)

        wall, cpu = faust_run(bootstrap, topics, Path(home), n)
        results.append(Measured("faust runtime (`fleetpulse processors run`)", n, wall, cpu))

    memory = window_memory(args.rss_events)

    by = {m.label.split(" (")[0].split(" `")[0].split(":")[0]: m for m in results}
    faust, plain = by["faust runtime"], by["plain runtime"]
    decode, bare = by["fastavro decode alone"], by["bare confluent-kafka consumer"]
    native, ingest_m, windows = by["native decode alone"], by["phase 1"], by["phase 2"]
    figures = {
        "events": n,
        "ingest_eps": round(ingest_m.rate),
        "native_decode_eps": round(native.rate),
        "fastavro_decode_eps": round(decode.rate),
        "windows_cells_per_s": round(windows.rate),
        "cells": windows.count,
        "reference_pass_eps": round(by["reference pass"].rate),
        "bare_consumer_eps": round(bare.rate),
        "plain_runtime_eps": round(plain.rate),
        "faust_runtime_eps": round(faust.rate),
        "ingest_over_native_decode": round(ingest_m.rate / native.rate, 3),
        "ingest_1w_eps": round(one),
        "ingest_2w_eps": round(two),
        "scaling_2w": round(two / one, 2),
        "rss_mb": memory_figures(memory),
    }
    lines = [
        f"{n:,} TaskEvents, 2 tool calls each, 1,000 agents, 20 integrations, 6 partitions, "
        f"one worker. {machine()}.",
        "",
        "| phase | events/s | per CPU-s |",
        "|---|---:|---:|",
    ]
    for m in results:
        lines.append(f"| {m.label} | {m.rate:,.0f} | {m.per_cpu_s:,.0f} |")
    ok = ingest_m.rate >= 150_000 and ingest_m.rate >= 0.3 * native.rate
    lines += [
        "",
        f"- phase 1 (native ingest): {ingest_m.rate:,.0f} events/s, "
        f"{ingest_m.rate / native.rate:.2f} of the engine's own decoding into Arrow "
        f"({native.rate:,.0f}/s) and {ingest_m.rate / decode.rate:.1f}x fastavro decoding alone. "
        f"Target >= 150,000/s and >= 0.3 of native decoding: {'met' if ok else 'NOT met'}.",
        f"- phase 1 in two worker processes side by side: {two:,.0f} events/s against "
        f"{one:,.0f}/s in one (batches of {SCALING_BATCH:,}): scaling_2w {two / one:.2f} "
        f"(target >= 1.6: {'met' if two / one >= 1.6 else 'NOT met'}).",
        f"- phase 2 (windows): {windows.rate:,.0f} cells/s "
        f"({windows.count:,} cells for {n:,} events).",
        f"- plain runtime: {plain.rate:,.0f} events/s per worker, "
        f"{plain.rate / bare.rate:.1%} of the bare consumer; faust runtime: {faust.rate:,.0f}/s "
        f"(faust's per-record machinery: {plain.rate / faust.rate:.1f}x).",
        "",
        *memory_lines(args.rss_events, memory),
    ]
    text = "\n".join(lines)
    print(text)
    write_result("processors", text)
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
