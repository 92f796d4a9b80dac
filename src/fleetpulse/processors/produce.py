"""Producing from a processor stage with back-pressure: the one place that waits when
librdkafka's local queue is full (the SDK has its own policy: it spools to disk)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    partition: int = -1,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    on_delivery: Callable[[Any, Any], None] | None = None,
) -> None:
    """Queue one record; when the local queue is full, serve delivery reports until it has
    room (the stage slows down instead of dropping or crashing)."""
    while True:
        try:
            if on_delivery is None:
                producer.produce(topic, value, key, partition=partition, headers=headers)
            else:
                producer.produce(
                    topic, value, key, partition=partition, headers=headers, on_delivery=on_delivery
                )
            return
        except BufferError:
            producer.poll(0.1)
