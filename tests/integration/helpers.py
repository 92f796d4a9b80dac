"""Reading topics back in integration tests."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from fleetpulse.errors import CodecError
from fleetpulse.events import AvroCodec
from fleetpulse.kafka_config import consumer_config


def consumer_from_start(bootstrap: str, topic: str) -> Consumer:
    """A consumer of its own (fresh group, no commits) assigned to every partition of `topic`
    from offset 0."""
    consumer = Consumer(consumer_config(bootstrap, f"it-{uuid.uuid4().hex[:8]}"))
    md = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    return consumer


def read_all(
    bootstrap: str,
    topic: str,
    expected: int,
    *,
    timeout: float = 60.0,
    idle: float = 2.0,
    logical_types: bool = True,
    skip_undecodable: bool = False,
) -> list[dict[str, Any]]:
    """Decode every TaskEvent on `topic` from the start: stop once `expected` arrived and the
    topic stayed quiet for `idle` seconds (so duplicates would be seen too), or at `timeout`.

    `logical_types=False` gives timestamps as epoch micros (as the processors see them);
    `skip_undecodable` leaves out records the codec rejects instead of failing.
    """
    consumer = consumer_from_start(bootstrap, topic)
    codec = AvroCodec(logical_types=logical_types)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.3)
            for msg in batch:
                assert msg.error() is None, msg.error()
                try:
                    events.append(codec.decode(msg.value() or b"", "TaskEvent"))
                except CodecError:
                    if not skip_undecodable:
                        raise
            if batch:
                last = time.monotonic()
            elif len(events) >= expected and time.monotonic() - last > idle:
                break
    finally:
        consumer.close()
    return events


def process_env(bootstrap: str, topics: Any, workdir: Any, policy: str) -> dict[str, str]:
    """The environment of a fleetpulse subprocess (CLI, agent, service) in a test: this test's
    broker, topic prefix, home and policy (written to ``workdir/policy.yaml``); no other
    FLEETPULSE_ variable leaks in from the caller's shell."""
    (workdir / "policy.yaml").write_text(policy)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_")},
        "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
        "FLEETPULSE_TOPIC_PREFIX": topics.prefix,
        "FLEETPULSE_HOME": str(workdir / "home"),
        "FLEETPULSE_POLICY": str(workdir / "policy.yaml"),
    }
