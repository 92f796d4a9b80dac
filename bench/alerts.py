"""Alert latency under load: from the event that crosses a rule's threshold to the Alert on
fleetpulse.alerts, and to its arrival in Alertmanager.

    python bench/alerts.py [--rate 10000] [--outages 20]

One run, on a fresh broker (or FLEETPULSE_BENCH_BOOTSTRAP):

* the alert stage (`fleetpulse processors run --stage alerts`) with the default rules plus
  `outage-errors` (integration error rate >= 50% over >= 20 attempted calls in 10 s);
* the paging bridge (`fleetpulse pager run`) delivering to a real Alertmanager
  (`prometheus-alertmanager`; without it only the topic is measured);
* this process produces ~`--rate` TaskEvents/s from 200 agents over 10 healthy integrations
  (the breaker benchmark's pre-encoded load); `--outages` times a fresh integration `outage-k`
  starts failing. The crossing event is its 20th failing call; latency is from that event's
  produce time to the Alert's arrival at a consumer here, and to the first poll of
  Alertmanager's API (every 20 ms) that shows it.

The floor, measured side by side under the same load: a probe record produced to Kafka and
consumed here (what any alert must at least pay: one produce and one consume).
"""

from __future__ import annotations

import argparse
import os
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

import httpx
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).parent))
from breakers import Load, pct, produce
from common import broker, machine, write_result
from fleetpulse.contract.alert_rules import DEFAULT_RULES
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack import ensure_topics, free_port

MIN_CALLS = 20
WARMUP_S = 10.0
RULE = {"name": "outage-errors", "kind": "integration_error_rate", "threshold": 0.5,
        "min_volume": MIN_CALLS, "window_s": 10, "severity": "critical"}  # fmt: skip


class Arrivals(threading.Thread):
    """Consumes the alerts topic (and the probe topic) and stamps each record's arrival."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                                  "fetch.wait.max.ms": 5, "enable.auto.commit": False})  # fmt: skip
        parts = []
        for t in topics:
            md = self.consumer.list_topics(t, timeout=10).topics[t]
            parts += [TopicPartition(t, p, 0) for p in md.partitions]
        self.consumer.assign(parts)
        self.codec = AvroCodec(logical_types=False)
        self.alerts: dict[str, float] = {}
        self.probes: dict[bytes, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for m in self.consumer.consume(1000, 0.05):
                now = time.time()
                if m.topic().endswith("probe"):
                    self.probes.setdefault(m.value(), now)
                    continue
                a = self.codec.decode(m.value(), "Alert")
                if a["status"] == "firing":
                    self.alerts.setdefault(a["dedup_key"], now)


class AlertmanagerPoll(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client() as c:
            while not self.stop.is_set():
                try:
                    found = c.get(f"{self.url}/api/v2/alerts", timeout=2).json()
                except httpx.HTTPError:
                    found = []
                now = time.time()
                for a in found:
                    self.seen.setdefault(a["labels"].get("dedup_key", ""), now)
                time.sleep(0.02)


def probe(bootstrap: str, topic: str, stop: threading.Event, sent: dict[bytes, float]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    while not stop.is_set():
        key = uuid.uuid4().bytes
        sent[key] = time.time()
        p.produce(topic, key)
        p.poll(0)
        time.sleep(0.1)
    p.flush(10)


def evaluator_alone(n: int = 50_000) -> tuple[float, float, float]:
    """Events/s of the evaluator alone (decoded events, no I/O) beside fastavro decoding the
    same bytes, and one evaluation's duration (ms) after them."""
    from fleetpulse.contract.clock import SystemClock
    from fleetpulse.contract.policy import FleetPolicy
    from fleetpulse.processors.alerts.evaluator import AlertEvaluator

    sample = Load(10_000, 10, 5).build(time.time() - 20, limit=n)
    codec = AvroCodec(logical_types=False)
    t = time.perf_counter()
    events = [codec.decode(v, "TaskEvent") for _, _, v, _ in sample]
    decode = n / (time.perf_counter() - t)
    ev = AlertEvaluator(
        FleetPolicy.model_validate({"alerts": {"rules": [*DEFAULT_RULES, RULE]}}), SystemClock()
    )
    t = time.perf_counter()
    for e in events:
        ev.ingest(e)
    ingest = n / (time.perf_counter() - t)
    t = time.perf_counter()
    ev.evaluate()
    return ingest, decode, (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--outages", type=int, default=20)
    args = ap.parse_args()
    am_bin = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    with broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        topics = Topics(f"bench{uuid.uuid4().hex[:6]}.")
        ensure_topics(bootstrap, topics)
        probe_topic = f"{topics.prefix}probe"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(probe_topic, 1, 1)])[probe_topic].result()
        policy = {"alerts": {"rules": [*DEFAULT_RULES, RULE]}}
        (work / "policy.yaml").write_text(yaml.safe_dump(policy))
        env = {**os.environ, "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
               "FLEETPULSE_TOPIC_PREFIX": topics.prefix, "FLEETPULSE_HOME": str(work / "home"),
               "FLEETPULSE_POLICY": str(work / "policy.yaml")}  # fmt: skip
        procs = []
        am_url = None
        if am_bin:
            port = free_port()
            am_url = f"http://127.0.0.1:{port}"
            (work / "am.yml").write_text(
                "global: {resolve_timeout: 24h}\nroute: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n"
            )
            procs.append(subprocess.Popen(
                [am_bin, f"--config.file={work / 'am.yml'}", f"--storage.path={work / 'am'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                stdout=(work / "am.log").open("wb"), stderr=subprocess.STDOUT))  # fmt: skip
            (work / "pager.yaml").write_text(
                f'receivers: [{{name: am, alertmanager: {{url: "{am_url}"}}}}]\ndefault_receivers: [am]\n'
            )
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "fleetpulse.cli", "pager", "run", "--config", str(work / "pager.yaml")],
                env=env, stdout=(work / "pager.log").open("wb"), stderr=subprocess.STDOUT))  # fmt: skip
        # the metric worker's ingest pass sends the alert stage what the rules count
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "fleetpulse.cli", "processors", "run", "--stage", "metrics"],
            env=env, stdout=(work / "metrics.log").open("wb"), stderr=subprocess.STDOUT))  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "fleetpulse.cli", "processors", "run", "--stage", "alerts"],
            env=env, stdout=(work / "stage.log").open("wb"), stderr=subprocess.STDOUT))  # fmt: skip
        load = Load(args.rate, WARMUP_S, args.outages)
        schedule = load.build(time.time() + 30)
        arrivals = Arrivals(bootstrap, [topics.alerts, probe_topic])
        arrivals.start()
        poll = AlertmanagerPoll(am_url) if am_url else None
        if poll:
            poll.start()
        stop, sent = threading.Event(), {}
        prober = threading.Thread(
            target=probe, args=(bootstrap, probe_topic, stop, sent), daemon=True
        )
        try:
            time.sleep(15)  # the stage reads empty topics; the load starts 30 s after build
            if procs[-1].poll() is not None:
                raise RuntimeError(
                    "the alert stage died: " + (work / "stage.log").read_text()[-2000:]
                )
            prober.start()
            outages, late = produce(bootstrap, topics.task_events, schedule)
            time.sleep(5)
        finally:
            stop.set()
            for t in (arrivals, poll):
                if t:
                    t.stop.set()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(30)
    topic_lat, am_lat, missed = [], [], 0
    for k, calls in sorted(outages.items()):
        key = f"outage-errors:integration=outage-{k}"
        if len(calls) < MIN_CALLS or key not in arrivals.alerts:
            missed += 1
            continue
        crossing = calls[MIN_CALLS - 1][0]
        topic_lat.append(arrivals.alerts[key] - crossing)
        if poll and key in poll.seen:
            am_lat.append(poll.seen[key] - crossing)
    floor = [arrivals.probes[k] - t for k, t in sent.items() if k in arrivals.probes]
    alone = evaluator_alone()
    report(args, schedule, late, missed, topic_lat, am_lat, floor, am_url is not None, alone)


def report(args: Any, schedule: Any, late: float, missed: int, topic: list[float], am: list[float],
           floor: list[float], with_am: bool, alone: tuple[float, float, float]) -> None:  # fmt: skip
    rate = len(schedule) / (schedule[-1][0] - schedule[0][0])

    def row(name: str, xs: list[float], target: float | None) -> str:
        if not xs:
            return f"| {name} | not measured | | | |"
        verdict = "" if target is None else ("met" if pct(xs, 0.99) <= target else "NOT met")
        return (f"| {name} | {pct(xs, 0.5) * 1000:,.0f} ms | {pct(xs, 0.99) * 1000:,.0f} ms | "
                f"{max(xs) * 1000:,.0f} ms | {verdict} |")  # fmt: skip

    lines = [
        f"{len(topic)} of {args.outages} outages alerted ({missed} missed); background load "
        f"{rate:,.0f} TaskEvents/s (pre-encoded; the last went out {late * 1000:,.0f} ms late) "
        f"from 200 agents over 10 integrations; the default rules plus `outage-errors` "
        f"(integration error rate >= 50% over >= {MIN_CALLS} calls in 10 s), evaluated every "
        f"250 ms. {machine()}.",
        "",
        "| measure | p50 | p99 | max | target |",
        "|---|---:|---:|---:|---|",
        row("crossing event produced -> Alert on fleetpulse.alerts (p99 <= 2 s)", topic, 2.0),
        row("crossing event produced -> Alert in Alertmanager's API (p99 <= 3 s)", am, 3.0)
        if with_am
        else "| -> Alertmanager | prometheus-alertmanager not installed | | | |",
        row("floor: Kafka produce -> consume of a probe, same load", floor, None),
        "",
        f"- ratio, topic p50 against the floor p50: {pct(topic, 0.5) / max(pct(floor, 0.5), 1e-6):,.0f}x "
        "(the rest is the evaluation interval and the window bookkeeping)."
        if topic and floor
        else "",
        f"- the evaluator alone (default rules + 1, decoded events, no I/O): {alone[0]:,.0f} events/s; "
        f"fastavro decoding the same events: {alone[1]:,.0f}/s ({alone[0] / alone[1]:.2f}x); one "
        f"evaluation of all rules over 200 agents: {alone[2]:,.0f} ms.",
        "",
        "Reproduce: `python bench/alerts.py` (or `make bench`).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result("alerts", text)


if __name__ == "__main__":
    main()
