"""Producing from a processor stage with back-pressure: the one place that waits when
librdkafka's local queue is full (the SDK has its own policy: it spools to disk)."""

from __future__ import annotations

from confluent_kafka import Producer


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    partition: int = -1,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    """Queue one record; when the local queue is full, serve delivery reports until it has
    room (the stage slows down instead of dropping or crashing)."""
    while True:
        try:
            producer.produce(topic, value, key, partition=partition, headers=headers)
            return
        except BufferError:
            producer.poll(0.1)
