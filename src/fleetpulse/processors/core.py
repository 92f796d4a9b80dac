"""The processors' Kafka edges around the pure engine, shared by the faust worker and the plain
confluent-kafka loop: batch decoding, the DLQ, rebuild on assignment, and publishing snapshots
and partial aggregates.

Thread model: the runtime calls ``process``/``tick`` from one thread; the faust runtime runs
``assign`` (a blocking replay) in an executor thread, so every entry point takes ``self.lock``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient

from fleetpulse.clock import Clock, SystemClock
from fleetpulse.config import ProcessorSettings
from fleetpulse.errors import CodecError
from fleetpulse.events.codec import AvroCodec
from fleetpulse.events.task_event import check_task_event  # the one definition, shared
from fleetpulse.kafka_config import admin_config, producer_config
from fleetpulse.processors.engine import Engine, EngineConfig
from fleetpulse.processors.prom import ProcessorCollector, new_registry
from fleetpulse.processors.replay import replay_partition
from fleetpulse.processors.windows import US, WindowConfig, parse_horizons
from fleetpulse.topics import dlq_headers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """One consumed record, whichever client read it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def of(cls, m: Message) -> Record:
        return cls(m.topic() or "", m.partition() or 0, m.offset() or 0, m.key(), m.value())


def partition_count(bootstrap: str, topic: str) -> int:
    """How many partitions ``topic`` has; a clear error when it does not exist."""
    md = AdminClient(admin_config(bootstrap)).list_topics(topic, timeout=30)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise RuntimeError(
            f"topic {topic} is missing: run `fleetpulse dev up` (or create the topics) first"
        )
    return len(meta.partitions)


class ProcessorCore:
    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        clock: Clock | None = None,
        client_id: str = "fleetpulse-processors",
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.bootstrap = settings.resolved_bootstrap()
        self.group_id = settings.group_id
        self.clock = clock or SystemClock()
        window = WindowConfig(
            horizons=parse_horizons(settings.processors_horizons),
            allowed_lateness_s=settings.processors_allowed_lateness_s,
        )
        self.engine = Engine(
            self.clock,
            EngineConfig(
                window=window,
                partials_partitions=partition_count(self.bootstrap, self.topics.partials),
            ),
        )
        self.codec = AvroCodec(registry_url=settings.schema_registry_url, logical_types=False)
        self._encode_snapshot = AvroCodec(registry_url=settings.schema_registry_url).encoder(
            "MetricSnapshot", self.topics.metrics
        )
        self.producer = Producer(producer_config(self.bootstrap, client_id=client_id))
        self.lock = threading.RLock()
        self.collector = ProcessorCollector(settings.processors_prometheus_max_series)
        self.registry = new_registry(self.collector)
        self._max_future_us = settings.processors_max_future_s * US
        self._replay_since_us = (window.longest_s + window.allowed_lateness_s + 900) * US
        self._next_partials = 0
        self._next_snapshots = 0
        self._rebuilding: set[tuple[str, int]] = set()
        self._known: set[tuple[str, int]] = set()
        self.dlq_count = 0

    # -- assignment -----------------------------------------------------------------------

    def assign(self, assigned: Iterable[tuple[str, int]]) -> None:
        """Adopt a new assignment and rebuild the new partitions (blocking)."""
        for topic, p in self.begin_assignment(assigned):
            self.rebuild(topic, p)

    def begin_assignment(self, assigned: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        """Forget partitions no longer ours; return the new ones, which stay not-ready (see
        ``ready_for``) until ``rebuild`` has replayed their history."""
        ours = (self.topics.task_events, self.topics.partials)
        wanted = {tp for tp in assigned if tp[0] in ours}
        with self.lock:
            for topic, p in self._known - wanted:
                if topic == self.topics.task_events:
                    self.engine.revoke_source(p)
                else:
                    self.engine.revoke_partials(p)
                self._rebuilding.discard((topic, p))
            new = sorted(wanted - self._known)
            self._known = wanted
            self._rebuilding |= set(new)
            for topic, p in new:
                if topic == self.topics.task_events:
                    self.engine.assign_source(p, ready=False)
                else:
                    self.engine.assign_partials(p, ready=False)
        return new

    def rebuild(self, topic: str, partition: int) -> None:
        """Replay one new partition's history into the engine, then mark it ready."""
        since_ms = None
        if topic == self.topics.task_events:
            since_ms = (self.clock.time_us() - self._replay_since_us) // 1000

        def apply(batch: list[Message]) -> None:
            self._apply([Record.of(m) for m in batch], replay=True)

        end = replay_partition(
            self.bootstrap, self.group_id, topic, partition, since_ms=since_ms, on_batch=apply
        )
        with self.lock:
            if topic == self.topics.task_events and partition in self.engine.sources:
                src = self.engine.sources[partition]
                src.offset = max(src.offset, end - 1)
                src.ready = True
            elif partition in self.engine.globals:
                self.engine.globals[partition].ready = True
            self._rebuilding.discard((topic, partition))
        logger.info("rebuilt %s[%d] up to offset %d", topic, partition, end)

    def ready_for(self, records: Sequence[Record]) -> bool:
        """False while any partition of ``records`` is unknown or still being rebuilt."""
        with self.lock:
            return all(
                (r.topic, r.partition) in self._known
                and (r.topic, r.partition) not in self._rebuilding
                for r in records
            )

    # -- input ----------------------------------------------------------------------------

    def process(self, records: Sequence[Record]) -> None:
        """Apply one batch of consumed records (any mix of task-events and partials)."""
        self._apply(records, replay=False)

    def _apply(self, records: Sequence[Record], *, replay: bool) -> None:
        now = self.clock.time_us()
        by_partition: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        cells: list[Record] = []
        for r in records:
            if r.topic == self.topics.partials:
                cells.append(r)
                continue
            try:
                ev = self.codec.decode(
                    r.value or b"",
                    "TaskEvent",
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                )
            except CodecError as exc:
                self._dead_letter(r, str(exc), replay)
                continue
            problem = check_task_event(ev, now, self._max_future_us)
            if problem:
                self._dead_letter(r, problem, replay)
                continue
            by_partition.setdefault(r.partition, []).append((r.offset, ev))
        with self.lock:
            for p, items in by_partition.items():
                if p in self.engine.sources:
                    self.engine.ingest_batch(p, items)
            for r in cells:
                if r.partition not in self.engine.globals:
                    continue
                try:
                    self.engine.apply_cell(r.partition, r.key or b"", r.value or b"")
                except ValueError as exc:
                    self._dead_letter(r, str(exc), replay)

    def _dead_letter(self, r: Record, reason: str, replay: bool) -> None:
        if replay:
            return  # already dead-lettered when it was first read
        self.dlq_count += 1
        logger.warning("dead-lettering %s[%d]@%d: %s", r.topic, r.partition, r.offset, reason)
        self.producer.produce(
            self.topics.dlq,
            r.value,
            r.key,
            headers=dlq_headers(reason, r.topic, r.partition, r.offset, "processors"),
        )

    # -- output ---------------------------------------------------------------------------

    def tick(self, *, force: bool = False) -> int:
        """Publish changed partial aggregates and, at the cadence, snapshots. Returns how many
        snapshots went out."""
        now = self.clock.time_us()
        sent = 0
        with self.lock:
            if force or now >= self._next_partials:
                self._next_partials = now + int(self.settings.processors_partials_interval_s * US)
                for part, key, value in self.engine.take_partials():
                    self._produce(self.topics.partials, value, key, partition=part)
            if force or now >= self._next_snapshots:
                self._next_snapshots = now + int(self.settings.processors_cadence_s * US)
                snaps = self.engine.snapshots()
                for s in snaps:
                    self._produce(
                        self.topics.metrics,
                        self._encode_snapshot(s),
                        f"{s['scope_type']}/{s['scope_id']}".encode(),
                    )
                sent = len(snaps)
                self.collector.observe(snaps)
            c = self.engine.counters
            self.collector.records.update(
                ok=c.events - c.late, late=c.late, duplicate=c.duplicates, dlq=self.dlq_count
            )
            self.collector.snapshots = c.snapshots
            self.collector.scopes = self.engine.scope_count()
        self.producer.poll(0)
        return sent

    def _produce(self, topic: str, value: bytes, key: bytes, partition: int = -1) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, partition=partition)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.1)

    def close(self, timeout: float = 10.0) -> None:
        self.tick(force=True)
        left = self.producer.flush(timeout)
        if left:
            logger.error("%d processor outputs were not delivered before close", left)
