"""The metric worker's Kafka edges around the pure engine, shared by the faust worker and the
plain confluent-kafka loop: batch decoding, the DLQ, rebuild on assignment, and publishing
snapshots and partial aggregates.

Two threads, the two phases of the pipeline:

* **ingest** (the runtime's thread: ``process``, ``tick``, ``assign``): buffers task events,
  runs the native pass, dead-letters what it rejects and sends the breaker counts and the
  alert rules' groups at once. It keeps each source partition's watermark and last offset
  itself (``_Marks``), so the next pass never waits for the windows.
* **windows** (``_WindowsThread``): adds each pass's cells to the windows, applies the global
  cells read from the partials topic, and publishes partial aggregates and snapshots at their
  cadence. The engine is only touched under ``self.lock``.

The embedded engine releases the GIL while it runs a pass, so the windows of one pass are
added while the next pass is decoded: on two cores the phases overlap, and a snapshot round
(every ``processors_cadence_s``) never holds back the breakers' and alerts' inputs. The queue
between them is short, so a windows thread that falls behind slows the ingest down instead of
piling up passes. Assignment changes wait for the queue to drain first.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from confluent_kafka import KafkaException, Message, Producer

from fleetpulse.contract.clock import Clock, SystemClock
from fleetpulse.contract.config import ProcessorSettings
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.horizons import parse_horizons
from fleetpulse.contract.kafka_config import producer_config
from fleetpulse.contract.policy import FleetPolicy, load_policy
from fleetpulse.contract.topics import dlq_headers
from fleetpulse.processors.alerts.evaluator import alert_spec
from fleetpulse.processors.alerts.split import route_groups
from fleetpulse.processors.breakers.counts import BreakerCounts
from fleetpulse.processors.breakers.counts import lookback_s as breaker_lookback_s
from fleetpulse.processors.ingest import NativeIngest
from fleetpulse.processors.ingest.cells import Partials
from fleetpulse.processors.ingest.params import Where
from fleetpulse.processors.loop import partition_count
from fleetpulse.processors.memory import Releaser
from fleetpulse.processors.metrics.prom import ProcessorCollector, new_registry
from fleetpulse.processors.produce import produce
from fleetpulse.processors.windows.buckets import US, WindowConfig
from fleetpulse.processors.windows.checkpoint import CheckpointStore, encode_source
from fleetpulse.processors.windows.engine import Engine, EngineConfig
from fleetpulse.processors.windows.replay import replay_partition

logger = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005  # see _WindowsThread


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


def _as_of(value: bytes | None) -> int | None:
    """The source offset a partials cell is complete up to (``Engine.take_partials``), or
    None when the value is not a cell."""
    try:
        as_of = orjson.loads(value or b"")[0]
    except (orjson.JSONDecodeError, IndexError, KeyError, TypeError):
        return None
    return as_of if isinstance(as_of, int) else None


class _Marks:
    """What the ingest thread knows of one source partition: the last offset it aggregated and
    the partition's watermark after it (the windows learn both when they apply the pass)."""

    __slots__ = ("offset", "watermark_us")

    def __init__(self) -> None:
        self.offset = -1
        self.watermark_us: int | None = None


class _WindowsThread:
    """Runs the engine's side of the worker: queued jobs (a pass's cells, a partials record)
    in order, then whatever output is due. A job that raises stops the worker: the error is
    raised again in the ingest thread at its next call, as if it had happened there.

    ``depth``: jobs waiting at most. One: the ingest thread prepares the next pass while this
    thread applies the last, and then waits. A pass of 25,000 events of a sparse fleet is
    ~200,000 cells, so each queued pass is memory: with four (their cells still Python
    tuples then), a worker catching up on a day of 10,000 agents peaked 580 MB higher, for no
    more speed (this thread is then the slower one either way)."""

    def __init__(self, core: ProcessorCore, depth: int = 1, release_s: float = 1.0) -> None:
        # The ingest thread releases the GIL in every engine call and numpy operation of a
        # pass, and must get it back each time; with CPython's default 5 ms switch interval a
        # snapshot round on this thread made each of those waits up to 5 ms, and a pass of
        # 100 ms took 500-700 ms. A shorter interval hands the GIL back sooner.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.core = core
        self.jobs: queue.Queue[Callable[[], object] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.releaser = Releaser(release_s, native=core.ingest.release)
        self.thread = threading.Thread(target=self._run, name="metric-windows", daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], object]) -> None:
        while True:
            self.check()
            try:
                self.jobs.put(job, timeout=0.5)
                return
            except queue.Full:
                continue

    def drain(self) -> None:
        """Wait until every job submitted so far has run."""
        done = threading.Event()
        self.submit(done.set)
        while not done.wait(0.5):
            self.check()
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError("the metric windows thread failed") from self.error
        if not self.thread.is_alive():
            raise RuntimeError("the metric windows thread has stopped")

    def stop(self) -> None:
        if self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join(30)

    def _run(self) -> None:
        core = self.core
        try:
            while True:
                try:
                    job = self.jobs.get(timeout=0.1)
                except queue.Empty:
                    job = _idle
                if job is None:
                    return
                worked = job is not _idle
                with core.lock:
                    job()
                    del job  # a pass's cells, not kept through the snapshot round below
                    core.emit_due()
                self.releaser.maybe(worked=worked)  # what the pass and the round freed
        except BaseException as exc:  # handed to the ingest thread (check)
            logger.exception("metric windows thread failed")
            self.error = exc


def _idle() -> None:
    """No job: only the output that is due."""


class _CheckpointWriter:
    """Writes encoded window checkpoints to Kafka on a thread and producer of its own, so a
    checkpoint of many megabytes never holds up the windows or the breakers' inputs. One
    partition's checkpoint at a time (``ProcessorCore._checkpoint``)."""

    def __init__(self, store: CheckpointStore, producer: Producer) -> None:
        self.store = store
        self.producer = producer
        # (generation, source partition, offset, encoded windows)
        self.jobs: queue.Queue[tuple[int, int, int, bytes] | None] = queue.Queue(1)
        self.thread = threading.Thread(target=self._run, name="metric-checkpoints", daemon=True)
        self.thread.start()

    def busy(self) -> bool:
        return self.jobs.unfinished_tasks > 0

    def submit(self, generation: int, partition: int, offset: int, data: bytes) -> None:
        """Write ``data``, the encoded windows of ``partition`` up to ``offset``."""
        self.jobs.put((generation, partition, offset, data))

    def stop(self) -> None:
        if self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join(60)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            generation, p, offset, data = job
            t0 = time.monotonic()
            try:
                self.store.write(self.producer, p, data, offset=offset, generation=generation)
            except (RuntimeError, KafkaException) as exc:
                logger.warning("checkpoint of partition %d not written: %s", p, exc)
            else:
                logger.info(
                    "checkpointed the windows of partition %d up to offset %d (%.1f MB, %.2f s)",
                    p,
                    offset,
                    len(data) / 1e6,
                    time.monotonic() - t0,
                )
            del job, data  # not held until the next checkpoint: ~30 MB each
            self.jobs.task_done()


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
                cadence_us=int(settings.processors_cadence_s * US),
                long_every_us=int(settings.processors_long_cadence_s * US),
            ),
        )
        self.codec = AvroCodec(registry_url=settings.schema_registry_url, logical_types=False)
        self._encode_snapshot = AvroCodec(registry_url=settings.schema_registry_url).encoder(
            "MetricSnapshot", self.topics.metrics
        )
        self.producer = Producer(producer_config(self.bootstrap, client_id=client_id))
        self.lock = threading.RLock()  # the engine and the assignment
        self._ingest_lock = threading.RLock()  # the buffer, the marks and the native pass
        self.collector = ProcessorCollector(settings.processors_prometheus_max_series)
        self.registry = new_registry(self.collector)
        self._max_future_us = settings.processors_max_future_s * US
        self._replay_since_us = (window.longest_s + window.allowed_lateness_s + 900) * US
        self._next_partials = 0
        self._next_snapshots = 0
        self._next_counts = 0
        self._rebuilding: set[tuple[str, int]] = set()
        # partials partition -> (its committed offset, the offset it is ready at) while the
        # runner's consumer reads it from its beginning (``assign``'s ``partials_ends``)
        self._catching_up: dict[int, tuple[int, int]] = {}
        self._known: set[tuple[str, int]] = set()
        self._marks: dict[int, _Marks] = {}
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
        # checkpoints of the windows, so that a restart replays minutes, not a day
        self._checkpoint_every_us = int(settings.processors_checkpoint_interval_s * US)
        self._next_checkpoint = self.clock.time_us() + self._checkpoint_every_us
        self._checkpointed: dict[int, int] = {}  # partition -> offset of its last checkpoint
        self._checkpoint_due: list[int] = []  # partitions of this round not yet encoded
        self.checkpoints: CheckpointStore | None = None
        self._checkpointer: _CheckpointWriter | None = None
        if self._checkpoint_every_us:
            self.checkpoints = CheckpointStore(
                self.bootstrap,
                state=self.topics.windows_state,
                manifests=self.topics.windows_checkpoints,
                group=self.group_id,
                partitions=partition_count(self.bootstrap, self.topics.windows_state),
            )
            self._checkpointer = _CheckpointWriter(
                self.checkpoints,
                Producer(producer_config(self.bootstrap, client_id=f"{client_id}-checkpoints")),
            )
        self._windows = _WindowsThread(self, release_s=settings.processors_memory_release_s)

    # -- assignment -----------------------------------------------------------------------

    def assign(
        self,
        assigned: Iterable[tuple[str, int]],
        *,
        topics: Iterable[str] | None = None,
        partials_ends: dict[int, tuple[int, int]] | None = None,
    ) -> list[tuple[str, int]]:
        """Adopt a new assignment and rebuild the new partitions (blocking); returns them.

        ``partials_ends``, per partials partition: (its committed offset, its end now). With
        it, the caller's own consumer reads each partition that is ``catching_up()`` again
        from its beginning (``PlainRunner``), and the partition is ready once that consumer
        has handed over the record before its end; only the task-events partitions are
        rebuilt here, so their events flow while the integration and model scopes catch up.
        Records below the committed offset were read by a previous owner (a bad one went to
        the DLQ then). Without it each partials partition is replayed here, by a consumer of
        its own, before this returns."""
        new = self.begin_assignment(assigned, topics=topics)
        manifests = None
        if self.checkpoints is not None and any(t == self.topics.task_events for t, _ in new):
            manifests = self.checkpoints.manifests_of()
        # task events first: their partitions hold every local scope (nearly every snapshot)
        # and feed the partials; a global scope waits for its cells either way
        for topic, p in sorted(new, key=lambda tp: (tp[0] != self.topics.task_events, tp)):
            if topic == self.topics.partials and partials_ends is not None:
                committed, end = partials_ends.get(p, (-1, 0))
                self._catch_up(p, committed, end)
            else:
                self.rebuild(topic, p, manifests=manifests)
        return new

    def _catch_up(self, partition: int, committed: int, end: int) -> None:
        """A new partials partition that the caller's consumer reads from its beginning: ready
        once the record before ``end`` is applied (at once when there is none)."""
        with self.lock:
            self._catching_up[partition] = (committed, end)
        logger.info("catching up %s[%d] to offset %d", self.topics.partials, partition, end)
        if end <= 0:
            self._windows.submit(lambda: self._partials_ready(partition))

    def catching_up(self) -> set[int]:
        """The partials partitions not read up to their end yet."""
        with self.lock:
            return set(self._catching_up)

    def _partials_ready(self, partition: int) -> None:
        """(the windows thread) A partials partition holds every cell up to its end."""
        behind = self._catching_up.pop(partition, None)
        if behind is None:
            return  # revoked meanwhile, or ready already
        g = self.engine.globals.get(partition)
        if g is not None:
            g.ready = True
        self._rebuilding.discard((self.topics.partials, partition))
        logger.info("caught up %s[%d] at offset %d", self.topics.partials, partition, behind[1])

    def begin_assignment(
        self, assigned: Iterable[tuple[str, int]], *, topics: Iterable[str] | None = None
    ) -> list[tuple[str, int]]:
        """Forget partitions no longer ours; return the new ones, which stay not-ready (see
        ``ready_for``) until ``rebuild`` has replayed their history (or, for a partials
        partition caught up by the caller's consumer, ``_partials_ready``). ``topics``: the
        topics this assignment speaks for (default both; the faust runtime assigns each from
        its own consumer)."""
        ours = set(topics or (self.topics.task_events, self.topics.partials))
        with self._ingest_lock:
            self.flush()  # what was read while the partitions were ours
            self._windows.drain()  # and every pass applied, before the windows change hands
            with self.lock:
                wanted = {tp for tp in assigned if tp[0] in ours}
                wanted |= {tp for tp in self._known if tp[0] not in ours}
                for topic, p in self._known - wanted:
                    if topic == self.topics.task_events:
                        self.engine.revoke_source(p)
                        self.breaker_counts.revoke(p)
                        self._marks.pop(p, None)
                    else:
                        self.engine.revoke_partials(p)
                        self._catching_up.pop(p, None)
                    self._rebuilding.discard((topic, p))
                new = sorted(wanted - self._known)
                self._known = wanted
                self._rebuilding |= set(new)
                for topic, p in new:
                    if topic == self.topics.task_events:
                        self.engine.assign_source(p, ready=False)
                        self.breaker_counts.assign(p)
                        self._marks[p] = _Marks()
                    else:
                        self.engine.assign_partials(p, ready=False)
        return new

    def rebuild(
        self, topic: str, partition: int, *, manifests: dict[int, dict[str, Any]] | None = None
    ) -> None:
        """Bring one new partition's windows up to date, then mark it ready: a task-events
        partition from its newest checkpoint (``manifests``: read beforehand, else now) and the
        events after it, a partials partition by replaying the (compacted) cells."""
        since_ms = None
        from_offset = None
        if topic == self.topics.task_events:
            since_ms = (self.clock.time_us() - self._replay_since_us) // 1000
            from_offset = self._restore(partition, manifests)

        # a partials partition holds every version of each cell until compaction catches up:
        # only the newest (highest as_of) of each is applied, once the replay is read
        newest: dict[bytes, tuple[int, int, Record]] = {}

        def apply(batch: list[Message]) -> None:
            if topic != self.topics.partials:
                self._apply([Record.of(m) for m in batch], replay=True)
                return
            for m in batch:
                r = Record.of(m)
                as_of = _as_of(r.value)
                key = r.key or b""
                if as_of is None:
                    newest[key + b"\x00%d" % r.offset] = (0, r.offset, r)  # the engine says why
                elif key not in newest or newest[key][:2] <= (as_of, r.offset):
                    newest[key] = (as_of, r.offset, r)

        end = replay_partition(
            self.bootstrap,
            self.group_id if topic == self.topics.task_events else self.partials_group,
            topic,
            partition,
            since_ms=since_ms,
            on_batch=apply,
            from_offset=from_offset,
            batch_size=self.settings.processors_ingest_batch_max,
        )
        if newest:
            cells = [r for _, _, r in sorted(newest.values(), key=lambda n: n[1])]
            self._windows.submit(lambda: self._apply_cells(cells, replay=True))
        with self._ingest_lock:
            self._windows.drain()  # the replayed passes are in the windows
            with self.lock:
                if topic == self.topics.task_events and partition in self.engine.sources:
                    src = self.engine.sources[partition]
                    src.offset = max(src.offset, end - 1)
                    src.ready = True
                    marks = self._marks.get(partition)
                    if marks is not None:
                        marks.offset = max(marks.offset, end - 1)
                elif partition in self.engine.globals:
                    self.engine.globals[partition].ready = True
                self._rebuilding.discard((topic, partition))
        logger.info("rebuilt %s[%d] up to offset %d", topic, partition, end)

    def _restore(self, partition: int, manifests: dict[int, dict[str, Any]] | None) -> int | None:
        """Adopt the newest checkpoint of ``partition``; the offset to replay from, or None
        (no usable checkpoint: replay the whole window)."""
        if self.checkpoints is None:
            return None
        t0 = time.monotonic()
        if manifests is None:
            manifests = self.checkpoints.manifests_of()
        manifest = manifests.get(partition)
        if manifest is None:
            return None
        cp = self.checkpoints.read(partition, manifest)
        if cp is None:
            return None  # read() said why
        with self._ingest_lock, self.lock:
            if partition not in self._marks:
                return None  # revoked meanwhile
            self.engine.restore_source(cp, ready=False)
            marks = self._marks[partition]
            marks.offset, marks.watermark_us = cp.offset, cp.watermark_us
            self._checkpointed[partition] = cp.offset  # no need to write it again
        logger.info(
            "restored the windows of %s[%d] up to offset %d from a checkpoint (%d scopes, "
            "%.1f MB, %.2f s)",
            self.topics.task_events,
            partition,
            cp.offset,
            len(cp.local) + len(cp.glob),
            int(manifest["bytes"]) / 1e6,
            time.monotonic() - t0,
        )
        return cp.offset + 1

    def ready_for(self, records: Sequence[Record]) -> bool:
        """False while any partition of ``records`` is unknown or still being rebuilt."""
        with self.lock:
            return all(
                (r.topic, r.partition) in self._known
                and (r.topic, r.partition) not in self._rebuilding
                for r in records
            )

    # -- input (the ingest thread) --------------------------------------------------------

    def process(self, records: Sequence[Record]) -> None:
        """Take one batch of consumed records (any mix of task-events and partials). Task
        events wait in a buffer until it holds ``processors_ingest_batch_max`` records or its
        oldest is ``processors_ingest_wait_s`` old (``tick`` flushes it too): one native pass
        costs a few milliseconds whatever its size, so it should see many records at once."""
        self._submit_cells(records, replay=False)
        with self._ingest_lock:
            for r in records:
                if r.topic != self.topics.partials:
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
        with self._ingest_lock:
            pending, self._pending = self._pending, []
            if pending:
                self._ingest(pending, replay=False)

    def _apply(self, records: Sequence[Record], *, replay: bool) -> None:
        events = [r for r in records if r.topic != self.topics.partials]
        if events:
            with self._ingest_lock:
                self._ingest(events, replay=replay)
        self._submit_cells(records, replay=replay)

    def _submit_cells(self, records: Sequence[Record], *, replay: bool) -> None:
        """Hand the partials records among ``records`` to the windows thread."""
        cells = [r for r in records if r.topic == self.topics.partials]
        if cells:
            self._windows.submit(lambda: self._apply_cells(cells, replay=replay))

    def _ingest(self, records: Sequence[Record], *, replay: bool) -> None:
        """One native pass over task events (caller holds the ingest lock): duplicates of
        offsets already aggregated are skipped, rejected records dead-lettered, the breaker
        counts and alert groups sent, and the cells handed to the windows thread."""
        marks = self._marks
        fresh = [
            r for r in records if r.partition in marks and r.offset > marks[r.partition].offset
        ]
        duplicates = sum(1 for r in records if r.partition in marks) - len(fresh)
        if not fresh:
            if duplicates:
                self._windows.submit(lambda: self._count_duplicates(duplicates))
            return
        params = replace(
            self.engine.params(
                {p: m.watermark_us for p, m in marks.items() if m.watermark_us is not None}
            ),
            max_future_us=self._max_future_us,
            breakers=self.breaker_counts.spec,
            # a replayed event's groups went to the alert stage when it was first read
            alerts=None if replay else self._alert_spec,
        )
        started = time.monotonic()
        partials = self.ingest.run(
            [r.partition for r in fresh],
            [r.value or b"" for r in fresh],
            params,
            where=Where(self.topics.task_events, [r.offset for r in fresh]),
        )
        for i, reason in partials.rejected:
            self._dead_letter(fresh[i], reason, replay)
        # the breakers and the alert rules wait for nothing, not even the windows: their
        # groups go out as soon as the pass has them
        oldest_s = params.now_us // US - self._breaker_lookback_s
        self.breaker_counts.add(partials.breaker_calls, partials.breaker_tasks, oldest_s=oldest_s)
        for dest, key, value in self.breaker_counts.take():
            self._produce(self.topics.breaker_counts, value, key, partition=dest)
        if partials.alerts is not None:
            for dest, part in route_groups(partials.alerts, self._alert_partitions).items():
                for value in part.records():  # each agent to its alert worker's partition
                    self._produce(self.topics.alert_cells, value, b"", partition=dest)
        # sent: the windows need only the cells (a sparse pass's groups are ~100 MB of tuples)
        partials.alerts, partials.breaker_calls, partials.breaker_tasks = None, [], []
        self.producer.poll(0)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "ingest: %d events in %.0f ms, after %.0f ms in the buffer",
                len(fresh),
                (time.monotonic() - started) * 1000,
                (started - self._pending_since) * 1000,
            )
        offsets = {r.partition: r.offset for r in fresh}
        for p, prog in partials.progress.items():
            if p in marks:
                marks[p].watermark_us = prog.watermark_us
        for p, offset in offsets.items():
            marks[p].offset = max(marks[p].offset, offset)
        self._windows.submit(lambda: self._apply_pass(partials, offsets, duplicates))

    # -- the windows thread ---------------------------------------------------------------

    def _apply_pass(self, partials: Partials, offsets: dict[int, int], duplicates: int) -> None:
        self.engine.counters.duplicates += duplicates
        self.engine.apply_partials(partials, offsets)

    def _count_duplicates(self, n: int) -> None:
        self.engine.counters.duplicates += n

    def _apply_cells(self, records: Sequence[Record], *, replay: bool) -> None:
        catching_up = self._catching_up
        for r in records:
            if r.partition not in self.engine.globals:
                continue
            # (committed offset, end): below the committed offset a previous owner read it
            committed, end = catching_up.get(r.partition, (-1, -1))
            try:
                self.engine.apply_cell(r.partition, r.key or b"", r.value or b"")
            except ValueError as exc:  # one a previous owner read went to the DLQ then
                self._dead_letter(r, str(exc), replay or r.offset < committed)
            if end >= 0 and r.offset + 1 >= end:
                self._partials_ready(r.partition)

    def _dead_letter(self, r: Record, reason: str, replay: bool) -> None:
        if replay:
            return  # already dead-lettered when it was first read
        self.dlq_count += 1
        logger.warning("dead-lettering %s[%d]@%d: %s", r.topic, r.partition, r.offset, reason)
        headers = dlq_headers(reason, r.topic, r.partition, r.offset, "processors")
        produce(self.producer, self.topics.dlq, r.value, r.key, headers=headers)

    def emit_due(self, *, force: bool = False) -> int:
        """Publish changed partial aggregates and, at the cadence, snapshots (the windows
        thread, holding the lock). Returns how many snapshots went out."""
        now = self.clock.time_us()
        sent = 0
        if force or now >= self._next_partials:
            self._next_partials = now + int(self.settings.processors_partials_interval_s * US)
            for part, key, value in self.engine.take_partials():
                self._produce(self.topics.partials, value, key, partition=part)
        if force or now >= self._next_snapshots:
            self._next_snapshots = now + int(self.settings.processors_cadence_s * US)
            started = time.monotonic()
            # streamed: the records of every scope at once would outweigh the windows
            for s in self.engine.iter_snapshots(force=force):
                self._produce(
                    self.topics.metrics,
                    self._encode_snapshot(s),
                    f"{s['scope_type']}/{s['scope_id']}".encode(),
                )
                self.collector.observe((s,))
                sent += 1
            logger.debug("%d snapshots in %.0f ms", sent, (time.monotonic() - started) * 1000)
        if self._checkpointer is not None:
            if now >= self._next_checkpoint and not self._checkpoint_due:
                self._next_checkpoint = now + self._checkpoint_every_us
                self._checkpoint_due = sorted(self.engine.sources)
            if self._checkpoint_due:
                self._checkpoint(now)
        if force or now >= self._next_counts:
            self._next_counts = now + US // 2
            c = self.engine.counters
            self.collector.records.update(
                ok=c.events - c.late, late=c.late, duplicate=c.duplicates, dlq=self.dlq_count
            )
            self.collector.snapshots = c.snapshots
            self.collector.scopes = self.engine.scope_count()
        self.producer.poll(0)
        return sent

    def _checkpoint(self, now: int) -> None:
        """Encode the next partition of this checkpoint round whose windows moved (the windows
        thread, holding the lock: they must not move meanwhile) and hand it to the checkpoint
        writer. One partition at a time, once the writer is done with the last one: the
        encoded bytes and the producer's copy of them stay one partition's size (~30 MB for
        15,000 scopes of a day), not the whole worker's."""
        writer = self._checkpointer
        if writer is None or writer.busy():
            return  # the last partition is still being written
        done, due = self._checkpointed, self._checkpoint_due
        while due:
            p = due.pop(0)
            src = self.engine.sources.get(p)
            # a partition without new events keeps its last checkpoint: restored, its windows
            # slide to the same figures
            if src is None or not src.ready or src.offset < 0 or done.get(p) == src.offset:
                continue
            data = encode_source(self.engine.checkpoint_source(p))
            done[p] = src.offset
            writer.submit(now, p, src.offset, data)
            return

    # -- output ---------------------------------------------------------------------------

    def tick(self, *, force: bool = False) -> None:
        """Between batches (the ingest thread): run the pass that is due and forget breaker
        counts too old to matter. ``force``: also wait until the windows have every pass and
        publish their output now."""
        now = self.clock.time_us()
        with self._ingest_lock:
            self.flush()
            if now >= self._next_evict:
                self._next_evict = now + 10 * US
                self.breaker_counts.evict(now // US - self._breaker_lookback_s)
        if force:
            self._windows.submit(lambda: self.emit_due(force=True))
            self._windows.drain()
        self._windows.check()
        self.producer.poll(0)

    def _produce(self, topic: str, value: bytes, key: bytes, partition: int = -1) -> None:
        produce(self.producer, topic, value, key, partition)

    def close(self, timeout: float = 10.0) -> None:
        try:
            self.tick(force=True)
        finally:
            self._windows.stop()
            if self._checkpointer is not None:
                self._checkpointer.stop()
            self.ingest.close()
            left = self.producer.flush(timeout)
            if left:
                logger.error("%d processor outputs were not delivered before close", left)
