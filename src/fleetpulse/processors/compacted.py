"""Reading a small state topic whole: the window checkpoints' manifests, the alert ledger.
Records are read from the start of every partition to the end each had when reading began
(no consumer group offsets are used or committed)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from fleetpulse.contract.kafka_config import consumer_config


def read_all(
    bootstrap: str, topic: str, timeout_s: float = 30.0, *, group: str = "fleetpulse-state-reader"
) -> Iterator[tuple[str, bytes]]:
    """Every record of a (small, usually compacted) topic, all partitions, from the start to
    the end it has now: (key, value). Raises RuntimeError when it cannot be read in time."""
    consumer = Consumer(
        {
            **consumer_config(bootstrap, group),
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise RuntimeError(f"topic {topic} is missing: run `fleetpulse dev up` first")
        ends: dict[int, int] = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        left = dict(ends)
        deadline = time.monotonic() + timeout_s
        while left:
            msgs = consumer.consume(10_000, timeout=0.2)
            if not msgs:
                # compaction can leave the last offsets without a record: ask where we are
                for tp in consumer.position([TopicPartition(topic, p) for p in left]):
                    if tp.offset >= left[tp.partition]:
                        left.pop(tp.partition)
                if left and time.monotonic() > deadline:
                    raise RuntimeError(f"{topic} was not readable within {timeout_s:.0f} s")
            for m in msgs:
                if m.error() is not None:
                    continue
                p, offset = m.partition() or 0, m.offset() or 0
                if offset >= left.get(p, 0) - 1:
                    left.pop(p, None)
                yield (m.key() or b"").decode(errors="replace"), m.value() or b""
    finally:
        consumer.close()
