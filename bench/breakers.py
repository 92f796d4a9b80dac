"""Breaker trip latency under load, and calls saved against per-agent in-process breakers.

    python bench/breakers.py [--rate 10000] [--trips 25] [--watchers 3]

One run, on a fresh broker (or FLEETPULSE_BENCH_BOOTSTRAP):

* the breaker stage (`fleetpulse processors run --stage breakers`) in its own process;
* `--watchers` SDK processes (`Fleet.connect`, the real guard thread following the control
  topic), each logging the wall-clock time it first sees each breaker's states;
* this process produces ~`--rate` TaskEvents/s from 200 simulated agents (1-2 calls each to 10
  healthy integrations with 1% errors; every agent x integration breaker is live too);
* `--trips` times, a fresh integration `outage-k` starts failing: 5% of the events (spread over
  all 200 agents) call it and every call fails. With minimum_calls=20 the window crosses its
  threshold at the 20th call; the trip latency is from that event's produce time to the moment
  each watcher sees OPEN. The fleet has stopped when the last watcher saw it.

Calls saved: per trip, the failing calls made until the fleet stopped (live), against the same
call sequence fed to one in-process breaker per agent with the same thresholds (our own state
machine, fed only that agent's calls, as resilience4j would be inside each replica).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).parent))
from common import broker, keep_logs, machine, write_result
from fleetpulse.contract.breakers import BreakerKey, State
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.policy import BreakerPolicy
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack import ensure_topics
from fleetpulse.processors.breakers.machine import US, Breaker

AGENTS = [f"agent-{i:03d}" for i in range(200)]
HEALTHY = [f"svc-{i}" for i in range(10)]
POLICY = BreakerPolicy(
    failure_rate_threshold=0.5, minimum_calls=20, sliding_window_s=10, wait_in_open_s=60
)
POLICY_YAML = """
breakers:
  defaults:
    failure_rate_threshold: 0.5
    minimum_calls: 20
    sliding_window_s: 10
    wait_in_open_s: 60
"""
OUTAGE_SHARE = 0.05
SLOT_S = 1.5  # one outage per slot: failing for ACTIVE_S, then quiet
ACTIVE_S = 1.0
WARMUP_S = 10.0


def watcher(out: Path) -> None:
    """A process with a real SDK guard: log every state change it sees, with the time."""
    from fleetpulse import Fleet

    f = out.open("a", buffering=1)
    fleet = Fleet.connect(f"watcher-{os.getpid()}", spool_dir=out.parent / f"spool-{out.stem}")
    assert fleet.guard is not None
    fleet.guard.view.on_change(
        lambda r: f.write(json.dumps([r["target_id"], r["state"], time.time()]) + "\n")
    )
    f.write(json.dumps(["ready", "", time.time()]) + "\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(1)


def seen_open(files: list[Path], breaker_id: str) -> list[float] | None:
    """Each watcher's first OPEN time for breaker_id, once all have seen it."""
    times = []
    for f in files:
        t = next(
            (
                r[2]
                for r in map(json.loads, f.read_text().splitlines())
                if r[0] == breaker_id and r[1] == "OPEN"
            ),
            None,
        )
        if t is None:
            return None
        times.append(t)
    return times


class Load:
    """The background load and the outages, encoded before the clock starts.

    Every event's timestamps are its scheduled produce time, so the generator only paces and
    produces during the run (about 5 us an event): the machine's cores go to the system under
    test, as with Kafka's own ProducerPerformance and its pre-made payloads.
    """

    def __init__(self, rate: int, warmup_s: float, trips: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.encode = AvroCodec().encoder("TaskEvent")
        self.duration = warmup_s + trips * SLOT_S
        self.warmup_s = warmup_s
        self._ids = iter(range(1 << 62))

    def build(self, base: float, limit: int = 0) -> list[tuple[float, str, bytes, int]]:
        """(produce time, agent, value, outage index or -1) for the whole run from ``base``."""
        out = []
        n = limit or int(self.duration * self.rate)
        for i in range(n):
            t = base + i / self.rate
            k = -1
            since = t - base - self.warmup_s
            if since >= 0 and since % SLOT_S < ACTIVE_S and self.rng.random() < OUTAGE_SHARE:
                k = int(since // SLOT_S)
            agent = self.rng.choice(AGENTS)
            out.append((t, agent, self.event(agent, int(t * US), k), k))
        return out

    def event(self, agent: str, now_us: int, outage: int) -> bytes:
        rng = self.rng
        calls = []
        for integ in rng.sample(HEALTHY, rng.randint(1, 2)):
            calls.append(self._call(integ, now_us, "error" if rng.random() < 0.01 else "ok"))
        if outage >= 0:
            calls.append(self._call(f"outage-{outage}", now_us, "error"))
        ident = f"{next(self._ids):032x}"
        return self.encode(
            {
                "event_id": ident,
                "agent_id": agent,
                "agent_version": "v1",
                "agent_role": "",
                "task_id": ident,
                "task_type": "work",
                "trace_id": ident,
                "parent_task_id": None,
                "upstream_agent_id": None,
                "input_hash": "0" * 64,
                "outcome": "success",
                "error_type": None,
                "started_at": now_us - 50_000,
                "ended_at": now_us,
                "duration_ms": 50.0,
                "model": None,
                "provider": None,
                "input_tokens": 0,
                "output_tokens": 0,
                "cached_tokens": 0,
                "cost_micros": 0,
                "price_table_version": "",
                "tool_calls": calls,
                "attributes": {},
            }
        )

    def _call(self, integration: str, now_us: int, status: str) -> dict[str, Any]:
        return {
            "call_id": "c",
            "integration": integration,
            "operation": "call",
            "access": "read",
            "target": None,
            "status": status,
            "error_type": "HTTP503" if status == "error" else None,
            "started_at": now_us - 20_000,
            "latency_ms": 20.0,
            "cost_micros": 0,
        }


def produce(
    bootstrap: str, topic: str, schedule: list[tuple[float, str, bytes, int]]
) -> tuple[dict[int, list[tuple[float, str]]], float]:
    """Produce on schedule; return each outage's calls with their actual produce times, and how
    late the producer was at worst (the schedule's start included)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    outages: dict[int, list[tuple[float, str]]] = {}
    late = 0.0
    for i, (t, agent, data, k) in enumerate(schedule):
        if i % 50 == 0:
            delay = t - time.time()
            if delay > 0:
                time.sleep(delay)
            else:
                late = max(late, -delay)
            producer.poll(0)
        producer.produce(topic, data, agent.encode())
        if k >= 0:
            outages.setdefault(k, []).append((time.time(), agent))
    producer.flush(30)
    return outages, late


def in_process_calls(calls: list[tuple[float, str]]) -> tuple[int, int]:
    """Failing calls made before each agent's own breaker opened: one breaker per agent, fed
    only that agent's calls and evaluated after each one, as inside each replica.
    Returns (calls that hit the integration, agents whose breaker never opened)."""
    breakers: dict[str, Breaker] = {}
    per_second: dict[tuple[str, int], int] = {}
    hit = 0
    for t, agent in calls:
        b = breakers.setdefault(agent, Breaker(BreakerKey("agent", agent_id=agent), POLICY))
        if b.state.state == State.OPEN:
            continue  # short-circuited inside that agent's process
        hit += 1
        sec = int(t)
        n = per_second[(agent, sec)] = per_second.get((agent, sec), 0) + 1
        b.window.set_cell(0, sec, n, n, 0)  # every call fails
        b.evaluate(int(t * US))
    opened = sum(1 for b in breakers.values() if b.state.state == State.OPEN)
    return hit, len(AGENTS) - opened


def continue_sequence(
    calls: list[tuple[float, str]], start: float, rate: float, horizon_s: float, seed: int
) -> list[tuple[float, str]]:
    """The trip's failing calls as produced live, continued at the live rate until horizon_s."""
    rng = random.Random(seed)
    out = list(calls)
    t = calls[-1][0] if calls else start
    while t < start + horizon_s:
        t += 1 / rate
        out.append((t, rng.choice(AGENTS)))
    return out


def stage_open_times(log: Path) -> dict[str, float]:
    """When the stage decided each OPEN, from its log lines (asctime is local time, ms)."""
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if "-> OPEN" not in line or "breaker integration:outage-" not in line:
            continue
        stamp, ms = line[:19], line[20:23]
        bid = line.split("breaker ", 1)[1].split(" ->", 1)[0]
        t = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000
        found.setdefault(bid, t)
    return found


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--trips", type=int, default=25)
    ap.add_argument("--watchers", type=int, default=3)
    ap.add_argument("--watch", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.watch:
        watcher(args.watch)
        return
    with broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        topics = Topics(f"bench{uuid.uuid4().hex[:6]}.")
        ensure_topics(bootstrap, topics)
        (work / "policy.yaml").write_text(POLICY_YAML)
        env = {
            **os.environ,
            "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
            "FLEETPULSE_TOPIC_PREFIX": topics.prefix,
            "FLEETPULSE_HOME": str(work / "home"),
            "FLEETPULSE_POLICY": str(work / "policy.yaml"),
        }
        cmd = [sys.executable, "-m", "fleetpulse.cli", "processors", "run", "--stage"]
        # the breaker stage decides; the metric worker's ingest pass counts the calls for it
        procs = [
            subprocess.Popen(
                [*cmd, stage],
                env=env,
                stdout=(work / f"{stage}.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
            for stage in ("breakers", "metrics")
        ]
        files = [work / f"watcher-{i}.jsonl" for i in range(args.watchers)]
        for f in files:
            f.touch()
            procs.append(subprocess.Popen([sys.executable, __file__, "--watch", str(f)], env=env))
        load = Load(args.rate, WARMUP_S, args.trips)
        started = time.time()
        sample = load.build(0.0, limit=2000)  # how long encoding takes, to set the start time
        per_event = (time.time() - started) / len(sample)
        base = time.time() + per_event * load.duration * args.rate * 1.3 + 15
        schedule = load.build(base)
        try:
            result = run_trips(args, bootstrap, topics, files, schedule)
            result["decided"] = stage_open_times(work / "breakers.log")
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(30)
            keep_logs(work / f"{stage}.log" for stage in ("breakers", "metrics"))
    report(args, result)


def run_trips(
    args: Any, bootstrap: str, topics: Topics, files: list[Path], schedule: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while not all(f.read_text() for f in files):
        if time.monotonic() > deadline:
            raise RuntimeError("the watchers did not start")
        time.sleep(0.1)
    outages, late = produce(bootstrap, topics.task_events, schedule)
    time.sleep(5)  # stragglers
    latencies: list[float] = []
    live_hits: list[int] = []
    inproc_hits: list[int] = []
    never_opened: list[int] = []
    crossings: dict[str, tuple[float, float]] = {}
    missed = 0
    for k, calls in sorted(outages.items()):
        bid = f"integration:outage-{k}"
        seen = seen_open(files, bid)
        if seen is None or len(calls) < POLICY.minimum_calls:
            missed += 1
            continue
        crossing = calls[POLICY.minimum_calls - 1][0]
        crossings[bid] = (crossing, max(seen))
        latencies += [t - crossing for t in seen]
        live_hits.append(sum(1 for c in calls if c[0] <= max(seen)))
        rate = len(calls) / ACTIVE_S
        seq = continue_sequence(calls, calls[0][0], rate, 60.0, seed=k)
        hit, never = in_process_calls(seq)
        inproc_hits.append(hit)
        never_opened.append(never)
    return {
        "rate": len(schedule) / (schedule[-1][0] - schedule[0][0]),
        "late": late,
        "missed": missed,
        "latencies": latencies,
        "fleet_stop": [s - c for c, s in crossings.values()],
        "live_hits": live_hits,
        "inproc_hits": inproc_hits,
        "never_opened": never_opened,
        "crossings": crossings,
    }


def report(args: Any, r: dict[str, Any]) -> None:
    lat, stop = r["latencies"], r["fleet_stop"]
    live, inproc = r["live_hits"], r["inproc_hits"]
    ratio = statistics.mean(inproc) / statistics.mean(live)
    decide = [r["decided"][b] - c for b, (c, _) in r["crossings"].items() if b in r["decided"]]
    spread = [s - r["decided"][b] for b, (_, s) in r["crossings"].items() if b in r["decided"]]
    lines = [
        f"{len(stop)} trips of {args.trips} seen by every watcher, {args.watchers} SDK watcher "
        f"processes, background load {r['rate']:,.0f} TaskEvents/s (pre-encoded, produced on "
        f"schedule; the last went out {r['late'] * 1000:,.0f} ms late) from 200 agents "
        f"over 10 integrations; every integration and agent x integration breaker live. "
        f"Policy: failure rate >= 50% over >= 20 calls in 10 s. {machine()}.",
        "",
        "| measure | p50 | p99 | max |",
        "|---|---:|---:|---:|",
        f"| trip latency, crossing event produced -> a watcher sees OPEN | "
        f"{pct(lat, 0.5) * 1000:,.0f} ms | {pct(lat, 0.99) * 1000:,.0f} ms | "
        f"{max(lat) * 1000:,.0f} ms |",
        f"| fleet stopped (the last watcher sees OPEN) | {pct(stop, 0.5) * 1000:,.0f} ms | "
        f"{pct(stop, 0.99) * 1000:,.0f} ms | {max(stop) * 1000:,.0f} ms |",
        f"| of which: crossing event -> the stage decides OPEN (its log, ms resolution) | "
        f"{pct(decide, 0.5) * 1000:,.0f} ms | {pct(decide, 0.99) * 1000:,.0f} ms | "
        f"{max(decide) * 1000:,.0f} ms |",
        f"| of which: decision -> the last watcher sees it | {pct(spread, 0.5) * 1000:,.0f} ms "
        f"| {pct(spread, 0.99) * 1000:,.0f} ms | {max(spread) * 1000:,.0f} ms |",
        "",
        f"- target p99 <= 1 s: {'met' if pct(lat, 0.99) <= 1.0 else 'NOT met'}.",
        f"- calls that hit the failing integration per outage: fleet-wide breaker "
        f"{statistics.mean(live):,.0f} (live), one in-process breaker per agent with the same "
        f"thresholds {statistics.mean(inproc):,.0f} (same call sequence, continued at the "
        f"live rate for 60 s): **{ratio:,.1f}x fewer** with the fleet-wide breaker.",
        f"- in-process breakers that had not opened after 60 s (their agent made fewer than "
        f"20 calls in any 10 s): {statistics.mean(r['never_opened']):,.0f} of 200 on average.",
        "",
        "Reproduce: `python bench/breakers.py` (or `make bench`).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result("breakers", text)


if __name__ == "__main__":
    main()
