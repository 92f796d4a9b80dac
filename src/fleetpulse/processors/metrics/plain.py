"""The metric workers' consumer loop on plain confluent-kafka: the default runtime of
``fleetpulse processors run`` (``--runtime kafka``).

Task events never pass through Python one by one here: the loop hands whole batches to
``ProcessorCore``, whose native ingest pass decodes and groups them in the embedded engine.
The faust runtime (``faust_app.py``) runs this same loop in a thread for the task events and
keeps faust for the low-volume partials stream. Prometheus ``/metrics`` is served on
``processors_web_port`` (bound to ``processors_web_host``, 127.0.0.1 by default).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from prometheus_client import start_http_server

from fleetpulse.contract.config import ProcessorSettings
from fleetpulse.contract.kafka_config import consumer_config
from fleetpulse.processors.loop import StageLoop
from fleetpulse.processors.metrics.worker import ProcessorCore, Record

logger = logging.getLogger(__name__)


class PlainRunner:
    """``topics``: what to consume (default: task events and partials); ``web``: serve
    ``/metrics`` (the faust runtime serves its own)."""

    def __init__(
        self,
        core: ProcessorCore,
        settings: ProcessorSettings,
        *,
        topics: list[str] | None = None,
        web: bool = True,
        index: int = 0,
    ) -> None:
        self.core = core
        self.settings = settings
        self.topics = topics or [core.topics.task_events, core.topics.partials]
        self.web = web and settings.processors_web_port > 0
        self.stop_event = threading.Event()
        self.consumer = Consumer(
            {
                **consumer_config(core.bootstrap, core.group_id, auto_commit=True),
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": 1000,
                "fetch.max.bytes": 64 * 1024 * 1024,
                # what librdkafka fetches ahead: by default up to 64 MB, plus ~250 bytes of
                # bookkeeping per record (a worker catching up holds it all); 16 MB is more
                # than a second of task events at the rate one worker ingests. A soft bound:
                # one fetch in flight may overshoot it
                "queued.max.messages.kbytes": 16 * 1024,
                **self._membership(settings, core.group_id, index),
            }
        )
        self.records = 0
        self.close_core = True  # False when another runtime shares the core and closes it

    @staticmethod
    def _membership(settings: ProcessorSettings, group: str, index: int) -> dict[str, Any]:
        """Static membership when the worker has a stable name: restarted after a crash, it
        gets its partitions back at once (and restores them from its checkpoints) instead of
        waiting out the dead member's session. ``index``: the worker's among those one
        ``processors run --workers N`` starts."""
        if not settings.processors_instance_id:
            return {}
        return {
            "group.instance.id": f"{group}-{settings.processors_instance_id}-{index}",
            "session.timeout.ms": 30_000,
        }

    def step(self, batch: list[Message]) -> None:
        """Apply a batch, then store its offsets: at least once."""
        self.core.process([Record.of(m) for m in batch])
        last: dict[tuple[str, int], int] = {}
        for m in batch:
            last[(m.topic() or "", m.partition() or 0)] = m.offset() or 0
        self.consumer.store_offsets(
            offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        )

    def run(self, *, max_records: int | None = None) -> None:
        c = self.consumer

        def on_assign(consumer: Any, partitions: list[TopicPartition]) -> None:
            # a new partials partition is read again from its beginning by this consumer, so
            # that task events flow while the global scopes catch up (ProcessorCore.assign)
            partials = self.core.topics.partials
            ends: dict[int, tuple[int, int]] | None = None
            try:
                mine = [tp for tp in partitions if tp.topic == partials]
                committed = {tp.partition: tp.offset for tp in consumer.committed(mine, timeout=10)}
                found = {}
                for tp in mine:
                    low, high = consumer.get_watermark_offsets(tp, timeout=10)
                    found[tp.partition] = (
                        committed.get(tp.partition, -1),
                        high if high > low else 0,
                    )
                ends = found
            except KafkaException as exc:  # the core replays them itself, as before
                logger.warning("partials offsets not readable (%s); replaying them first", exc)
            self.core.assign(
                ((tp.topic, tp.partition) for tp in partitions),
                topics=self.topics,
                partials_ends=ends,
            )
            if ends is not None:  # new ones, and those a rebalance interrupted: from the start
                behind = self.core.catching_up()
                for tp in partitions:
                    if tp.topic == partials and tp.partition in behind:
                        tp.offset = OFFSET_BEGINNING
            consumer.assign(partitions)

        if self.web:
            start_http_server(
                self.settings.processors_web_port,
                addr=self.settings.processors_web_host,
                registry=self.core.registry,
            )
        c.subscribe(self.topics, on_assign=on_assign)
        interval = min(
            self.settings.processors_partials_interval_s, self.settings.processors_cadence_s
        )
        loop = StageLoop(
            "metric worker",
            c,
            None,  # the core polls its producer on every tick
            batch_max=self.settings.processors_batch_max,
            # the buffered task events' deadline is checked at least twice per ingest wait
            wait_s=min(
                self.settings.processors_batch_wait_s, self.settings.processors_ingest_wait_s / 2
            ),
            stop_event=self.stop_event,
        )
        loop.every(interval / 2, self.core.tick)
        try:
            self.core.ingest.warm()  # fails here, at start, if the engine cannot load
            loop.run(self.step, max_records=max_records)
            self.records = loop.records
        finally:
            if self.close_core:
                self.core.close()
            c.close()
