"""The one place librdkafka's dotted settings are spelled out; users never type them.

Every client routes librdkafka's own log lines through the ``fleetpulse.kafka`` logger, so a
library using fleetpulse never gets stray lines on stderr. The retries of a broker that is
still starting (``Coordinator load in progress``, right after ``dev up``) resolve themselves:
they are logged at DEBUG, not as warnings (which Python's last-resort handler would print).
"""

from __future__ import annotations

import logging
from typing import Any

KAFKA_LOGGER = logging.getLogger("fleetpulse.kafka")
_TRANSIENT = (
    "Coordinator load in progress",
    "Coordinator not available",
    "Not coordinator",
    "COORDINATOR_LOAD_IN_PROGRESS",
)


class LibrdkafkaLog:
    """librdkafka's log callback (the ``logger`` setting): lines into `KAFKA_LOGGER`, the
    transient ones at DEBUG."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        text = msg % args if args else msg
        if level > logging.DEBUG and any(t in text for t in _TRANSIENT):
            level = logging.DEBUG
        KAFKA_LOGGER.log(level, "%s", text)


_LOG = LibrdkafkaLog()


def admin_config(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "logger": _LOG}


def consumer_config(
    bootstrap: str, group_id: str, *, from_start: bool = True, auto_commit: bool = False
) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "auto.offset.reset": "earliest" if from_start else "latest",
        "enable.auto.commit": auto_commit,
        "enable.partition.eof": False,
        "logger": _LOG,
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
        "logger": _LOG,
    }
