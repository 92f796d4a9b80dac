"""How the SDK hands bytes to Kafka without losing any.

`KafkaTransport` wraps one idempotent confluent-kafka producer (acks=all) and a `Spool`:

* normal mode: ``produce()`` goes straight into librdkafka's in-memory queue;
* when that queue is full (the broker is unreachable for a while) or a delivery fails, the
  transport switches to spooling: this and every later event is appended to the spool, so
  order is kept;
* a background thread serves delivery reports and, whenever the producer's queue has room
  again, replays the spool in order; when the spool is empty it switches back.

Events accepted by ``produce()`` are delivered at least once: a record handed to Kafka from
the spool that fails is appended to the spool again (behind newer ones), and a record that
was in flight when the process closed may be written twice. Consumers dedup on ``event_id``.
What the process still holds in memory is lost only on SIGKILL; ``close()`` spools it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from fleetpulse.contract.kafka_config import KafkaLink
from fleetpulse.sdk.spool import Spool

logger = logging.getLogger(__name__)

_REPLAY_BATCH = 1000


class Transport(Protocol):
    """Where the SDK's encoded events go. `fleetpulse.testing.MemoryTransport` is a fake."""

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None: ...
    def flush(self, timeout: float) -> int: ...
    def close(self, timeout: float) -> None: ...


class KafkaTransport:
    """An idempotent producer that spools to disk when Kafka cannot take events."""

    def __init__(self, config: dict[str, Any], spool: Spool, *, poll_interval: float = 0.05):
        self._spool = spool
        self._lock = threading.Lock()
        self._spooling = len(spool) > 0
        self._queue_max = int(config["queue.buffering.max.messages"])
        self.delivered = 0
        self.failed = 0
        self._last_error: str | None = None
        self._replay_not_before = 0.0
        self._backoff = 0.5
        self._producer = Producer({**config, "on_delivery": self._on_delivery})
        link = config.get("logger")
        self._link = link if isinstance(link, KafkaLink) else None
        self._stop = threading.Event()
        self._poll_interval = poll_interval
        self._thread = threading.Thread(target=self._run, name="fleetpulse-producer", daemon=True)
        self._thread.start()

    # -- the hot path ---------------------------------------------------------------------

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        if not self._spooling:
            try:
                self._producer.produce(topic, value, key)
                return
            except BufferError:
                logger.warning(
                    "producer queue full (%d events): Kafka is not taking events; spooling to %s",
                    len(self._producer),
                    self._spool.directory,
                )
        with self._lock:
            if self._spooling or not self._try_direct(topic, key, value):
                self._spooling = True
                self._spool.append(topic, key, value)

    def _try_direct(self, topic: str, key: bytes | None, value: bytes) -> bool:
        try:
            self._producer.produce(topic, value, key)
            return True
        except BufferError:
            return False

    # -- delivery reports -----------------------------------------------------------------

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            if self._link is not None:
                self._link.ok()
            return
        self._failed(err, msg)

    def _on_replay_delivery(self, segment: int, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self._failed(err, msg)
        self._spool.settle(segment)

    def _failed(self, err: KafkaError, msg: Message) -> None:
        self.failed += 1
        self._last_error = err.str()
        # the event is not lost: back to disk, to be replayed once Kafka takes events again
        with self._lock:
            self._spooling = True
            self._spool.append(msg.topic() or "", msg.key(), msg.value() or b"")
        self._replay_not_before = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 30.0)
        if self.failed == 1 or self.failed % 1000 == 0:
            logger.warning(
                "delivery to %s failed (%s); %d failures so far, events are spooled",
                msg.topic(),
                err.str(),
                self.failed,
            )

    # -- background thread ----------------------------------------------------------------

    def _run(self) -> None:
        last_sync = time.monotonic()
        while not self._stop.is_set():
            self._producer.poll(self._poll_interval)
            self._replay()
            now = time.monotonic()
            if now - last_sync > 1.0:
                self._spool.sync()
                last_sync = now

    def _replay(self) -> None:
        """Move spooled records into the producer while its queue has room, oldest first."""
        if not self._spooling or time.monotonic() < self._replay_not_before:
            return
        while len(self._producer) < self._queue_max // 2:
            batch = self._spool.take(_REPLAY_BATCH)
            for i, rec in enumerate(batch):
                try:
                    self._producer.produce(
                        rec.topic,
                        rec.value,
                        rec.key,
                        on_delivery=functools.partial(self._on_replay_delivery, rec.segment),
                    )
                except BufferError:
                    self._spool.give_back(batch[i:])
                    return
            with self._lock:
                if len(self._spool) == 0:
                    self._spooling = False
                    self._backoff = 0.5
                    logger.info("spool drained: producing directly to Kafka again")
                    return

    # -- public ---------------------------------------------------------------------------

    @property
    def spooled(self) -> int:
        """Events on disk waiting for Kafka."""
        return len(self._spool)

    @property
    def in_memory(self) -> int:
        return len(self._producer)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait until every event (spooled ones too) is acknowledged; return how many are not."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = self._producer.flush(min(0.5, max(deadline - time.monotonic(), 0)))
            pending = remaining + len(self._spool) + self._spool.unsettled
            if pending == 0 or time.monotonic() >= deadline:
                return pending
            self._replay_not_before = 0.0

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what can be delivered within `timeout`, spool the rest, stop."""
        left = self.flush(timeout)
        self._stop.set()
        self._thread.join()
        if len(self._producer):
            # Kafka is not answering: take the queued events back from librdkafka; their
            # delivery reports (purged) append them to the spool for the next run
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._producer.flush(5)
        self._spool.close()
        if left:
            logger.warning(
                "closed with %d events not acknowledged by Kafka; they are in the spool at %s "
                "and will be replayed by the next SDK instance",
                left,
                self._spool.directory,
            )
