"""The SDK against the real broker: field-by-field delivery, and no loss across an outage."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fleetpulse import Fleet
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack import KafkaNode, ensure_topics
from fleetpulse.testing import to_micros

from .helpers import read_all

pytestmark = pytest.mark.integration


def _work(fleet: Fleet, n: int, sent: list[dict[str, Any]], seed: int) -> None:
    for i in range(n):
        try:
            with fleet.task("triage", input={"seed": seed, "i": i}) as task:
                with task.tool("salesforce", "query", access="read", target=f"account/{i}"):
                    pass
                with task.tool("gmail", "send", access="write", target=f"thread/{i}"):
                    if i % 7 == 0:
                        raise ConnectionError("smtp down")
                task.usage(model="gpt-4o-mini", input_tokens=100 + i, output_tokens=i % 50)
        except ConnectionError:
            pass
        assert task.event is not None
        sent.append(task.event)


def test_ten_thousand_events_from_several_sdk_instances_arrive_field_by_field(
    kafka, fresh_prefix: Topics, tmp_path: Path
) -> None:
    agents, per_agent = 4, 2500
    fleets = [
        Fleet.connect(
            f"agent-{i}",
            agent_version=str(i),
            agent_role="support",
            bootstrap_servers=kafka.bootstrap_servers,
            topic_prefix=fresh_prefix.prefix,
            spool_dir=tmp_path / "spool",
        )
        for i in range(agents)
    ]
    sent: list[list[dict[str, Any]]] = [[] for _ in range(agents)]
    threads = [
        threading.Thread(target=_work, args=(fleets[i], per_agent, sent[i], i))
        for i in range(agents)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in fleets:
        assert f.flush(30) == 0
        f.close()

    received = read_all(kafka.bootstrap_servers, fresh_prefix.task_events, agents * per_agent)
    assert len(received) == agents * per_agent
    by_id = {e["event_id"]: to_micros(e) for e in received}
    assert len(by_id) == agents * per_agent
    for batch in sent:
        for event in batch:
            assert by_id[event["event_id"]] == event
    # keyed by agent: each agent's events stay in their order within one partition
    for i in range(agents):
        mine = [e["task_id"] for e in received if e["agent_id"] == f"agent-{i}"]
        assert mine == [e["task_id"] for e in sent[i]]


def test_broker_outage_spools_to_disk_and_replays_every_event_once(
    own_broker: KafkaNode, tmp_path: Path
) -> None:
    topics = Topics(f"outage-{uuid.uuid4().hex[:8]}.")
    ensure_topics(own_broker.bootstrap_servers, topics)
    fleet = Fleet.connect(
        "resilient",
        bootstrap_servers=own_broker.bootstrap_servers,
        topic_prefix=topics.prefix,
        spool_dir=tmp_path / "spool",
        queue_max_messages=500,  # a small in-memory queue, so the outage reaches the disk
        linger_ms=1,
    )
    ids: list[str] = []

    def emit(n: int) -> None:
        for i in range(n):
            with fleet.task("sync", input=i) as task:
                with task.tool("postgres", "insert", access="write", target=f"row/{i}"):
                    pass
            ids.append(task.event["event_id"])  # type: ignore[index]

    emit(2000)
    assert fleet.flush(30) == 0
    own_broker.stop()  # controlled shutdown, mid-run
    emit(3000)  # 500 fit in memory, the rest must go to disk
    transport = fleet.transport
    assert transport.spooled >= 2000, "the outage should have spooled to disk"  # type: ignore[attr-defined]
    assert any((tmp_path / "spool").rglob("spool-*.log"))
    own_broker.start()
    emit(1000)  # still in spooling mode until the backlog drains: order is kept
    assert fleet.flush(90) == 0
    fleet.close()
    assert transport.spooled == 0  # type: ignore[attr-defined]
    assert not any((tmp_path / "spool").rglob("spool-*.log")), "replayed segments are deleted"

    received = read_all(own_broker.bootstrap_servers, topics.task_events, len(ids))
    counts = Counter(e["event_id"] for e in received)
    assert set(counts) == set(ids)  # nothing lost
    assert len(received) == len(ids), f"{len(received) - len(ids)} duplicates"  # once each
    # one agent, one partition: the replay kept the order in which tasks ended
    assert [e["event_id"] for e in received] == ids


def test_events_left_in_the_spool_are_replayed_by_the_next_process(
    own_broker: KafkaNode, tmp_path: Path
) -> None:
    topics = Topics(f"restart-{uuid.uuid4().hex[:8]}.")
    ensure_topics(own_broker.bootstrap_servers, topics)
    settings = {
        "bootstrap_servers": own_broker.bootstrap_servers,
        "topic_prefix": topics.prefix,
        "spool_dir": tmp_path / "spool",
        "queue_max_messages": 100,
        "message_timeout_ms": 3000,
    }
    own_broker.stop()
    fleet = Fleet.connect("restarted", **settings)
    for i in range(500):
        with fleet.task("job", input=i):
            pass
    fleet.close(timeout=1)  # Kafka is down: everything ends up on disk
    assert any((tmp_path / "spool").rglob("spool-*.log"))

    own_broker.start()
    successor = Fleet.connect("restarted", **settings)
    assert successor.flush(60) == 0
    successor.close()
    received = read_all(own_broker.bootstrap_servers, topics.task_events, 500)
    assert len({e["event_id"] for e in received}) == 500
