"""The ClickHouse sink: rows/s into chDB, freshness at a steady rate, report latency at 10M events.

    python bench/sink.py [--events 200000] [--rate 20000] [--seconds 30] [--report-events 10000000]
    python bench/sink.py --heavy-query [--rate 20000] [--seconds 30]

One run, on a fresh broker (or FLEETPULSE_BENCH_BOOTSTRAP), embedded chDB in a temp dir:

1. **Throughput.** `--events` TaskEvents with 2 tool calls each (3 rows per event: the task and
   its calls), pre-encoded and produced before timing. Side by side, over the same records:
   the bare confluent-kafka consumer (Kafka's limit here), consume + fastavro decode (what
   the sink's Python path pays, and what a sink decoding in Python cannot beat), chDB's
   insert of the same rows built as Arrow columns, materialized views included, and
   `SinkRunner` end to end (consume, Avro container, ClickHouse parses and inserts, commit).
2. **Freshness.** `fleetpulse sink run` in its own process (default batching: 50k rows or 1 s),
   while this process produces at `--rate` events/s for `--seconds`. Each event's produce time
   is its delivery report; a poller asks the sink's own query endpoint (the analysts' path)
   every 50 ms for the highest offset per partition in `task_events`. Freshness of an event =
   first poll that sees it - its produce time (the poll interval adds up to 50 ms).
   With ``--heavy-query``, only this, twice: alone, then while another analyst runs
   ``SELECT count() FROM numbers(1e12) WHERE cityHash64(number) % 7 = 0`` again and again, each
   to its time limit (``FLEETPULSE_QUERY_MAX_EXECUTION_S``).
3. **Reports at 10M events.** `--report-events` task events and twice as many tool calls over
   30 days, 500 agents, 30 integrations, generated inside ClickHouse (`INSERT ... SELECT FROM
   numbers()`, materialized views firing as in production). Each `fleetpulse report` query is
   timed (median of 5, in process, read-only path), against the same daily question answered
   from the raw rows (`task_events_v`, FINAL) as the baseline the rollups replace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from common import broker, write_result
from fleetpulse.contract.config import SinkSettings
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.kafka_config import consumer_config
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack import ensure_topics
from fleetpulse.sink import reports
from fleetpulse.sink.backend import ChdbBackend
from fleetpulse.sink.migrate import migrate
from fleetpulse.sink.query import ReadOnly, RemoteStore, endpoint
from fleetpulse.sink.rows import CALL_COLUMNS, TASK_COLUMNS, add_task_event, empty
from fleetpulse.sink.runner import SinkRunner
from processors import make_events

PARTITIONS = 6


def produce(bootstrap: str, topic: str, encoded: list[bytes], keys: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20})
    for data, key in zip(encoded, keys, strict=True):
        while True:
            try:
                p.produce(topic, data, key)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def consume_all(bootstrap: str, topic: str, n: int, decode: bool) -> float:
    codec = AvroCodec(logical_types=False)
    c = Consumer(
        {**consumer_config(bootstrap, f"bench-{uuid.uuid4().hex[:8]}"), "fetch.max.bytes": 64 << 20}
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = 0
    t0 = time.perf_counter()
    while got < n:
        for m in c.consume(10_000, timeout=0.2):
            if m.error() is None:
                got += 1
                if decode:
                    codec.decode(m.value() or b"", "TaskEvent")
    wall = time.perf_counter() - t0
    c.close()
    return wall


def throughput(bootstrap: str, n: int, work: Path) -> dict[str, Any]:
    topics = Topics(f"bsink{uuid.uuid4().hex[:6]}.")
    ensure_topics(bootstrap, topics)
    events = make_events(n, agents=1000, integrations=20, spread_s=600)
    codec = AvroCodec()
    produce(
        bootstrap,
        topics.task_events,
        [codec.encode("TaskEvent", e) for e in events],
        [e["agent_id"].encode() for e in events],
    )
    rows = n + sum(len(e["tool_calls"]) for e in events)
    out: dict[str, Any] = {"events": n, "rows": rows}
    out["kafka_s"] = consume_all(bootstrap, topics.task_events, n, decode=False)
    out["decode_s"] = consume_all(bootstrap, topics.task_events, n, decode=True)

    # ClickHouse's own limit: the same rows as Arrow columns, 50k events per insert
    raw = ChdbBackend(str(work / "raw"))
    migrate(raw)
    t0 = time.perf_counter()
    for i in range(0, n, 50_000):
        tasks, calls = empty(TASK_COLUMNS), empty(CALL_COLUMNS)
        for off, e in enumerate(events[i : i + 50_000], start=i):
            add_task_event(tasks, calls, e, topics.task_events, 0, off)
        raw.insert("task_events", tasks, dedup_token=f"t{i}")
        raw.insert("tool_calls", calls, dedup_token=f"c{i}")
    out["chdb_s"] = time.perf_counter() - t0
    raw.close()

    store = work / "sink"
    backend = ChdbBackend(str(store))
    migrate(backend)
    settings = SinkSettings(
        bootstrap_servers=bootstrap, topic_prefix=topics.prefix, data_dir=store, home=work
    )
    runner = SinkRunner(settings, backend)
    t0 = time.perf_counter()
    runner.run(max_events=n)
    out["sink_s"] = time.perf_counter() - t0
    out["sink_rows"] = runner.counters["rows"]
    got = backend.rows("SELECT count() AS n FROM fleetpulse.task_events")[0]["n"]
    backend.close()
    assert int(got) == n, f"{got} task rows for {n} events"
    return out


HEAVY = "SELECT count() FROM numbers(1e12) WHERE cityHash64(number) % 7 = 0"


def freshness(
    bootstrap: str, rate: int, seconds: float, work: Path, *, heavy: bool = False
) -> dict[str, Any]:
    """``heavy``: meanwhile another analyst runs `HEAVY` again and again, each to its time
    limit, through the same query endpoint."""
    topics = Topics(f"bfresh{uuid.uuid4().hex[:6]}.")
    ensure_topics(bootstrap, topics)
    n = int(rate * seconds)
    pool = make_events(min(n, 20_000), agents=1000, integrations=20, spread_s=60, seed=2)
    codec = AvroCodec()
    encoded = [codec.encode("TaskEvent", e) for e in pool]
    keys = [e["agent_id"].encode() for e in pool]
    store = work / "fresh"
    env = {
        **os.environ,
        "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
        "FLEETPULSE_TOPIC_PREFIX": topics.prefix,
        "FLEETPULSE_HOME": str(work / "home"),
        "FLEETPULSE_DATA_DIR": str(store),
    }
    sink = subprocess.Popen(
        [sys.executable, "-m", "fleetpulse.cli", "sink", "run"],
        env=env,
        stdout=(work / "sink.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while (info := endpoint(store)) is None:
            assert time.monotonic() < deadline and sink.poll() is None, "the sink did not start"
            time.sleep(0.1)
        remote = RemoteStore(info["url"], info["token"])
        time.sleep(3)  # the group's first assignment
        polls: list[tuple[float, dict[int, int]]] = []
        stop = threading.Event()

        def poll() -> None:
            sql = "SELECT _partition, max(_offset) FROM fleetpulse.task_events GROUP BY _partition"
            while not stop.is_set():
                t = time.time()
                rows = remote.table(sql).rows
                polls.append((t, {int(p): int(o) for p, o in rows}))
                time.sleep(max(0.0, 0.05 - (time.time() - t)))

        produced: list[tuple[int, int, float]] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                produced.append((msg.partition(), msg.offset(), time.time()))

        heavy_runs: list[float] = []

        def hog() -> None:
            other = RemoteStore(info["url"], info["token"])
            while not stop.is_set():
                t = time.monotonic()
                with contextlib.suppress(Exception):  # its time limit: what it is there for
                    other.table(HEAVY)
                heavy_runs.append(time.monotonic() - t)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        if heavy:
            threading.Thread(target=hog, daemon=True).start()
            time.sleep(1)
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        start = time.monotonic()
        for i in range(n):
            due = start + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            j = i % len(encoded)
            while True:
                try:
                    p.produce(topics.task_events, encoded[j], keys[j], on_delivery=delivered)
                    break
                except BufferError:
                    p.poll(0.01)
            if i % 500 == 0:
                p.poll(0)
        p.flush(30)
        achieved = n / (time.monotonic() - start)
        last = {}
        for part, off, _t in produced:
            last[part] = max(last.get(part, -1), off)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if polls and all(polls[-1][1].get(k, -1) >= v for k, v in last.items()):
                break
            time.sleep(0.1)
        stop.set()
        poller.join(5)
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(60)
    lags = []
    k = 0
    for part, off, t in sorted(produced, key=lambda x: x[2])[::20]:  # every 20th event
        while k < len(polls) and polls[k][0] < t:
            k += 1
        seen = next((pt for pt, marks in polls[k:] if marks.get(part, -1) >= off), None)
        if seen is not None:
            lags.append(seen - t)
    lags.sort()
    return {
        "events": n,
        "rate": achieved,
        "p50_s": statistics.median(lags),
        "p99_s": lags[int(len(lags) * 0.99) - 1],
        "max_s": lags[-1],
        "samples": len(lags),
        "seen": len(lags) / max(1, len(produced[::20])),
        "heavy_query": heavy,
        "heavy_query_runs_s": [round(x, 1) for x in heavy_runs],
    }


GEN_TASKS = """
INSERT INTO fleetpulse.task_events (event_id, agent_id, agent_version, agent_role, task_id,
  task_type, trace_id, input_hash, outcome, error_type, started_at, ended_at, duration_ms, model,
  provider, input_tokens, output_tokens, cost_micros, tool_call_count, _topic, _partition, _offset)
SELECT toString(n), concat('agent-', toString(n % 500)), concat('v', toString(n % 3 + 1)),
  'worker', concat('t', toString(n)), ['triage', 'invoice', 'reply'][n % 3 + 1],
  concat('tr', toString(n)), toString(cityHash64(n)),
  multiIf(n % 20 = 0, 'failure', n % 53 = 0, 'timeout', 'success'),
  multiIf(n % 20 = 0, 'RuntimeError', n % 53 = 0, 'TimeoutError', ''),
  fromUnixTimestamp64Micro(toInt64(({now} - 30 * 86400 + intDiv(n * 30 * 86400, {total}))
    * 1000000)) AS e,
  e, 100 + (cityHash64(n, 1) % 5000) / 3.0, 'gpt-x', 'openai', 200, 100, 1500 + n % 700, 2,
  'bench.task-events', n % 6, intDiv(n, 6)
FROM (SELECT number + {start} AS n FROM numbers({count}))
"""
GEN_CALLS = """
INSERT INTO fleetpulse.tool_calls (event_id, task_id, call_id, agent_id, agent_version,
  agent_role, integration, operation, access, target, status, error_type, started_at,
  latency_ms, cost_micros, _topic, _partition, _offset)
SELECT toString(n), concat('t', toString(n)), concat(toString(n), '-', toString(k)),
  concat('agent-', toString(n % 500)), concat('v', toString(n % 3 + 1)), 'worker',
  concat('int-', toString((n + k * 7) % 30)), ['get', 'update'][k + 1], ['read', 'write'][k + 1],
  concat('customer/', toString(cityHash64(n, k) % 100000)),
  multiIf((n + k) % 31 = 0, 'error', (n + k) % 97 = 0, 'timeout', 'ok'),
  if((n + k) % 31 = 0, 'HTTP500', ''),
  fromUnixTimestamp64Micro(toInt64(({now} - 30 * 86400 + intDiv(n * 30 * 86400, {total}))
    * 1000000)),
  5 + (cityHash64(n, k) % 900) / 3.0, 0, 'bench.task-events', n % 6, intDiv(n, 6)
FROM (SELECT number + {start} AS n, arrayJoin([0, 1]) AS k FROM numbers({count}))
"""


def report_latency(total: int, work: Path) -> dict[str, Any]:
    b = ChdbBackend(str(work / "reports"))
    migrate(b)
    now = int(time.time())
    t0 = time.perf_counter()
    step = 1_000_000
    for start in range(0, total, step):
        count = min(step, total - start)
        args = {"now": now, "total": total, "start": start, "count": count}
        b.command(GEN_TASKS.format(**args))
        b.command(GEN_CALLS.format(**args))
    gen_s = time.perf_counter() - t0
    pick = b.rows(
        "SELECT agent_id, target, toUnixTimestamp(started_at) AS s FROM fleetpulse.tool_calls "
        "WHERE agent_id = 'agent-7' AND started_at > now() - INTERVAL 3 DAY LIMIT 1"
    )[0]
    a = ReadOnly(b)
    db = "fleetpulse"
    end = datetime.now(UTC) - timedelta(days=2)
    day = end.date()
    seen = datetime.fromtimestamp(int(pick["s"]), UTC)
    cases = {
        "report daily": lambda: reports.daily(a, db, day),
        "report agent (7 days)": lambda: reports.agent(a, db, "agent-7", day - timedelta(6), day),
        "report integration (24 h)": lambda: reports.integration(
            a, db, "int-3", end - timedelta(hours=24), end
        ),
        "report audit (7 days)": lambda: reports.audit(
            a, db, pick["agent_id"], pick["target"], seen - timedelta(days=7), seen
        ),
        "baseline: daily from raw rows (task_events_v)": lambda: a.table(
            f"SELECT agent_id, count() AS tasks, countIf(outcome = 'success') AS ok, "
            f"countIf(outcome IN ('failure', 'timeout')) AS failed, sum(cost_micros) AS cost, "
            f"quantiles(0.5, 0.99)(duration_ms) AS q FROM {db}.task_events_v "
            f"WHERE toDate(ended_at) = toDate('{day.isoformat()}') GROUP BY agent_id"
        ),
    }
    timings = {}
    for name, fn in cases.items():
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        timings[name] = (statistics.median(runs), max(runs))
    b.close()
    return {"events": total, "gen_s": gen_s, "timings": timings}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--report-events", type=int, default=10_000_000)
    ap.add_argument(
        "--heavy-query",
        action="store_true",
        help="only freshness, without and then with an analyst's heavy query running",
    )
    args = ap.parse_args()
    if args.heavy_query:
        with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="fp-bench-sink-") as tmp:
            for heavy in (False, True):
                (Path(tmp) / str(heavy)).mkdir()
                fr = freshness(
                    bootstrap, args.rate, args.seconds, Path(tmp) / str(heavy), heavy=heavy
                )
                print(json.dumps(fr), flush=True)
        return
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="fp-bench-sink-") as tmp:
        work = Path(tmp)
        tp = throughput(bootstrap, args.events, work)
        print(json.dumps(tp), flush=True)
        fr = freshness(bootstrap, args.rate, args.seconds, work)
        print(json.dumps(fr), flush=True)
    with tempfile.TemporaryDirectory(prefix="fp-bench-sink-") as tmp:
        rp = report_latency(args.report_events, Path(tmp))
        print(json.dumps(rp), flush=True)
    write(tp, fr, rp)


def write(tp: dict[str, Any], fr: dict[str, Any], rp: dict[str, Any]) -> None:
    n, rows = tp["events"], tp["rows"]
    sink_rows_s = rows / tp["sink_s"]

    def line(label: str, secs: float) -> str:
        return (
            f"| {label} | {n / secs:,.0f} | {rows / secs:,.0f} | "
            f"{sink_rows_s / (rows / secs):.2f} |"
        )

    md = [
        "# Sink: Kafka to embedded ClickHouse (chDB)",
        "",
        f"## Throughput: {n:,} task events = {rows:,} rows (the task and its 2 tool calls)",
        "",
        "| path | events/s | rows/s | sink ÷ this path |",
        "|---|---:|---:|---:|",
        line("bare confluent-kafka consume (Kafka's limit)", tp["kafka_s"]),
        line("consume + fastavro decode (the Python path's floor)", tp["decode_s"]),
        line("chDB insert of the same rows as Arrow columns, MVs included", tp["chdb_s"]),
        line("**SinkRunner end to end**", tp["sink_s"]),
        "",
        f"## Freshness at {fr['rate']:,.0f} events/s for {fr['events']:,} events "
        "(produce to queryable through the sink's query endpoint)",
        "",
        "| p50 | p99 | max | samples |",
        "|---:|---:|---:|---:|",
        f"| {fr['p50_s']:.2f} s | {fr['p99_s']:.2f} s | {fr['max_s']:.2f} s | "
        f"{fr['samples']:,} ({fr['seen']:.0%} seen) |",
        "",
        f"## Reports on {rp['events']:,} task events and {2 * rp['events']:,} tool calls "
        f"(generated in {rp['gen_s']:.0f} s)",
        "",
        "| query | median | max of 5 |",
        "|---|---:|---:|",
        *(
            f"| {name} | {med * 1000:,.0f} ms | {mx * 1000:,.0f} ms |"
            for name, (med, mx) in rp["timings"].items()
        ),
    ]
    path = write_result("sink", "\n".join(md) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
