"""The processors' Kafka edges around the pure engine, shared by the faust worker and the plain
confluent-kafka loop: batch decoding, the DLQ, rebuild on assignment, and publishing snapshots
and partial aggregates.

Thread model: the runtime calls ``process``/``tick`` from one thread; the faust runtime runs
``assign`` (a blocking replay) in an executor thread, so every entry point takes ``self.lock``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from confluent_kafka import Message, Producer

from fleetpulse.contract.clock import Clock, SystemClock
from fleetpulse.contract.config import ProcessorSettings
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.horizons import parse_horizons
from fleetpulse.contract.kafka_config import producer_config
from fleetpulse.contract.policy import FleetPolicy, load_policy
from fleetpulse.contract.topics import dlq_headers
from fleetpulse.processors.alerts.evaluator import alert_spec
from fleetpulse.processors.breakers.counts import BreakerCounts
from fleetpulse.processors.breakers.counts import lookback_s as breaker_lookback_s
from fleetpulse.processors.ingest import NativeIngest
from fleetpulse.processors.ingest.params import Where
from fleetpulse.processors.loop import partition_count
from fleetpulse.processors.metrics.prom import ProcessorCollector, new_registry
from fleetpulse.processors.produce import produce
from fleetpulse.processors.windows.buckets import US, WindowConfig
from fleetpulse.processors.windows.engine import Engine, EngineConfig
from fleetpulse.processors.windows.replay import replay_partition

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


class ProcessorCore:
    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        policy: FleetPolicy | None = None,
        clock: Clock | None = None,
        client_id: str = "fleetpulse-processors",
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.bootstrap = settings.resolved_bootstrap()
        self.group_id = settings.group_id
        self.partials_group = (
            self.group_id
        )  # the faust runtime reads partials in a group of its own
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
        self._pending: list[Record] = []
        self._pending_since = 0.0
        self.ingest = NativeIngest(self.codec, native_min=settings.processors_ingest_native_min)
        self.dlq_count = 0
        # the breakers' counts come out of the same pass (breakers/counts.py)
        policy = policy or load_policy(settings.policy)
        self.breaker_counts = BreakerCounts(
            policy.breakers, partition_count(self.bootstrap, self.topics.breaker_counts)
        )
        self._breaker_lookback_s = breaker_lookback_s(policy)
        self._next_evict = 0
        # and the alert rules' groups, when there are rules
        self._alert_spec = alert_spec(policy.alerts) if policy.alerts.rules else None
        self._alert_partitions = partition_count(self.bootstrap, self.topics.alert_cells)

    # -- assignment -----------------------------------------------------------------------

    def assign(
        self, assigned: Iterable[tuple[str, int]], *, topics: Iterable[str] | None = None
    ) -> None:
        """Adopt a new assignment and rebuild the new partitions (blocking)."""
        for topic, p in self.begin_assignment(assigned, topics=topics):
            self.rebuild(topic, p)

    def begin_assignment(
        self, assigned: Iterable[tuple[str, int]], *, topics: Iterable[str] | None = None
    ) -> list[tuple[str, int]]:
        """Forget partitions no longer ours; return the new ones, which stay not-ready (see
        ``ready_for``) until ``rebuild`` has replayed their history. ``topics``: the topics this
        assignment speaks for (default both; the faust runtime assigns each from its own
        consumer)."""
        ours = set(topics or (self.topics.task_events, self.topics.partials))
        wanted = {tp for tp in assigned if tp[0] in ours}
        with self.lock:
            wanted |= {tp for tp in self._known if tp[0] not in ours}
            for topic, p in self._known - wanted:
                if topic == self.topics.task_events:
                    self.engine.revoke_source(p)
                    self.breaker_counts.revoke(p)
                else:
                    self.engine.revoke_partials(p)
                self._rebuilding.discard((topic, p))
            new = sorted(wanted - self._known)
            self._known = wanted
            self._rebuilding |= set(new)
            for topic, p in new:
                if topic == self.topics.task_events:
                    self.engine.assign_source(p, ready=False)
                    self.breaker_counts.assign(p)
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
            self.bootstrap,
            self.group_id if topic == self.topics.task_events else self.partials_group,
            topic,
            partition,
            since_ms=since_ms,
            on_batch=apply,
            batch_size=self.settings.processors_ingest_batch_max,
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
        """Take one batch of consumed records (any mix of task-events and partials). Task
        events wait in a buffer until it holds ``processors_ingest_batch_max`` records or its
        oldest is ``processors_ingest_wait_s`` old (``tick`` flushes it too): one native pass
        costs a few milliseconds whatever its size, so it should see many records at once."""
        with self.lock:
            for r in records:
                if r.topic == self.topics.partials:
                    self._apply_cell(r, replay=False)
                else:
                    if not self._pending:
                        self._pending_since = time.monotonic()
                    self._pending.append(r)
            if self._pending and (
                len(self._pending) >= self.settings.processors_ingest_batch_max
                or time.monotonic() - self._pending_since >= self.settings.processors_ingest_wait_s
            ):
                self.flush()

    def flush(self) -> None:
        """Aggregate the buffered task events now."""
        with self.lock:
            pending, self._pending = self._pending, []
            if pending:
                self._ingest(pending, replay=False)

    def _apply(self, records: Sequence[Record], *, replay: bool) -> None:
        with self.lock:
            events = [r for r in records if r.topic != self.topics.partials]
            if events:
                self._ingest(events, replay=replay)
            for r in records:
                if r.topic == self.topics.partials:
                    self._apply_cell(r, replay=replay)

    def _ingest(self, records: Sequence[Record], *, replay: bool) -> None:
        """One native pass over task events (caller holds the lock): duplicates of offsets
        already applied are skipped, rejected records dead-lettered, the cells applied."""
        sources = self.engine.sources
        fresh = [
            r for r in records if r.partition in sources and r.offset > sources[r.partition].offset
        ]
        self.engine.counters.duplicates += sum(1 for r in records if r.partition in sources) - len(
            fresh
        )
        if not fresh:
            return
        params = replace(
            self.engine.params(),
            max_future_us=self._max_future_us,
            breakers=self.breaker_counts.spec,
            # a replayed event's groups went to the alert stage when it was first read
            alerts=None if replay else self._alert_spec,
        )
        partials = self.ingest.run(
            [r.partition for r in fresh],
            [r.value or b"" for r in fresh],
            params,
            where=Where(self.topics.task_events, [r.offset for r in fresh]),
        )
        for i, reason in partials.rejected:
            self._dead_letter(fresh[i], reason, replay)
        # the breakers and the alert rules wait for nothing, not even the windows below:
        # their groups go out as soon as the pass has them
        oldest_s = params.now_us // US - self._breaker_lookback_s
        self.breaker_counts.add(partials.breaker_calls, partials.breaker_tasks, oldest_s=oldest_s)
        for dest, key, value in self.breaker_counts.take():
            self._produce(self.topics.breaker_counts, value, key, partition=dest)
        if partials.alerts is not None:
            partials.alerts.events = sum(p.events for p in partials.progress.values())
            dest = fresh[0].partition % self._alert_partitions
            for value in partials.alerts.records():
                self._produce(self.topics.alert_cells, value, b"", partition=dest)
        self.producer.poll(0)
        self.engine.apply_partials(partials, {r.partition: r.offset for r in fresh})

    def _apply_cell(self, r: Record, *, replay: bool) -> None:
        if r.partition not in self.engine.globals:
            return
        try:
            self.engine.apply_cell(r.partition, r.key or b"", r.value or b"")
        except ValueError as exc:
            self._dead_letter(r, str(exc), replay)

    def _dead_letter(self, r: Record, reason: str, replay: bool) -> None:
        if replay:
            return  # already dead-lettered when it was first read
        self.dlq_count += 1
        logger.warning("dead-lettering %s[%d]@%d: %s", r.topic, r.partition, r.offset, reason)
        headers = dlq_headers(reason, r.topic, r.partition, r.offset, "processors")
        produce(self.producer, self.topics.dlq, r.value, r.key, headers=headers)

    # -- output ---------------------------------------------------------------------------

    def tick(self, *, force: bool = False) -> int:
        """Publish changed partial aggregates and, at the cadence, snapshots. Returns how many
        snapshots went out."""
        now = self.clock.time_us()
        sent = 0
        with self.lock:
            self.flush()
            if force or now >= self._next_partials:
                self._next_partials = now + int(self.settings.processors_partials_interval_s * US)
                for part, key, value in self.engine.take_partials():
                    self._produce(self.topics.partials, value, key, partition=part)
            if force or now >= self._next_snapshots:
                self._next_snapshots = now + int(self.settings.processors_cadence_s * US)
                # streamed: the records of every scope at once would outweigh the windows
                for s in self.engine.iter_snapshots():
                    self._produce(
                        self.topics.metrics,
                        self._encode_snapshot(s),
                        f"{s['scope_type']}/{s['scope_id']}".encode(),
                    )
                    self.collector.observe((s,))
                    sent += 1
            if now >= self._next_evict:
                self._next_evict = now + 10 * US
                self.breaker_counts.evict(now // US - self._breaker_lookback_s)
            c = self.engine.counters
            self.collector.records.update(
                ok=c.events - c.late, late=c.late, duplicate=c.duplicates, dlq=self.dlq_count
            )
            self.collector.snapshots = c.snapshots
            self.collector.scopes = self.engine.scope_count()
        self.producer.poll(0)
        return sent

    def _produce(self, topic: str, value: bytes, key: bytes, partition: int = -1) -> None:
        produce(self.producer, topic, value, key, partition)

    def close(self, timeout: float = 10.0) -> None:
        self.tick(force=True)
        self.ingest.close()
        left = self.producer.flush(timeout)
        if left:
            logger.error("%d processor outputs were not delivered before close", left)
