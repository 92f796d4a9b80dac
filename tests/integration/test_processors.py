"""The processors on the real broker: exact snapshots, DLQ, two workers, SIGKILL restart."""

from __future__ import annotations

import time
import urllib.request

import pytest
from confluent_kafka import Producer

from fleetpulse.contract.events import AvroCodec
from fleetpulse.devstack import free_port

from .helpers import consumer_from_start
from .processors_support import (
    SnapshotReader,
    Worker,
    produce_fleet,
    read_events,
    wait_for_group,
)


def _bad_records(bootstrap: str, topic: str) -> None:
    """One undecodable value and one that decodes but cannot be counted."""
    codec = AvroCodec()
    good = read_events(bootstrap, topic, 1)[0]
    bad = dict(good, duration_ms=-5.0, event_id="bad-duration")
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, b"\x00garbage", b"agent-00", partition=0)
    p.produce(topic, codec.encode("TaskEvent", bad), b"agent-00", partition=0)
    p.flush(10)


def _dlq(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[dict[str, str]]:
    c = consumer_from_start(bootstrap, topic)
    out: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        for m in c.consume(100, timeout=0.5):
            out.append({k: v.decode() for k, v in (m.headers() or [])})
    c.close()
    return out


@pytest.mark.parametrize("runtime", ["kafka", "faust"])
def test_snapshots_equal_exact_oracle_and_bad_records_go_to_dlq(
    kafka, fresh_prefix, tmp_path, runtime
):
    bootstrap = kafka.bootstrap_servers
    port = free_port()
    worker = Worker(bootstrap, fresh_prefix, tmp_path, web_port=port, runtime=runtime)
    reader = SnapshotReader(bootstrap, fresh_prefix.metrics)
    try:
        n = produce_fleet(bootstrap, fresh_prefix)
        _bad_records(bootstrap, fresh_prefix.task_events)
        events = read_events(bootstrap, fresh_prefix.task_events, n + 1)
        assert len(events) == n + 1  # the fleet plus the decodable bad one
        events = [e for e in events if e["event_id"] != "bad-duration"]
        problems = reader.wait_until_exact(events)
        assert not problems, (list(problems.items())[:5], worker.tail())

        dlq = _dlq(bootstrap, fresh_prefix.dlq, 2)
        assert len(dlq) == 2
        reasons = sorted(h["fleetpulse.reason"] for h in dlq)
        assert "duration_ms is -5.0" in reasons[0] or "duration_ms is -5.0" in reasons[1]
        for h in dlq:
            assert h["fleetpulse.source.topic"] == fresh_prefix.task_events
            assert h["fleetpulse.source.partition"] == "0"
            assert int(h["fleetpulse.source.offset"]) >= 0

        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'fleetpulse_processor_records_total{result="dlq"} 2.0' in page
        assert "fleetpulse_integration_error_rate_5m{integration=" in page
    finally:
        worker.stop()
        reader.close()


def test_two_workers_split_partitions_and_produce_the_same_numbers(kafka, fresh_prefix, tmp_path):
    bootstrap = kafka.bootstrap_servers
    ports = [free_port(), free_port()]
    workers = [Worker(bootstrap, fresh_prefix, tmp_path, web_port=p) for p in ports]
    reader = SnapshotReader(bootstrap, fresh_prefix.metrics)
    try:
        wait_for_group(bootstrap, f"{fresh_prefix.prefix}processors", 2)
        n = produce_fleet(bootstrap, fresh_prefix, seed=7)
        events = read_events(bootstrap, fresh_prefix.task_events, n)
        problems = reader.wait_until_exact(events, timeout=180)
        assert not problems, (list(problems.items())[:5], workers[0].tail(), workers[1].tail())
        # both workers took part
        for p in ports:
            page = urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read()
            ok = [
                line
                for line in page.decode().splitlines()
                if line.startswith('fleetpulse_processor_records_total{result="ok"}')
            ]
            assert ok and float(ok[0].split()[-1]) > 0, page.decode()[:2000]
    finally:
        for w in workers:
            w.stop()
        reader.close()


def test_windows_survive_sigkill(kafka, fresh_prefix, tmp_path):
    """Killed after a checkpoint of its windows and a few more events, the restarted worker (a
    static member: it takes its partitions back at once) restores the checkpoint, replays only
    what came after it, and its snapshots equal the oracle over every event."""
    bootstrap = kafka.bootstrap_servers
    port = free_port()
    named = {"checkpoint_s": 1, "instance_id": "w0"}
    worker = Worker(bootstrap, fresh_prefix, tmp_path, web_port=port, **named)
    reader = SnapshotReader(bootstrap, fresh_prefix.metrics)
    try:
        n1 = produce_fleet(bootstrap, fresh_prefix, seed=1, tasks=15)
        first = read_events(bootstrap, fresh_prefix.task_events, n1)
        assert not reader.wait_until_exact(first), worker.tail()
        _wait_for_line(worker, "checkpointed the windows")
        n3 = produce_fleet(bootstrap, fresh_prefix, seed=3, tasks=3)  # after the checkpoint
        worker.kill()
        n2 = produce_fleet(bootstrap, fresh_prefix, seed=2, tasks=15)
        worker = Worker(bootstrap, fresh_prefix, tmp_path, web_port=port, **named)
        everything = read_events(bootstrap, fresh_prefix.task_events, n1 + n3 + n2)
        problems = reader.wait_until_exact(everything, timeout=180)
        assert not problems, (list(problems.items())[:5], worker.tail())
        assert "from a checkpoint" in worker.log.read_text(), worker.tail()
    finally:
        worker.stop()
        reader.close()


def _wait_for_line(worker: Worker, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log.read_text():
        assert time.monotonic() < deadline, worker.tail()
        time.sleep(0.2)
