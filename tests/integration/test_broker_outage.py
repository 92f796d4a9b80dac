"""The broker dies under load and comes back (what ``dev up`` does after a crash): nothing is
lost or duplicated, and every stage's output resumes.

A Kafka node of the test's own (killed with SIGKILL, started again on the same data and ports),
``processors run --stage all`` and ``sink run`` as processes, and an agent in the test emitting
tasks through the SDK before, during and after the outage. Its integration always fails, so
the breaker keeps cycling OPEN -> HALF_OPEN -> OPEN and the error-rate alert repeats every
second: each stage always has something to say. The assertions are on what comes out after
the broker is back, not on how soon.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from fleetpulse import Fleet
from fleetpulse.contract.config import SinkSettings
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack import KafkaNode, ensure_topics
from fleetpulse.sink.query import QueryError, RemoteStore, endpoint

from .helpers import process_env, wait_for

POLICY = """
breakers:
  defaults: {failure_rate_threshold: 0.5, minimum_calls: 5, sliding_window_s: 5,
             wait_in_open_s: 1, permitted_calls_in_half_open: 2}
alerts:
  rules:
    - {name: down-errors, kind: integration_error_rate, threshold: 0.5, min_volume: 2,
       window_s: 10, for_s: 0, repeat_interval_s: 1, severity: critical}
"""
AGENT = "outage-agent"
OUTAGE_S = 5


class Agent(threading.Thread):
    """Tasks through the SDK, about a hundred a second, each with a failing call, until
    stopped (enough for the breakers' 1% probes to come back within seconds)."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(daemon=True)
        self.fleet = fleet
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                with self.fleet.task("probe") as task:
                    with task.tool("down", "call", access="read"):
                        raise RuntimeError("down")
            time.sleep(0.01)


def outputs_after(bootstrap: str, topics: Topics, since_ms: int) -> dict[str, list[Any]]:
    """Records the processors wrote after ``since_ms`` (produce time), per output topic, up to
    the end each partition had when called (the stages keep writing meanwhile)."""
    names = {topics.metrics: "metrics", topics.control: "breakers", topics.alerts: "alerts"}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "outage-test"})
    ends: dict[tuple[str, int], int] = {}
    out: dict[str, list[Any]] = {name: [] for name in names.values()}
    try:
        for topic in names:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                if high > 0:
                    ends[(topic, p)] = high
    except KafkaException:  # a restarted broker without its partition leaders yet: not yet
        consumer.close()
        return out
    consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
    deadline = time.monotonic() + 30
    try:
        while ends and time.monotonic() < deadline:
            for m in consumer.consume(2000, timeout=1.0):
                if m.error() is not None:
                    continue
                tp = (m.topic() or "", m.partition() or 0)
                if tp in ends and m.offset() >= ends[tp] - 1:
                    del ends[tp]
                if m.timestamp()[1] > since_ms:
                    out[names[tp[0]]].append(m)
    finally:
        consumer.close()
    return out


def agent_count_in_24h(bootstrap: str, topics: Topics, since_ms: int) -> int | None:
    """The newest 24 h task count of the agent's snapshots produced after ``since_ms``."""
    codec = AvroCodec(logical_types=False)
    newest = None
    for m in outputs_after(bootstrap, topics, since_ms)["metrics"]:
        snap = codec.decode(m.value(), "MetricSnapshot")
        if snap["scope_type"] == "agent" and snap["horizon_s"] == 86400:
            newest = snap["task_count"]
    return newest


def test_a_broker_outage_under_load_loses_nothing_and_every_stage_resumes(
    own_broker: KafkaNode, tmp_path: Path
) -> None:
    node = own_broker
    bootstrap = node.bootstrap_servers
    topics = Topics(f"outage-{uuid.uuid4().hex[:8]}.")
    ensure_topics(bootstrap, topics)
    env = {
        **process_env(bootstrap, topics, tmp_path, POLICY),
        "FLEETPULSE_DATA_DIR": str(tmp_path / "ch"),
        "FLEETPULSE_PROCESSORS_CADENCE_S": "1",
        "FLEETPULSE_PROCESSORS_LONG_CADENCE_S": "1",
        "FLEETPULSE_PROCESSORS_WEB_PORT": "0",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fleetpulse.cli", *args],
            env=env,
            stdout=(tmp_path / f"{args[0]}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        for args in (["processors", "run", "--stage", "all"], ["sink", "run"])
    ]
    sink = SinkSettings(bootstrap_servers=bootstrap, topic_prefix=topics.prefix,
                        data_dir=tmp_path / "ch")  # fmt: skip

    def stored(sql: str) -> int | None:
        info = endpoint(sink.store_dir)
        try:
            return (
                int(RemoteStore(info["url"], info["token"]).table(sql).rows[0][0]) if info else None
            )
        except (QueryError, OSError, IndexError):
            return None

    fleet = Fleet.connect(
        AGENT,
        bootstrap_servers=bootstrap,
        topic_prefix=topics.prefix,
        spool_dir=tmp_path / "spool",
        governance=False,
    )
    agent = Agent(fleet)
    try:
        agent.start()
        started_ms = int(time.time() * 1000)
        wait_for(
            lambda: all(outputs_after(bootstrap, topics, started_ms).values()),
            "every stage writes before the outage",
            timeout=120,
        )
        node.kill()
        time.sleep(OUTAGE_S)
        node.start()
        back_ms = int(time.time() * 1000)
        resumed = wait_for(
            lambda: (o := outputs_after(bootstrap, topics, back_ms)) and all(o.values()) and o,
            "metrics, breakers and alerts write again after the outage",
            timeout=120,
        )
        assert all(resumed.values())
        time.sleep(2)
        agent.stop.set()
        agent.join(10)
        fleet.flush(60)
        n = fleet.emitted
        assert n > 100 and fleet.transport.delivered == n
        wait_for(lambda: stored("SELECT count() FROM task_events") == n, f"{n} rows stored", 60)
        assert stored("SELECT uniqExact(event_id) FROM task_events") == n
        wait_for(
            lambda: agent_count_in_24h(bootstrap, topics, back_ms) == n,
            f"the agent's 24 h window counts exactly {n} tasks",
            timeout=60,
        )
    finally:
        agent.stop.set()
        fleet.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
