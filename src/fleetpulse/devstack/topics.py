"""Create fleetpulse's topics with their settings (idempotent)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from fleetpulse.errors import DevstackError
from fleetpulse.kafka_config import admin_config
from fleetpulse.topics import TOPIC_SPECS, Topics

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
        logger.info("created topics %s", ", ".join(created))
    return created


def _single_broker(admin: AdminClient, timeout: float) -> bool:
    return len(admin.list_topics(timeout=timeout).brokers) < 3
