"""The end-to-end benchmark: the whole pipeline on this machine, against Kafka's own tools.

    python bench/e2e.py [--rates 1000,2000,...] [--step-s 20] [--json FILE]

``FLEETPULSE_BENCH_LOGS=DIR`` keeps every process's log (``FLEETPULSE_LOG_LEVEL=DEBUG`` times
the metric worker's passes and snapshot rounds).

One run, on a fresh broker (or FLEETPULSE_BENCH_BOOTSTRAP):

1. Kafka's limit on this machine and broker: `ProducerPerformance` and `ConsumerPerformance`
   (Kafka's own tools, from the same jars) with records of our TaskEvents' average size.
2. Every fleetpulse process, each its own OS process as in production: `processors run --stage
   all` (metric worker with the native ingest pass, breaker stage, alert stage), `sink run` (embedded ClickHouse),
   `pager run` (to Alertmanager when installed, else a file), `api run`.
3. A ramp of pre-encoded TaskEvents (200 agents, 10 integrations, 1-2 calls each) at each rate
   for `--step-s` seconds. A rate is *sustained* when the producer kept to it and the
   committing consumer groups (metric worker, sink) have committed everything within 6 s of
   the step's end (the metric worker commits every second; a worker that fell behind by a
   tenth over a 20 s step still has 2 s of backlog, which takes it longer). The breaker and alert stages commit no offsets; their latencies at that rate (step
   4) show whether they keep up.
4. At the highest sustained rate: 10 integration outages (breaker trip latency: crossing event
   produced -> OPEN on fleetpulse.control; alert latency: -> Alert on fleetpulse.alerts), and
   freshness probes (produced -> queryable in ClickHouse through the sink), then the RSS of
   every process.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).parent))
from alerts import MIN_CALLS, RULE
from breakers import POLICY_YAML, Load, pct, produce
from common import broker, keep_logs, machine, process_cpu_s, write_json, write_result
from fleetpulse.contract.alert_rules import DEFAULT_RULES
from fleetpulse.contract.config import DevstackSettings, SinkSettings
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack import ensure_jars, ensure_topics, free_port

PERF_RECORDS = 300_000
SUSTAINED_DRAIN_S = 6.0  # the groups commit every 1-3 s; a group that kept up is done by then
DRAIN_LIMIT_S = 15.0


def plan(load: Load) -> list[tuple[float, str, bytes, int]]:
    """``load``'s schedule, timed to start once it is built. Building encodes every event
    (~35 us each here): a schedule timed from before it is built starts late and goes out as a
    burst at the producer's full speed (a 16,000/s step of 20 s took 11.5 s to build, and its
    first ~170,000 events went out at ~43,000/s), which is a backlog, not the rate."""
    started = time.time()
    Load(load.rate, 1, 0).build(0.0, limit=2000)
    per_event = (time.time() - started) / 2000
    margin = 1.3
    while True:
        schedule = load.build(time.time() + per_event * load.duration * load.rate * margin + 1)
        if schedule[0][0] > time.time():
            return schedule
        margin *= 2  # the build took longer than its sample said: again, with more time


def kafka_tools(bootstrap: str, topic: str, size: int) -> tuple[float, float]:
    """Records/s of Kafka's ProducerPerformance and ConsumerPerformance on ``topic``."""
    s = DevstackSettings()
    cp = str(ensure_jars(s.kafka_cache, s.kafka_version) / "*")
    java = ["java", "-Xmx512m", "-cp", cp]
    out = subprocess.run(
        [*java, "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
         "--num-records", str(PERF_RECORDS), "--record-size", str(size), "--throughput", "-1",
         "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all", "linger.ms=5",
         "compression.type=lz4"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    produced = float(re.findall(r"([\d.]+) records/sec", out)[-1])
    out = subprocess.run(
        [*java, "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", bootstrap,
         "--topic", topic, "--messages", str(PERF_RECORDS), "--group", uuid.uuid4().hex],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    header, row = [ln for ln in out.splitlines() if ln.strip()][-2:]
    cols = dict(zip([c.strip() for c in header.split(",")], row.split(","), strict=False))
    return produced, float(cols["nMsg.sec"])


class Watch(threading.Thread):
    """Stamps the first OPEN of each outage breaker and the first Alert of each outage."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        super().__init__(daemon=True)
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                           "fetch.wait.max.ms": 5, "enable.auto.commit": False})  # fmt: skip
        parts = []
        for t in (topics.control, topics.alerts):
            md = self.c.list_topics(t, timeout=10).topics[t]
            parts += [TopicPartition(t, p, 0) for p in md.partitions]
        self.c.assign(parts)
        self.topics = topics
        self.codec = AvroCodec(logical_types=False)
        self.opened: dict[str, float] = {}
        self.alerted: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for m in self.c.consume(1000, 0.05):
                if m.error():
                    continue
                now = time.time()
                try:
                    self.stamp(m.topic(), m.value(), now)
                except Exception as exc:  # a watcher that dies would measure nothing, silently
                    print(f"watch: {m.topic()}@{m.offset()}: {exc!r}", file=sys.stderr)

    def stamp(self, topic: str, value: bytes | None, now: float) -> None:
        if value is None:  # a tombstone of the compacted control topic
            return
        if topic == self.topics.control:
            r = self.codec.decode(value, "ControlMessage")
            if r["state"] == "OPEN":
                self.opened.setdefault(r["target_id"], now)
        else:
            a = self.codec.decode(value, "Alert")
            if a["status"] == "firing":
                self.alerted.setdefault(a["dedup_key"], now)


def behind(admin: AdminClient, c: Consumer, groups: list[str], topic: str) -> dict[str, int]:
    """Each group's committed lag on ``topic``, in records."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    md = c.list_topics(topic, timeout=10).topics[topic]
    highs = {
        p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions
    }
    out = {}
    for g in groups:
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)])[g].result()
        committed = {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic}
        out[g] = sum(h - max(committed.get(p, 0), 0) for p, h in highs.items())
    return out


def topic_ends(c: Consumer, prefix: str) -> dict[str, int]:
    """Per topic of this run: the sum of its partitions' end offsets (records written)."""
    out = {}
    for name, md in c.list_topics(timeout=10).topics.items():
        if name.startswith(prefix):
            out[name[len(prefix) :]] = sum(
                c.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in md.partitions
            )
    return out


def drain_times(
    admin: AdminClient, c: Consumer, groups: list[str], topic: str, limit: float
) -> dict[str, float | None]:
    """Seconds after the load stopped until each group had committed everything (None: not
    within ``limit``). A group that kept up drains within its commit interval."""
    t0 = time.time()
    out: dict[str, float | None] = dict.fromkeys(groups)
    while time.time() - t0 < limit and any(v is None for v in out.values()):
        for g, n in behind(admin, c, [g for g in groups if out[g] is None], topic).items():
            if n == 0:
                out[g] = time.time() - t0
        time.sleep(0.25)
    return out


def rss_mb(pid: int) -> float:
    """RSS of a process and its children (the processors' stages are children)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in children(k)]


def _label(name: str, pid: int, top: int) -> str:
    """``processors/metrics`` for a stage child (its ``--stage``), else the process's name."""
    if pid == top:
        return name
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    stage = args[args.index(b"--stage") + 1].decode() if b"--stage" in args else str(pid)
    return f"{name}/{stage}"


def cpu_sample(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds so far per fleetpulse process (the processors per stage), this benchmark
    (producer, probes, watchers) and the whole machine (busy time of every core)."""
    out: dict[str, float] = {}
    for name, p in procs.items():
        for pid in [p.pid, *children(p.pid)]:
            try:
                label = _label(name, pid, p.pid)
                out[label] = out.get(label, 0.0) + process_cpu_s(pid)
            except (OSError, ValueError, IndexError):
                continue
    t = os.times()
    out["benchmark"] = t.user + t.system
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    out["machine"] = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return out


def cores_used(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """Cores each process kept busy between two samples; ``broker and the rest``: the machine's
    busy time no fleetpulse process and not the benchmark used (the broker, mostly)."""
    out = {k: (after[k] - before.get(k, 0.0)) / wall for k in after if k != "machine"}
    machine = (after["machine"] - before["machine"]) / wall
    out["broker and the rest"] = machine - sum(out.values())
    out["machine"] = machine
    return {k: round(v, 2) for k, v in out.items()}


def probe_freshness(
    analyst: Any, db: str, agent: str, probes: dict[str, float], stop: threading.Event
) -> dict[str, float]:
    """Poll ClickHouse (through the sink's query endpoint) while probes are produced; each
    probe's freshness is from its produce to the first poll that finds it. The poll asks as
    an analyst would, by agent and time (the table's sort key), so that ten polls a second
    read a few granules, not every event's id: the probe must not load the sink it times."""
    seen: dict[str, float] = {}
    deadline = None
    while deadline is None or time.time() < deadline:
        if stop.is_set() and deadline is None:
            deadline = time.time() + 30
        wanted = [k for k in list(probes) if k not in seen]
        if stop.is_set() and not wanted:
            break
        if wanted:
            ids = ",".join(f"'{k}'" for k in wanted)
            since_us = int((min(probes[k] for k in wanted) - 60) * 1e6)
            t = analyst.table(
                f"SELECT event_id FROM {db}.task_events WHERE agent_id = '{agent}' AND "
                f"ended_at >= fromUnixTimestamp64Micro(toInt64({since_us})) AND event_id IN ({ids})"
            )
            now = time.time()
            for (eid,) in t.rows:
                seen.setdefault(str(eid), now)
        time.sleep(0.1)
    return {k: seen[k] - probes[k] for k in seen}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--rates", default="1000,2000,3000,4000,6000,8000,12000,16000,24000,32000,48000"
    )
    ap.add_argument("--step-s", type=float, default=20)
    ap.add_argument("--json", help="also write the figures as JSON to this file")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    am_bin = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    with broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        topics = Topics(f"e2e{uuid.uuid4().hex[:6]}.")
        ensure_topics(bootstrap, topics)
        sample = Load(1000, 10, 0).build(time.time(), limit=2000)
        size = sum(len(v) for _, _, v, _ in sample) // len(sample)
        perf_topic = f"{topics.prefix}perf"
        from confluent_kafka.admin import NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(perf_topic, 6, 1)])[perf_topic].result()
        produced_max, consumed_max = kafka_tools(bootstrap, perf_topic, size)
        print(
            f"Kafka tools: produce {produced_max:,.0f}/s, consume {consumed_max:,.0f}/s ({size} B records)"
        )

        policy = yaml.safe_load(POLICY_YAML) | {"alerts": {"rules": [*DEFAULT_RULES, RULE]}}
        (work / "policy.yaml").write_text(yaml.safe_dump(policy))
        env = {**os.environ, "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
               "FLEETPULSE_TOPIC_PREFIX": topics.prefix, "FLEETPULSE_HOME": str(work / "home"),
               "FLEETPULSE_POLICY": str(work / "policy.yaml"),
               "FLEETPULSE_LOG_LEVEL": os.environ.get("FLEETPULSE_LOG_LEVEL", "WARNING"),
               "FLEETPULSE_PROCESSORS_WEB_PORT": str(free_port()),
               "FLEETPULSE_API_PORT": str(free_port())}  # fmt: skip
        cli = [sys.executable, "-m", "fleetpulse.cli"]
        procs: dict[str, subprocess.Popen[bytes]] = {}

        def start(name: str, argv: list[str]) -> None:
            procs[name] = subprocess.Popen(argv, env=env, stdout=(work / f"{name}.log").open("wb"),
                                           stderr=subprocess.STDOUT)  # fmt: skip

        pager = {"receivers": [{"name": "log", "file": {"path": str(work / "pages.jsonl")}}],
                 "default_receivers": ["log"]}  # fmt: skip
        if am_bin:
            port = free_port()
            (work / "am.yml").write_text(
                "global: {resolve_timeout: 24h}\nroute: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n"
            )
            start("alertmanager", [am_bin, f"--config.file={work / 'am.yml'}", f"--storage.path={work / 'am'}",
                                   f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="])  # fmt: skip
            pager = {"receivers": [{"name": "am", "alertmanager": {"url": f"http://127.0.0.1:{port}"}}],
                     "default_receivers": ["am"]}  # fmt: skip
        (work / "pager.yaml").write_text(yaml.safe_dump(pager))
        start("processors", [*cli, "processors", "run", "--stage", "all"])
        start("sink", [*cli, "sink", "run"])
        start("pager", [*cli, "pager", "run", "--config", str(work / "pager.yaml")])
        start("api", [*cli, "api", "run"])
        lagc = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
        # the breaker and alert stages commit nothing (they replay recent events at start);
        # that they keep up shows in the trip and alert latencies measured at the chosen rate
        groups = [f"{topics.prefix}processors", f"{topics.prefix}sink"]
        results: list[tuple[int, float, dict[str, float | None]]] = []
        try:
            time.sleep(20)  # the stages join their groups and read the empty topics
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} died: " + (work / f"{dead[0]}.log").read_text()[-2000:])
            sustained = 0
            for rate in rates:
                schedule = plan(Load(rate, args.step_s, 0))
                _, late = produce(bootstrap, topics.task_events, schedule)
                achieved = len(schedule) / (schedule[-1][0] - schedule[0][0] + late)
                drains = drain_times(admin, lagc, groups, topics.task_events, limit=DRAIN_LIMIT_S)
                ok = late < 1 and all(
                    d is not None and d <= SUSTAINED_DRAIN_S for d in drains.values()
                )
                results.append((rate, achieved, drains))
                print(
                    f"{rate:,}/s: produced {achieved:,.0f}/s, drained after {drains}: {'sustained' if ok else 'NOT sustained'}"
                )
                if not ok:
                    break
                sustained = rate
            # let any backlog drain before the latency phase
            drain_times(admin, lagc, groups, topics.task_events, limit=180)
            watch = Watch(bootstrap, topics)
            watch.start()
            at = max(sustained, rates[0])
            load = Load(at, 5, 10, seed=11)
            schedule = plan(load)
            codec = AvroCodec(logical_types=False)
            probes: dict[str, float] = {}
            stop = threading.Event()
            agent = codec.decode(schedule[0][2], "TaskEvent")["agent_id"]  # every probe's

            def prober() -> None:
                from confluent_kafka import Producer

                p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
                template = codec.decode(schedule[0][2], "TaskEvent")
                encode = AvroCodec(logical_types=False).encoder("TaskEvent")
                stop.wait(max(0.0, schedule[0][0] - time.time()))  # probes under the load only
                while not stop.wait(0.25):
                    now_us = int(time.time() * 1e6)
                    ev = template | {
                        "event_id": uuid.uuid4().hex,
                        "started_at": now_us - 1000,
                        "ended_at": now_us,
                    }
                    probes[ev["event_id"]] = time.time()
                    p.produce(topics.task_events, encode(ev), ev["agent_id"].encode())
                    p.poll(0)
                p.flush(10)

            from fleetpulse.contract.config import load_settings
            from fleetpulse.sink.query import open_analyst

            sink = load_settings(SinkSettings, home=work / "home", bootstrap_servers=bootstrap)
            analyst = open_analyst(sink)
            fresh: dict[str, float] = {}
            pt = threading.Thread(target=prober, daemon=True)
            ft = threading.Thread(
                target=lambda: fresh.update(
                    probe_freshness(analyst, sink.clickhouse_database, agent, probes, stop)
                ),
                daemon=True,
            )
            pt.start()
            ft.start()
            ends0 = topic_ends(lagc, topics.prefix)
            time.sleep(max(0.0, schedule[0][0] - time.time()))  # the load starts
            cpu0, t0 = cpu_sample(procs), time.monotonic()
            outages, late_s = produce(bootstrap, topics.task_events, schedule)
            wall = time.monotonic() - t0
            cpu = cores_used(cpu0, cpu_sample(procs), wall)
            writes = {
                t: round((n - ends0.get(t, 0)) / wall)
                for t, n in topic_ends(lagc, topics.prefix).items()
                if n > ends0.get(t, 0)
            }
            time.sleep(5)
            stop.set()
            pt.join()
            ft.join()
            analyst.close()
            watch.stop.set()
            rss = {n: rss_mb(p.pid) for n, p in procs.items() if p.poll() is None}
        finally:
            for p in procs.values():
                p.send_signal(signal.SIGTERM)
            for p in procs.values():
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            keep_logs(work.glob("*.log"))
    trip, alert = [], []
    for k, calls in sorted(outages.items()):
        if len(calls) < MIN_CALLS:
            continue
        crossing = calls[MIN_CALLS - 1][0]
        if f"integration:outage-{k}" in watch.opened:
            trip.append(watch.opened[f"integration:outage-{k}"] - crossing)
        if f"outage-errors:integration=outage-{k}" in watch.alerted:
            alert.append(watch.alerted[f"outage-errors:integration=outage-{k}"] - crossing)
    report(
        args,
        size,
        produced_max,
        consumed_max,
        results,
        sustained,
        at,
        trip,
        alert,
        list(fresh.values()),
        len(probes),
        rss,
        cpu,
        writes,
        late_s,
    )


def report(args: Any, size: int, pmax: float, cmax: float, steps: list[tuple[int, float, dict[str, float | None]]],
           sustained: int, at: int, trip: list[float], alert: list[float], fresh: list[float],
           probes: int, rss: dict[str, float], cpu: dict[str, float],
           writes: dict[str, int], late_s: float) -> None:  # fmt: skip
    def row(name: str, xs: list[float], n: int, target: str) -> str:
        if not xs:
            return f"| {name} | not measured | | | {target} |"
        return (f"| {name} | {pct(xs, 0.5) * 1000:,.0f} ms | {pct(xs, 0.99) * 1000:,.0f} ms | "
                f"{len(xs)} of {n} | {target} |")  # fmt: skip

    lines = [
        f"Every fleetpulse process on one machine ({machine()}) with the broker: metric "
        "worker (native ingest), breaker stage, alert stage, sink (chDB), pager, control API. Pre-encoded "
        f"TaskEvents of {size} B on average, 200 agents, 10 integrations.",
        "",
        f"## Sustained rate (steps of {args.step_s:.0f} s; sustained: the metric worker and the "
        f"sink committed everything within {SUSTAINED_DRAIN_S:.0f} s of the step's end)",
        "",
        "| offered events/s | produced/s | metric worker drained after | sink drained after | |",
        "|---:|---:|---:|---:|---|",
    ]
    for rate, achieved, lags in steps:
        v = [f"{d:.1f} s" if d is not None else f"> {DRAIN_LIMIT_S:.0f} s" for d in lags.values()]
        ok = "sustained" if rate <= sustained else "**not sustained**"
        lines.append(f"| {rate:,} | {achieved:,.0f} | {v[0]} | {v[1]} | {ok} |")
    lines += [
        "",
        f"- **highest sustained rate: {sustained:,} events/s**.",
        f"- Kafka's own tools on the same broker, {size} B records: ProducerPerformance "
        f"{pmax:,.0f} records/s, ConsumerPerformance {cmax:,.0f} records/s. fleetpulse end to end "
        f"sustains {sustained / pmax:.1%} of what the broker takes from one producer and "
        f"{sustained / cmax:.1%} of what one consumer reads.",
        "",
        f"## Latency under load ({at:,} events/s, 10 integration outages, probes every 0.25 s)",
        "",
        f"The producer kept to the schedule: at most {late_s:.2f} s late."
        if late_s < 1
        else f"**The producer fell behind the schedule by up to {late_s:.2f} s**: a backlog.",
        "",
        "| measure | p50 | p99 | samples | target |",
        "|---|---:|---:|---:|---|",
        row(
            "breaker trip: crossing event produced -> OPEN on fleetpulse.control",
            trip,
            10,
            "p99 <= 500 ms",
        ),
        row(
            "alert: crossing event produced -> Alert on fleetpulse.alerts", alert, 10, "p99 <= 1 s"
        ),
        row("sink freshness: produced -> queryable in ClickHouse", fresh, probes, "p99 <= 3 s"),
        "",
        "## Memory (RSS at the end)",
        "",
        "| process | RSS |",
        "|---|---:|",
        *[f"| {n} | {mb:,.0f} MB |" for n, mb in rss.items()],
        "",
        "`processors` is the supervisor plus its three stages (metric worker, breaker stage, "
        "alert stage).",
        "",
        f"## CPU during the latency phase (cores busy, of {os.cpu_count()})",
        "",
        "| process | cores |",
        "|---|---:|",
        *[f"| {n} | {c:.2f} |" for n, c in cpu.items()],
        "",
        "`benchmark`: this script (the producer at the rate, the probes, the watchers); "
        "`broker and the rest`: the machine's busy time that no process above used.",
        "",
        "Records written to the broker per second meanwhile, per topic (what it carries besides "
        "the task events):",
        "",
        "| topic | records/s |",
        "|---|---:|",
        *[f"| {t} | {n:,} |" for t, n in sorted(writes.items(), key=lambda kv: -kv[1])],
        "",
        "Reproduce: `python bench/e2e.py` (or `make bench`).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result("e2e", text)

    def p99(xs: list[float], scale: float) -> float | None:
        return round(pct(xs, 0.99) * scale, 3) if xs else None

    write_json(
        args.json,
        {
            "sustained_eps": sustained,
            "kafka_producer_eps": round(pmax),
            "kafka_consumer_eps": round(cmax),
            "sustained_over_producer": round(sustained / pmax, 4),
            "record_bytes": size,
            "latency_at_eps": at,
            "latency_producer_late_s": round(late_s, 3),
            "breaker_p99_ms": p99(trip, 1000),
            "alert_p99_ms": p99(alert, 1000),
            "freshness_p99_s": p99(fresh, 1),
            "rss_mb": {n: round(mb) for n, mb in rss.items()},
            "cpu_cores": cpu,
            "topic_records_per_s": writes,
            "steps": [
                {"offered_eps": r, "produced_eps": round(a), "drained_s": d} for r, a, d in steps
            ],
        },
    )


if __name__ == "__main__":
    main()
