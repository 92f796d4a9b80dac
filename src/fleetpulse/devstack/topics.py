"""Create fleetpulse's topics with their settings (idempotent)."""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from fleetpulse.contract.errors import DevstackError
from fleetpulse.contract.kafka_config import admin_config, consumer_config
from fleetpulse.contract.topics import TOPIC_SPECS, Topics

logger = logging.getLogger(__name__)


def ensure_topics(
    bootstrap: str,
    topics: Topics,
    *,
    partitions: dict[str, int] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create every topic of ARCHITECTURE.md that does not exist yet; return the created ones.

    ``partitions`` overrides the default partition count by suffix (``{"task-events": 12}``).
    """
    admin = AdminClient(admin_config(bootstrap))
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(
            topics.name(spec),
            num_partitions=(partitions or {}).get(spec.suffix, spec.partitions),
            replication_factor=1 if _single_broker(admin, timeout) else 3,
            config=dict(spec.config),
        )
        for spec in TOPIC_SPECS
        if topics.name(spec) not in existing
    ]
    created = []
    for name, future in (
        admin.create_topics(wanted, request_timeout=timeout).items() if wanted else []
    ):
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise DevstackError(f"could not create topic {name}: {exc}") from exc
    if created:
        _wait_until_served(bootstrap, created, timeout)
        logger.info("created topics %s", ", ".join(created))
    return created


_NOT_YET = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def _wait_until_served(bootstrap: str, names: list[str], timeout: float) -> None:
    """Return once every partition of the new topics answers an offsets query. Until its
    leader is loaded a new partition answers NOT_LEADER_FOR_PARTITION (even after the metadata
    names a leader), which would fail the first reader or writer that comes right after us."""
    consumer = Consumer(consumer_config(bootstrap, f"fleetpulse-topics-{uuid.uuid4().hex}"))
    deadline = time.monotonic() + timeout
    try:
        for name in names:
            meta = consumer.list_topics(name, timeout=timeout).topics[name]
            for p in meta.partitions:
                while True:
                    try:
                        consumer.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)
                        break
                    except KafkaException as exc:
                        if exc.args[0].code() not in _NOT_YET or time.monotonic() > deadline:
                            raise DevstackError(f"topic {name} is not served yet: {exc}") from exc
                        time.sleep(0.05)
    finally:
        consumer.close()


def _single_broker(admin: AdminClient, timeout: float) -> bool:
    return len(admin.list_topics(timeout=timeout).brokers) < 3
