"""Governance costs, side by side in one run (`python bench/governance.py`):

1. SDK: tasks/s with an active bundle and enforced permissions against the same SDK without
   them (in memory, so only the checks are measured).
2. Control API writes (publish a version: produce, acks=all, read back through the log) against
   Kafka's own floor for the same thing: one produce+flush of a record of that size and its
   consumption by a follower on the same broker. Reads (GET /v1/agents) from memory.
3. Propagation: `activate` until an SDK instance's `fleet.config` holds the new version.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from fastapi.testclient import TestClient

from common import broker, machine, write_result
from fleetpulse import Fleet
from fleetpulse.contract.bundles import parse_bundle
from fleetpulse.contract.config import ControlSettings
from fleetpulse.contract.governance import GovernanceState, new_event
from fleetpulse.contract.kafka_config import consumer_config, producer_config
from fleetpulse.contract.policy import FleetPolicy, Permissions
from fleetpulse.contract.topics import Topics
from fleetpulse.control.access import Caller
from fleetpulse.control.api import create_app
from fleetpulse.control.plane import ControlPlane
from fleetpulse.devstack.topics import ensure_topics
from fleetpulse.sdk.governance_log import GovernanceLog
from fleetpulse.testing import memory_fleet

ADMIN = Caller("bench", "engineering")
N_SDK = 30_000
N_WRITES = 200
N_READS = 2_000
N_ACTIVATIONS = 40


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def sdk_rates() -> tuple[float, float]:
    def run(fleet: Fleet) -> float:
        t = time.perf_counter()
        for i in range(N_SDK):
            with fleet.task("t", input=i) as task:
                with task.tool("zendesk", "comment", access="write", target="x"):
                    pass
                with task.tool("crm", "get", access="read"):
                    pass
        return N_SDK / (time.perf_counter() - t)

    plain, _ = memory_fleet("a1")
    b = parse_bundle(
        {
            "agent_id": "a1",
            "role": "support",
            "tools": [
                {"integration": "zendesk", "access": "write"},
                {"integration": "crm", "access": "read"},
            ],
        }
    )
    state = GovernanceState()
    state.apply(
        new_event(
            "agent_version", "a1@1", "published", actor="x", actor_role="e", at_us=1,
            agent_id="a1", version=1, content_hash=b.content_hash,
            payload={"bundle": b.canonical()},
        )
    )  # fmt: skip
    state.apply(
        new_event(
            "label", "a1:production", "activated", actor="y", actor_role="e", at_us=2,
            agent_id="a1", version=1, payload={"label": "production"},
        )
    )  # fmt: skip
    governed, _ = memory_fleet("a1")
    governed.governance = type("Log", (), {"state": state})()  # type: ignore[assignment]
    governed.permissions = Permissions(
        roles={"support": {"zendesk": frozenset({"read", "write"}), "crm": frozenset({"read"})}}
    )
    assert governed.agent_version == "1"
    plain_rates, governed_rates = [], []
    for _ in range(3):  # interleaved, best of three: the VM is noisy
        plain_rates.append(run(plain))
        governed_rates.append(run(governed))
    return max(plain_rates), max(governed_rates)


def kafka_floor(bootstrap: str, topic: str, size: int) -> list[float]:
    """produce + flush (acks=all) and the record's arrival at a consumer that polls like the
    governance follower (fetch.wait.max.ms 20), per write."""
    arrived = threading.Event()
    stop = threading.Event()
    consumer = Consumer(
        {
            **consumer_config(bootstrap, f"floor-{uuid.uuid4().hex[:6]}"),
            "fetch.wait.max.ms": 20,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_END)])

    def follow() -> None:
        while not stop.is_set():
            if consumer.poll(0.1) is not None:
                arrived.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    producer = Producer(producer_config(bootstrap, client_id="floor", linger_ms=0))
    producer.produce(topic, b"warm-up", b"k")
    producer.flush(10)
    time.sleep(1)
    payload = b"x" * size
    out = []
    for _ in range(N_WRITES):
        arrived.clear()
        t = time.perf_counter()
        producer.produce(topic, payload, b"k")
        producer.flush(10)
        arrived.wait(10)
        out.append((time.perf_counter() - t) * 1000)
    stop.set()
    thread.join(2)
    consumer.close()
    return out


def main() -> None:
    sdk_plain, sdk_governed = sdk_rates()
    with broker() as bootstrap:
        topics = Topics(f"bench{uuid.uuid4().hex[:6]}.")
        ensure_topics(bootstrap, topics)
        settings = ControlSettings(bootstrap_servers=bootstrap, topic_prefix=topics.prefix)
        log = GovernanceLog.open(settings)
        plane = ControlPlane(settings, FleetPolicy(), log)
        _, issued = plane.add_principal(ADMIN, "eng", "engineering")
        client = TestClient(create_app(plane, lambda q: []))
        headers = {"Authorization": f"Bearer {issued.token}"}

        def bundle(i: int) -> dict[str, Any]:
            return {"agent_id": "bench", "prompt": f"prompt {i} " + "x" * 400}

        writes = []
        for i in range(N_WRITES):
            t = time.perf_counter()
            r = client.post("/v1/agents", json={"bundle": bundle(i), "message": "m"},
                            headers=headers)  # fmt: skip
            writes.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 201, r.text
        size = len(log.state.audit[-1]["payload_json"]) + 200
        floor = kafka_floor(bootstrap, topics.dlq, size)  # 1 partition, nobody follows it
        reads = []
        for _ in range(N_READS):
            t = time.perf_counter()
            client.get("/v1/agents", headers=headers)
            reads.append((time.perf_counter() - t) * 1000)

        fleet = Fleet.connect("bench", bootstrap_servers=bootstrap, topic_prefix=topics.prefix,
                              guard=False, spool_dir=f"/tmp/fp-bench-{topics.prefix}")  # fmt: skip
        seen = []
        for i in range(N_ACTIVATIONS):
            target = 1 + i % N_WRITES
            t = time.perf_counter()
            plane.activate(ADMIN, "bench", target)
            while fleet.config_version != target:
                time.sleep(0.0005)
            seen.append((time.perf_counter() - t) * 1000)
        fleet.close()
        log.close()

    w50, w99, f50, f99 = pct(writes, 0.5), pct(writes, 0.99), pct(floor, 0.5), pct(floor, 0.99)
    text = f"""# Governance

Machine: {machine()}. One run of `python bench/governance.py`, everything side by side.

| what | fleetpulse | baseline in the same run | ratio |
|---|---:|---:|---:|
| SDK tasks/s, 2 tool calls, active bundle + enforced permissions (in memory) | {sdk_governed:,.0f} | same SDK without them: {sdk_plain:,.0f} | {sdk_governed / sdk_plain:.0%} |
| API write: publish a version ({N_WRITES}x, p50 / p99) | {w50:.1f} / {w99:.1f} ms | Kafka produce+flush (acks=all) + follower sees it, same size: {f50:.1f} / {f99:.1f} ms | {w50 / f50:.1f}x p50 |
| API read: GET /v1/agents ({N_READS}x, p50 / p99) | {pct(reads, 0.5):.2f} / {pct(reads, 0.99):.2f} ms | (served from memory) | |
| `activate` until an SDK's `fleet.config` has it ({N_ACTIVATIONS}x, p50 / p99) | {pct(seen, 0.5):.1f} / {pct(seen, 0.99):.1f} ms | the Kafka floor above: {f50:.1f} ms | {pct(seen, 0.5) / f50:.1f}x p50 |

A write's latency is the log's: it returns once the event is acknowledged by Kafka and folded
back by this process, which is what makes "the log decides" safe across writers. Mean write
{statistics.mean(writes):.1f} ms.
"""  # noqa: E501
    print(text)
    write_result("governance", text)


if __name__ == "__main__":
    main()
