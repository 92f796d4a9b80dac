"""The one place librdkafka's dotted settings are spelled out; users never type them.

Every client routes librdkafka's own log lines through the ``fleetpulse.kafka`` logger, so a
library using fleetpulse never gets stray lines on stderr.
"""

from __future__ import annotations

import logging
from typing import Any

KAFKA_LOGGER = logging.getLogger("fleetpulse.kafka")


def admin_config(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "logger": KAFKA_LOGGER}


def consumer_config(
    bootstrap: str, group_id: str, *, from_start: bool = True, auto_commit: bool = False
) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "auto.offset.reset": "earliest" if from_start else "latest",
        "enable.auto.commit": auto_commit,
        "enable.partition.eof": False,
        "logger": KAFKA_LOGGER,
    }


def producer_config(
    bootstrap: str,
    *,
    client_id: str,
    queue_max_messages: int = 100_000,
    linger_ms: int = 5,
    compression: str = "lz4",
    message_timeout_ms: int = 120_000,
) -> dict[str, Any]:
    """An idempotent producer (acks=all, ordered retries) tuned for many small events."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,  # implies acks=all, retries, ordered per partition
        "acks": "all",
        "compression.type": compression,
        "linger.ms": linger_ms,
        "batch.num.messages": 10_000,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": queue_max_messages,
        "queue.buffering.max.kbytes": 512 * 1024,
        "message.timeout.ms": message_timeout_ms,
        "socket.keepalive.enable": True,
        "reconnect.backoff.max.ms": 2000,
        "logger": KAFKA_LOGGER,
    }
