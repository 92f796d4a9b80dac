"""How fast a killed metric worker is back to correct output: from its window checkpoint, and,
side by side in the same run, by replaying the day of task events (the path before
checkpoints).

    python bench/restart.py [--agents 10000] [--events 500000] [--json FILE]

One run, on a broker of its own (or FLEETPULSE_BENCH_BOOTSTRAP):

1. ``--events`` TaskEvents of ``--agents`` agents (50 integrations, each agent calling 6 of
   them), their times spread over the last 24 hours, produced to the task-events topic.
2. A metric worker (``processors run --stage metrics``, snapshots every second, a checkpoint
   every ``--checkpoint-s``) consumes them all and checkpoints its windows. Its peak RSS, less
   the peak RSS of an idle worker (same command, empty topics: it has loaded its engine, ~200
   MB of library, at start), is the windows' memory.
3. ``kill -9``; one new event for each of 30 sampled agents; a new worker in the same group.
   ``restore_s``: from the kill to the moment the new worker's 24 h snapshots of every sampled
   agent count exactly the tasks the generator made for it in that window (the events before
   the kill included).
4. The same again, the new worker started with checkpoints off (it replays the task events of
   the longest window): ``replay_restore_s``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).parent))
from common import broker, keep_logs, machine, write_json, write_result
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack import ensure_topics, free_port
from fleetpulse.events import AvroCodec
from processors import make_events

US = 1_000_000
DAY_S = 86_400
SAMPLE = 30


class _Stage:
    """A ``processors run --stage <stage>`` child process, its output in ``log``."""

    proc: subprocess.Popen[bytes]
    log: Path

    def start(self, stage: str, env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "fleetpulse.cli", "processors", "run", "--stage", stage]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class WorkerProcess(_Stage):
    """One ``processors run --stage metrics`` process."""

    def __init__(self, bootstrap: str, topics: Topics, home: Path, group: str, checkpoint_s: float):
        self.port = free_port()
        self.log = home / f"worker-{self.port}.log"
        env = {
            **os.environ,
            "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
            "FLEETPULSE_TOPIC_PREFIX": topics.prefix,
            "FLEETPULSE_HOME": str(home),
            "FLEETPULSE_PROCESSORS_GROUP": group,
            "FLEETPULSE_PROCESSORS_CADENCE_S": "1",
            "FLEETPULSE_PROCESSORS_LONG_CADENCE_S": "1",
            "FLEETPULSE_PROCESSORS_WEB_PORT": str(self.port),
            "FLEETPULSE_PROCESSORS_CHECKPOINT_INTERVAL_S": str(checkpoint_s),
            "FLEETPULSE_LOG_LEVEL": os.environ.get("FLEETPULSE_LOG_LEVEL", "INFO"),
            # a stable name: the restarted worker takes the dead one's partitions at once
            "FLEETPULSE_PROCESSORS_INSTANCE_ID": "bench-worker-0",
        }
        self.start("metrics", env)

    def records(self) -> int:
        """Task events counted (on time or late), from its /metrics."""
        try:
            page = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2)
        except OSError:
            return 0
        n = 0
        for line in page.read().decode().splitlines():
            if line.startswith("fleetpulse_processor_records_total{") and (
                'result="ok"' in line or 'result="late"' in line
            ):
                n += int(float(line.split()[-1]))
        return n

    def status(self, field: str) -> int:
        """A ``/proc/<pid>/status`` figure in kB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def wait_for(self, text: str, after: int = 0, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace")[after:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker never logged {text!r}; see {self.log}")
            time.sleep(0.2)


class AlertProcess(_Stage):
    """One ``processors run --stage alerts`` process (alert worker 0 of 1)."""

    def __init__(self, bootstrap: str, topics: Topics, home: Path) -> None:
        self.log = home / f"alerts-{uuid.uuid4().hex[:6]}.log"
        env = {
            **os.environ,
            "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
            "FLEETPULSE_TOPIC_PREFIX": topics.prefix,
            "FLEETPULSE_HOME": str(home),
            "FLEETPULSE_LOG_LEVEL": os.environ.get("FLEETPULSE_LOG_LEVEL", "INFO"),
        }
        self.start("alerts", env)

    def wait_evaluating(self, timeout: float) -> float:
        """When (time.time()) it logged that its replay is done and it evaluates."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_text(errors="replace")
            if "replay done, evaluating" in text or "nothing to replay, evaluating" in text:
                return time.time()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the alert worker never evaluated; see {self.log}")
            time.sleep(0.05)


def alert_restore_s(bootstrap: str, topics: Topics, home: Path, timeout: float) -> float:
    """An alert worker replays the day's alert groups once; then kill -9 and a new one:
    seconds from the kill until it evaluates again."""
    first = AlertProcess(bootstrap, topics, home)
    try:
        first.wait_evaluating(timeout)
        t_kill = time.time()
        first.kill()
    finally:
        first.stop()
    second = AlertProcess(bootstrap, topics, home)
    try:
        return second.wait_evaluating(timeout) - t_kill
    finally:
        second.stop()


class SampleWatch:
    """Follows the metrics topic for the sampled agents' 24 h snapshots."""

    def __init__(self, bootstrap: str, topic: str, agents: list[str]) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        self.codec = AvroCodec(logical_types=False)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-restart-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
            }
        )
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
        self.agents = set(agents)
        self.read = self.after = 0

    def wait_exact(self, expected: dict[str, list[int]], since_us: int, timeout: float) -> float:
        """Seconds until every sampled agent's 24 h snapshot, emitted after ``since_us``,
        counts the tasks of ``expected[agent]`` (event times) inside its window."""
        ok: set[str] = set()
        seen: dict[str, tuple[int, int]] = {}  # agent -> (counted, expected), the latest
        deadline = time.monotonic() + timeout
        while ok != self.agents:
            if time.monotonic() > deadline:
                wrong = {a: seen.get(a) for a in sorted(self.agents - ok)[:5]}
                raise RuntimeError(
                    f"sampled agents never came out right: {wrong} ({self.read} snapshots "
                    f"read, {self.after} emitted after the kill)"
                )
            for m in self.consumer.consume(10_000, timeout=0.2):
                if m.error() is not None or not (m.key() or b"").startswith(b"agent/"):
                    continue
                s = self.codec.decode(m.value() or b"", "MetricSnapshot")
                self.read += 1
                self.after += s["emitted_at"] >= since_us
                agent = s["dimensions"].get("agent_id")
                if s["horizon_s"] != DAY_S or agent not in self.agents:
                    continue
                if s["emitted_at"] < since_us:
                    continue
                want = sum(1 for t in expected[agent] if s["window_start"] <= t < s["window_end"])
                seen[agent] = (s["task_count"], want)
                if s["task_count"] == want:
                    ok.add(agent)
                else:
                    ok.discard(agent)
        return time.time()

    def close(self) -> None:
        self.consumer.close()


def produce_all(bootstrap: str, topic: str, encoded: list[tuple[bytes, bytes]]) -> None:
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "queue.buffering.max.messages": 1_000_000,
            "compression.type": "lz4",
        }
    )
    for key, value in encoded:
        while True:
            try:
                p.produce(topic, value, key)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    p.flush(120)


def tail_events(
    codec: AvroCodec, sample: list[str], seq: int
) -> tuple[list[tuple[bytes, bytes]], dict[str, int]]:
    """One fresh event per sampled agent: (key, value) records and each one's time."""
    now = int(time.time() * US)
    template = make_events(1, 1, 50)[0]
    out, times = [], {}
    for i, agent in enumerate(sample):
        ev = dict(template, agent_id=agent, event_id=f"tail-{seq}-{i}", task_id=f"tail-{seq}-{i}")
        ev["ended_at"], ev["started_at"] = now, now - 900_000
        ev["tool_calls"] = [dict(c, started_at=now - 50_000) for c in ev["tool_calls"]]
        out.append((agent.encode(), codec.encode("TaskEvent", ev)))
        times[agent] = now
    return out, times


def restart(
    bootstrap: str,
    topics: Topics,
    home: Path,
    group: str,
    codec: AvroCodec,
    sample: list[str],
    expected: dict[str, list[int]],
    seq: int,
    checkpoint_s: float,
    victim: WorkerProcess,
    timeout_s: float,
) -> tuple[float, WorkerProcess]:
    """Kill ``victim``, add the tail, start a new worker; seconds from the kill to exact."""
    watch = SampleWatch(bootstrap, topics.metrics, sample)
    try:
        killed_us = int(time.time() * US)
        t_kill = time.time()
        victim.kill()
        tail, times = tail_events(codec, sample, seq)
        produce_all(bootstrap, topics.task_events, tail)
        for agent, t in times.items():
            expected[agent].append(t)
        worker = WorkerProcess(bootstrap, topics, home, group, checkpoint_s)
        done = watch.wait_exact(expected, killed_us, timeout=timeout_s)
        return done - t_kill, worker
    finally:
        watch.close()


def wait_checkpointed(
    worker: WorkerProcess, records: int, timeout: float
) -> dict[int, tuple[int, float]]:
    """Wait until the worker's newest checkpoints cover all ``records`` (every partition's
    offsets start at 0); per partition: (offset, bytes) of its newest checkpoint."""
    deadline = time.monotonic() + timeout
    while True:
        latest: dict[int, tuple[int, float]] = {}
        for line in worker.log.read_text(errors="replace").splitlines():
            if "checkpointed the windows of partition" in line:
                words = line.split("checkpointed the windows of partition ")[1].split()
                size = float(line.split("(")[1].split(" MB")[0]) * 1e6
                latest[int(words[0])] = (int(words[4]), size)
        if sum(offset + 1 for offset, _ in latest.values()) >= records:
            return latest
        if worker.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker's checkpoints never covered everything: {latest}")
        time.sleep(0.5)


def idle_hwm_kb(bootstrap: str, home: Path) -> int:
    """VmHWM of a metric worker with nothing to read (its engine loaded)."""
    topics = Topics(f"idle{uuid.uuid4().hex[:6]}.")
    ensure_topics(bootstrap, topics)
    w = WorkerProcess(bootstrap, topics, home, f"idle-{uuid.uuid4().hex[:6]}", 0)
    try:
        w.wait_for("rebuilt", timeout=120)
        time.sleep(5)
        return w.status("VmHWM")
    finally:
        w.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--checkpoint-s", type=float, default=10)
    ap.add_argument("--timeout-s", type=float, default=900, help="per restart")
    ap.add_argument("--json", help="also write the figures as JSON to this file")
    args = ap.parse_args()

    rng = random.Random(7)
    # 24 h less a margin: every event stays inside the day window while the run lasts
    events = make_events(args.events, args.agents, 50, spread_s=DAY_S - 1800, per_agent=3)
    codec = AvroCodec()
    encoded = [(e["agent_id"].encode(), codec.encode("TaskEvent", e)) for e in events]
    agents = sorted({e["agent_id"] for e in events})
    sample = rng.sample(agents, min(SAMPLE, len(agents)))
    expected: dict[str, list[int]] = {a: [] for a in sample}
    for e in events:
        if e["agent_id"] in expected:
            expected[e["agent_id"]].append(e["ended_at"])
    del events

    home = Path(tempfile.mkdtemp(prefix="fleetpulse-restart-"))  # logs kept if it fails
    with broker() as bootstrap:
        baseline_kb = idle_hwm_kb(bootstrap, home)
        topics = Topics(f"restart{uuid.uuid4().hex[:6]}.")
        ensure_topics(bootstrap, topics)
        group = f"bench-restart-{uuid.uuid4().hex[:6]}"
        t0 = time.time()
        produce_all(bootstrap, topics.task_events, encoded)
        print(f"produced {len(encoded):,} events in {time.time() - t0:.1f} s", flush=True)

        first = WorkerProcess(bootstrap, topics, home, group, args.checkpoint_s)
        t0 = time.time()
        while first.records() < len(encoded):
            if first.proc.poll() is not None or time.time() - t0 > 1800:
                raise RuntimeError(f"the first worker did not finish; see {first.log}")
            time.sleep(0.5)
        load_s = time.time() - t0
        latest = wait_checkpointed(first, len(encoded), args.checkpoint_s * 3 + 120)
        peak_kb = first.status("VmHWM")
        rss_kb = first.status("VmRSS")
        print(f"loaded in {load_s:.1f} s; VmHWM {peak_kb / 1024:.0f} MB", flush=True)
        ckpt_bytes = sum(size for _, size in latest.values())

        restore_s, second = restart(
            bootstrap,
            topics,
            home,
            group,
            codec,
            sample,
            expected,
            1,
            args.checkpoint_s,
            first,
            args.timeout_s,
        )
        print(f"restore from the checkpoint: {restore_s:.1f} s", flush=True)
        alert_s = alert_restore_s(bootstrap, topics, home, args.timeout_s)
        print(f"alert worker: back to evaluating {alert_s:.1f} s after kill -9", flush=True)
        time.sleep(3)  # its offsets committed; then the baseline: checkpoints off
        replay_s, third = restart(
            bootstrap, topics, home, group, codec, sample, expected, 2, 0, second, args.timeout_s
        )
        print(f"restore by replaying the task events: {replay_s:.1f} s", flush=True)
        third.stop()
    keep_logs(home.glob("*.log"))
    shutil.rmtree(home, ignore_errors=True)

    figures: dict[str, Any] = {
        "agents": args.agents,
        "events": len(encoded),
        "restore_s": round(restore_s, 2),
        "replay_restore_s": round(replay_s, 2),
        "restore_speedup": round(replay_s / restore_s, 1),
        "alert_restore_s": round(alert_s, 2),
        "rss_mb": round((peak_kb - baseline_kb) / 1024),
        "worker_vmhwm_mb": round(peak_kb / 1024),
        "worker_vmrss_mb": round(rss_kb / 1024),
        "idle_worker_mb": round(baseline_kb / 1024),
        "checkpoint_mb": round(ckpt_bytes / 1e6, 1),
        "first_load_s": round(load_s, 1),
    }
    ok = restore_s <= 10
    lines = [
        f"{len(encoded):,} TaskEvents over the last 24 h, {args.agents:,} agents x 50 "
        f"integrations (each agent calls 6), one metric worker, 6 partitions. {machine()}.",
        "",
        "| figure | value | target |",
        "|---|---:|---|",
        f"| restore_s: kill -9 -> every sampled agent's 24 h snapshot exact (from the "
        f"checkpoint) | {restore_s:.1f} s | <= 10 s: {'met' if ok else 'NOT met'} |",
        f"| the same by replaying the day's task events (checkpoints off) | {replay_s:.1f} s | |",
        f"| alert worker: kill -9 -> evaluating again (replays the day's alert groups) | "
        f"{alert_s:.1f} s | <= 10 s: {'met' if alert_s <= 10 else 'NOT met'} |",
        f"| windows' memory: worker VmHWM less an idle worker's "
        f"({figures['worker_vmhwm_mb']} - {figures['idle_worker_mb']} MB) | "
        f"{figures['rss_mb']} MB | <= 300 MB: {'met' if figures['rss_mb'] <= 300 else 'NOT met'} |",
        f"| checkpoint size (all partitions) | {figures['checkpoint_mb']} MB | |",
        f"| first load of the day (all events through one worker) | {load_s:.0f} s | |",
    ]
    text = "\n".join(lines)
    print(text)
    write_result("restart", text)
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
