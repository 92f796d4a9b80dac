"""``fleetpulse sink run``: Kafka to ClickHouse in large columnar batches, exactly once.

One confluent-kafka consumer in the ``<prefix>sink`` group over task-events, alerts, control,
governance and metrics (``rows.ROUTES`` maps each topic to its tables). A batch closes at
``sink_batch_rows`` records or ``sink_batch_wait_s``; each table gets one insert per batch;
offsets are committed only after every insert of the batch is acknowledged.

Exactly once on replay, three lines deep:

1. *Watermarks*: every row carries its source ``_topic/_partition/_offset``. On assignment the
   sink reads each table's highest inserted offset per partition and skips anything at or below
   it, so a batch inserted but not committed before a crash is not inserted again.
2. *Tokens*: each insert carries ``insert_deduplication_token`` made from the table and the
   offset ranges it covers; a retried insert of the same block is dropped by ClickHouse.
3. *ReplacingMergeTree* on the event id and the analysts' ``*_v`` views (``FINAL``).

While ClickHouse fails, the consumer pauses its partitions and retries with exponential backoff
and jitter; nothing is skipped and nothing is committed. Undecodable records go to the DLQ, and
so do task events that are not valid (contract/events/task_event.py: the processors' definition
too).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from pathlib import Path
from tempfile import gettempdir
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from fleetpulse.contract.clock import Clock, SystemClock
from fleetpulse.contract.config import SinkSettings
from fleetpulse.contract.errors import CodecError
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.events.task_event import read_task_event
from fleetpulse.contract.kafka_config import (
    KafkaLink,
    consumer_config,
    producer_config,
    static_member,
)
from fleetpulse.contract.topics import dlq_headers
from fleetpulse.sink.avro_batch import INVALID, AvroBatch, guard
from fleetpulse.sink.avro_batch import selects as avro_selects
from fleetpulse.sink.backend import Backend, BackendError, Columns, ServerBackend, open_chdb
from fleetpulse.sink.rows import COLUMNS, ROUTES, TABLES, Route, empty

logger = logging.getLogger(__name__)
_UNREACHABLE = (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE)


class SinkRunner:
    def __init__(self, settings: SinkSettings, backend: Backend, *, clock: Clock | None = None):
        self.settings = settings
        self.backend = backend
        self.clock = clock or SystemClock()
        self.max_future_us = settings.processors_max_future_s * 1_000_000
        self.topics = settings.topics
        self.bootstrap = settings.resolved_bootstrap()
        self.codec = AvroCodec(registry_url=settings.schema_registry_url, logical_types=False)
        self.routes: dict[str, Route] = {getattr(self.topics, r.topic_attr): r for r in ROUTES}
        self.link = KafkaLink("fleetpulse-sink")  # one line per connection state change
        self.consumer = Consumer(
            {
                **consumer_config(self.bootstrap, settings.group_id, link=self.link),
                "client.id": "fleetpulse-sink",
                "fetch.max.bytes": 64 * 1024 * 1024,
                # a crashed sink's partitions move on within seconds, not librdkafka's 45 s
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 2_000,
                **static_member("fleetpulse-sink"),
            }
        )
        self.producer = Producer(
            producer_config(self.bootstrap, client_id="fleetpulse-sink", link=self.link)
        )
        # table -> (topic, partition) -> highest offset already in ClickHouse
        self.watermarks: dict[str, dict[tuple[str, int], int]] = {t: {} for t in TABLES}
        self.stop_event = threading.Event()
        self.counters = {"events": 0, "rows": 0, "skipped": 0, "dlq": 0, "retries": 0}
        self._held: list[Message] = []
        shm = Path("/dev/shm")  # the fast path's batch files: memory, not disk, where it exists
        self.avro_dir = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(gettempdir())

    # -- assignment -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._load_watermarks()

    def _load_watermarks(self) -> None:
        db = self.backend.database
        for table in TABLES:
            while True:
                try:
                    rows = self.backend.rows(
                        f"SELECT _topic AS t, _partition AS p, max(_offset) AS o "
                        f"FROM {db}.{table} GROUP BY _topic, _partition"
                    )
                    break
                except BackendError as exc:
                    logger.warning("reading %s watermarks failed (%s); retrying", table, exc)
                    time.sleep(1)
            self.watermarks[table] = {(r["t"], int(r["p"])): int(r["o"]) for r in rows}

    # -- the loop -------------------------------------------------------------------------

    def run(self, *, max_events: int | None = None, drain: bool = False) -> None:
        """Sink until stopped; or until ``max_events`` were read; or, with ``drain``, until
        every assigned partition is written up to its end."""
        self.consumer.subscribe(list(self.routes), on_assign=self._on_assign)
        try:
            while not self.stop_event.is_set():
                batch = self._collect()
                if batch:
                    self._write(batch)
                if max_events is not None and self.counters["events"] >= max_events:
                    break
                if drain and not batch and self._caught_up():
                    break
        finally:
            self.consumer.close()
            self.producer.flush(10)

    def _caught_up(self) -> bool:
        """Every partition of every sunk topic is committed up to its end. All partitions, not
        only the assigned ones: right after a restart the group may hand this member a part
        of them first (a killed member's share moves once its session times out)."""
        if not self.consumer.assignment():
            return False
        partitions = []
        for topic in self.routes:
            md = self.consumer.list_topics(topic, timeout=10).topics[topic]
            partitions += [TopicPartition(topic, p) for p in md.partitions]
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in self.consumer.committed(partitions, timeout=10)
        }
        for tp in partitions:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            done = committed.get((tp.topic, tp.partition), -1)
            if max(done, low) < high:
                return False
        return True

    def _collect(self) -> list[Message]:
        """Records until the batch is full or its time is up."""
        batch, self._held = self._held, []
        deadline = time.monotonic() + self.settings.sink_batch_wait_s
        limit = self.settings.sink_batch_rows
        while len(batch) < limit and not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for m in self.consumer.consume(min(limit - len(batch), 10_000), timeout=min(left, 0.1)):
                err = m.error()
                if err is None:
                    batch.append(m)
                    self.link.ok()
                elif err.code() in _UNREACHABLE:
                    self.link.failed(str(err))
                else:
                    logger.warning("sink consumer: %s", err)
        return batch

    def _write(self, batch: list[Message], *, slow: bool = False) -> None:
        """Decode, filter by watermarks, insert per table, commit. ``slow``: every record
        through Python (the fallback when ClickHouse could not parse a batch); no commit."""
        fast = None if slow else self._fast_batch(batch)
        now_us = self.clock.time_us()
        fast_seen = fast_skipped = 0
        fast_msgs: list[Message] = []
        cols = {t: empty(COLUMNS[t]) for t in TABLES}
        ranges: dict[str, dict[tuple[str, int], list[int]]] = {t: {} for t in TABLES}
        fast_ranges: dict[str, dict[tuple[str, int], list[int]]] = {t: {} for t in TABLES}
        for m in batch:
            topic, p, off = m.topic() or "", m.partition() or 0, m.offset() or 0
            route = self.routes[topic]
            value = m.value() or b""
            tp = (topic, p)
            if fast is not None and topic == self.topics.task_events and fast.accepts(value):
                # ClickHouse decodes it (avro_batch.py); the watermarks still apply
                fast_seen += 1
                fast_msgs.append(m)
                new = [t for t in route.tables if off > self.watermarks[t].get(tp, -1)]
                if not new:
                    fast_skipped += 1
                    continue
                fast.add(p, off, value)
                for t in new:
                    _extend(fast_ranges[t], tp, off)
                continue
            rec, reason = self._decode(value, route.record, topic, p, off, now_us)
            if rec is None:
                self._dead_letter(m, reason or "undecodable")
                continue
            self.counters["events"] += 1
            # watermarks: what a crash left inserted but uncommitted is not inserted again
            new = [t for t in route.tables if off > self.watermarks[t].get(tp, -1)]
            if not new:
                self.counters["skipped"] += 1
                continue
            targets = {t: cols[t] if t in new else empty(COLUMNS[t]) for t in route.tables}
            before = {t: len(cols[t]["_offset"]) for t in new}
            route.add(targets, rec, topic, p, off)
            for t in new:
                if len(cols[t]["_offset"]) > before[t]:  # e.g. a task without tool calls
                    _extend(ranges[t], tp, off)
        if fast is not None and (not len(fast) or self._insert_fast(fast, fast_ranges, now_us)):
            self.counters["events"] += fast_seen
            self.counters["skipped"] += fast_skipped
        elif fast is not None:  # ClickHouse could not parse it: decode here, record by record
            self._write(fast_msgs, slow=True)
        for table in TABLES:
            if cols[table]["_offset"]:
                self._insert(table, cols[table], ranges[table])
        if not slow:
            self._commit(batch)

    def _decode(
        self, value: bytes, record: str, topic: str, p: int, off: int, now_us: int
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(record, None), or (None, why it goes to the DLQ)."""
        if record == "TaskEvent":
            return read_task_event(
                self.codec,
                value,
                now_us=now_us,
                max_future_us=self.max_future_us,
                topic=topic,
                partition=p,
                offset=off,
            )
        try:
            return self.codec.decode(value, record, topic=topic, partition=p, offset=off), None
        except CodecError as exc:
            return None, str(exc)

    def _fast_batch(self, batch: list[Message]) -> AvroBatch | None:
        """An AvroBatch when ClickHouse can decode this batch's task events itself: the
        backend reads local files (chDB), and no task event needs Python's schema resolution
        (an older writer schema, the Confluent framing). Mixing both paths in one batch could
        leave a table's watermark above rows not yet written."""
        if not self.settings.sink_decode_in_clickhouse or not hasattr(
            self.backend, "insert_from_file"
        ):
            return None
        fast = AvroBatch(self.codec)
        for m in batch:
            value = m.value() or b""
            if m.topic() != self.topics.task_events or fast.accepts(value):
                continue
            try:
                self.codec.decode(value, "TaskEvent")
            except CodecError:
                continue  # undecodable either way: it goes to the DLQ
            return None
        return fast

    def _insert_fast(
        self, fast: AvroBatch, ranges: dict[str, dict[tuple[str, int], list[int]]], now_us: int
    ) -> bool:
        """Both tables from one Avro container; False if ClickHouse cannot parse it or it
        holds a record that is not a valid task event (the Python path dead-letters it)."""
        topic = self.topics.task_events
        path = self.avro_dir / f"batch-{os.getpid()}-{uuid.uuid4().hex[:8]}.avro"
        path.write_bytes(fast.container())
        try:
            check = guard(fast.sentinel, now_us, self.max_future_us)
            tables = avro_selects(topic, self.watermarks, check, calls=not ranges["task_events"])
            for table, (columns, select) in tables.items():
                if not ranges[table]:
                    continue
                token = f"{table}|avro|" + _token(ranges[table])
                try:
                    self.backend.insert_from_file(  # type: ignore[attr-defined]
                        table, columns, select, str(path), "Avro", token
                    )
                except BackendError as exc:
                    if INVALID in str(exc):  # the Python path dead-letters it, with its reason
                        logger.info("an invalid task event in a batch; decoding it in Python")
                    else:
                        logger.warning("fast path refused (%s); decoding in Python", exc)
                    return False
                self._advance(table, ranges[table])
                if table == "task_events":
                    self.counters["rows"] += len(fast)
        finally:
            path.unlink(missing_ok=True)
        return True

    def _insert(self, table: str, cols: Columns, ranges: dict[tuple[str, int], list[int]]) -> None:
        token = f"{table}|" + _token(ranges)
        backoff = 0.5
        paused = False
        while True:
            try:
                self.backend.insert(table, cols, dedup_token=token)
                break
            except BackendError as exc:
                self.counters["retries"] += 1
                if not paused:
                    # keep the group membership (poll) without taking in more records
                    self.consumer.pause(self.consumer.assignment())
                    paused = True
                logger.warning("%s; retrying in %.1fs (nothing is skipped)", exc, backoff)
                end = time.monotonic() + backoff * (0.5 + random.random())
                while time.monotonic() < end and not self.stop_event.is_set():
                    m = self.consumer.poll(0.1)
                    if m is not None and m.error() is None:
                        self._held.append(m)  # fetched before the pause: next batch
                if self.stop_event.is_set():
                    raise
                backoff = min(backoff * 2, self.settings.sink_retry_max_s)
        if paused:
            self.consumer.resume(self.consumer.assignment())
        self._advance(table, ranges)
        self.counters["rows"] += len(cols["_offset"])

    def _advance(self, table: str, ranges: dict[tuple[str, int], list[int]]) -> None:
        marks = self.watermarks[table]
        for tp, (_lo, hi) in ranges.items():
            marks[tp] = max(marks.get(tp, -1), hi)

    def _commit(self, batch: list[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for m in batch:
            last[(m.topic() or "", m.partition() or 0)] = m.offset() or 0
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # a rebalance took the partition: its new owner dedups
            logger.warning("offset commit failed (%s); the watermarks prevent duplicates", exc)

    def _dead_letter(self, m: Message, reason: str) -> None:
        self.counters["dlq"] += 1
        logger.warning("dead-lettering %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), reason)
        self.producer.produce(
            self.topics.dlq,
            m.value(),
            m.key(),
            headers=dlq_headers(
                reason, m.topic() or "", m.partition() or 0, m.offset() or 0, "sink"
            ),
        )
        self.producer.poll(0)


def _token(ranges: dict[tuple[str, int], list[int]]) -> str:
    return ",".join(f"{t}:{p}:{lo}-{hi}" for (t, p), (lo, hi) in sorted(ranges.items()))


def _extend(ranges: dict[tuple[str, int], list[int]], tp: tuple[str, int], off: int) -> None:
    r = ranges.get(tp)
    if r is None:
        ranges[tp] = [off, off]
    else:
        r[1] = off


def open_backend(settings: SinkSettings) -> Any:
    """The configured backend: a server when FLEETPULSE_CLICKHOUSE_URL is set, else chDB."""
    if settings.clickhouse_url:
        return ServerBackend(
            settings.clickhouse_url,
            user=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            database=settings.clickhouse_database,
        )
    settings.store_dir.mkdir(parents=True, exist_ok=True)
    return open_chdb(str(settings.store_dir), settings.clickhouse_database)
