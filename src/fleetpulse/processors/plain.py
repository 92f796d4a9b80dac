"""The same processors on a plain confluent-kafka consumer loop, without faust.

It exists to measure what faust's per-message machinery costs (``bench/processors.py`` runs both
on the same input) and as a fallback runtime (``fleetpulse processors run --runtime kafka``) for
deployments that need the throughput. Same core, same outputs, same rebuild on assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from fleetpulse.config import ProcessorSettings
from fleetpulse.kafka_config import consumer_config
from fleetpulse.processors.core import ProcessorCore, Record

logger = logging.getLogger(__name__)


class PlainRunner:
    def __init__(self, core: ProcessorCore, settings: ProcessorSettings) -> None:
        self.core = core
        self.settings = settings
        self.stop_event = threading.Event()
        self.consumer = Consumer(
            {
                **consumer_config(core.bootstrap, core.group_id, auto_commit=True),
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": 1000,
                "fetch.max.bytes": 64 * 1024 * 1024,
            }
        )
        self.records = 0

    def run(self, *, max_records: int | None = None) -> None:
        c = self.consumer

        def on_assign(consumer: Any, partitions: list[TopicPartition]) -> None:
            self.core.assign((tp.topic, tp.partition) for tp in partitions)

        c.subscribe([self.core.topics.task_events, self.core.topics.partials], on_assign=on_assign)
        interval = min(
            self.settings.processors_partials_interval_s, self.settings.processors_cadence_s
        )
        next_tick = time.monotonic()
        try:
            while not self.stop_event.is_set():
                msgs = c.consume(
                    self.settings.processors_batch_max,
                    timeout=self.settings.processors_batch_wait_s,
                )
                batch = [m for m in msgs if m.error() is None]
                for m in msgs:
                    if m.error() is not None:
                        logger.warning("consumer error: %s", m.error())
                if batch:
                    self.core.process([Record.of(m) for m in batch])
                    last: dict[tuple[str, int], int] = {}
                    for m in batch:
                        last[(m.topic() or "", m.partition() or 0)] = m.offset() or 0
                    # stored only after applying: at least once
                    c.store_offsets(
                        offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
                    )
                    self.records += len(batch)
                if time.monotonic() >= next_tick:
                    self.core.tick()
                    next_tick = time.monotonic() + interval / 2
                if max_records is not None and self.records >= max_records:
                    break
        finally:
            self.core.close()
            c.close()
