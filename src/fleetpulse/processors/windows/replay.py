"""Rebuilding a partition's windows after a restart or a rebalance.

We rebuild by replaying the input rather than keeping changelog-backed tables, because:

* the state is a pure function of the log: replaying a partition from
  ``offsets_for_times(now - longest horizon - lateness)`` to the group's committed offset gives
  exactly the windows a worker that never stopped would hold (the test kills a worker with
  SIGKILL and checks this);
* a changelog of sketch buckets would be written on every batch, several times the volume of
  the input for short buckets, to save a replay that only happens on restart or rebalance;
* task-events keeps 7 days, far more than the longest window (24 h).

The cost is restart time: a worker replays the last 24 h of its partitions before it publishes
again. That is measured in ``bench/processors.py`` (replay runs at the batch path's speed); more
partitions spread it. The partials topic is compacted, so its owner replays it from the start.

The replay uses its own consumer (assigned, never subscribed, never committing), so the group's
consumer, faust's or ours, simply resumes from the committed offset where the replay stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from fleetpulse.contract.kafka_config import consumer_config

logger = logging.getLogger(__name__)


def replay_partition(
    bootstrap: str,
    group_id: str,
    topic: str,
    partition: int,
    *,
    since_ms: int | None,
    on_batch: Callable[[list[Message]], None],
    from_offset: int | None = None,
    batch_size: int = 5000,
    timeout_s: float = 30.0,
) -> int:
    """Feed ``[start, committed offset)`` to ``on_batch``: ``start`` is the offset at
    ``since_ms`` (or the start), or ``from_offset`` when that is later.

    Returns the committed offset the group's consumer resumes from (the low watermark when the
    group never committed, since the processors read from the earliest offset).
    """
    consumer = Consumer({**consumer_config(bootstrap, group_id), "enable.auto.offset.store": False})
    try:
        tp = TopicPartition(topic, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        committed = consumer.committed([tp], timeout=timeout_s)[0].offset
        end = committed if committed >= 0 else low
        if since_ms is None:
            start = low
        else:
            found = consumer.offsets_for_times([TopicPartition(topic, partition, since_ms)])[0]
            start = found.offset if found.offset >= 0 else high
        start = max(start, low, -1 if from_offset is None else from_offset)
        if start >= end:
            return end
        consumer.assign(
            [TopicPartition(topic, partition, start if start > 0 else OFFSET_BEGINNING)]
        )
        logger.info("replaying %s[%d] offsets %d..%d", topic, partition, start, end - 1)
        position = start
        while position < end:
            # consume() waits until it has as many records as asked: ask for what is left
            msgs = consumer.consume(min(batch_size, end - position), timeout=1.0)
            batch = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"replay of {topic}[{partition}] failed: {err}")
                offset = m.offset() or 0
                if offset >= end:
                    position = end
                    break
                batch.append(m)
                position = offset + 1
            if batch:
                on_batch(batch)
            elif not msgs and consumer.position([tp])[0].offset >= end:
                break  # compaction leaves gaps: the position may pass `end` with no record there
        return end
    finally:
        consumer.close()
