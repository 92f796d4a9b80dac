"""Follow a state topic from its start: ``fleetpulse.control`` into a `ControlView`, and
``fleetpulse.governance`` into a `GovernanceState` (see `control.governance_log`).

Used by the SDK guard (a daemon thread per agent process), by the breaker stage (to pick up
operator actions and its own states after a restart), by the control API and by the CLI (one
catch-up read). Assign-only: no consumer group, nothing committed; every reader reads the
whole topic.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from fleetpulse.contract.control_state import ControlView
from fleetpulse.contract.errors import CodecError
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.kafka_config import KafkaLink, consumer_config

logger = logging.getLogger(__name__)


class TopicFollower:
    """Reads every record of ``topic`` (Avro ``record``) into ``apply``; ``caught_up`` is set
    once it reached the end the topic had when the follower started.

    Args:
        apply: called with each decoded record in the polling thread; returns whether it
            changed anything.
        fetch_wait_ms: how long the broker may hold a fetch open; this bounds how late a new
            state is seen (librdkafka's default of 500 ms would eat half the 1 s budget).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        record: str,
        apply: Callable[[dict[str, Any]], bool],
        *,
        codec: AvroCodec | None = None,
        fetch_wait_ms: int = 20,
        client_id: str = "fleetpulse-follower",
    ) -> None:
        self.topic = topic
        self.record = record
        self._apply = apply
        self._codec = codec or AvroCodec(logical_types=False)
        self.link = KafkaLink(client_id)
        self._consumer = Consumer(
            {
                **consumer_config(
                    bootstrap, f"fleetpulse-control-{uuid.uuid4().hex}", link=self.link
                ),
                "client.id": client_id,
                "fetch.wait.max.ms": fetch_wait_ms,
                "fetch.error.backoff.ms": 100,
                "reconnect.backoff.max.ms": 1000,
            }
        )
        self.caught_up = threading.Event()
        self._ends: dict[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.undecodable = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, *, timeout: float = 10.0, background: bool = True) -> TopicFollower:
        """Assign every partition from the beginning. With ``background`` (the SDK's way) the
        assignment and the reading happen in a daemon thread that retries until Kafka answers;
        otherwise the assignment happens now (raising if the topic is missing) and the caller
        calls ``poll``."""
        if background:
            self._thread = threading.Thread(
                target=self._run, name=f"fleetpulse-follow-{self.record}", daemon=True
            )
            self._thread.start()
        else:
            self._assign(timeout)
        return self

    def _assign(self, timeout: float) -> None:
        md = self._consumer.list_topics(self.topic, timeout=timeout)
        meta = md.topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise KafkaException(f"topic {self.topic} not found")
        parts = sorted(meta.partitions)
        ends: dict[int, int] = {}
        for p in parts:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=timeout
            )
            if high > low:
                ends[p] = high
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        self._ends = ends
        if not ends:
            self.caught_up.set()

    def wait_caught_up(self, timeout: float) -> bool:
        return self.caught_up.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._consumer.close()

    # -- reading --------------------------------------------------------------------------

    def _run(self) -> None:
        while self._ends is None and not self._stop.is_set():
            try:
                self._assign(5.0)
            except Exception as exc:  # Kafka down or topic missing: the guard fails open
                logger.warning("cannot follow %s yet (%s); retrying", self.topic, exc)
                self._stop.wait(1.0)
        while not self._stop.is_set():
            try:
                self.poll(0.1)
            except Exception:  # never let the guard thread die: log and keep following
                logger.exception("following %s failed; retrying", self.topic)
                time.sleep(0.5)

    def poll(self, timeout: float) -> int:
        """Read what is there (waiting up to ``timeout``); return how many records applied."""
        # poll returns at the first record (consume(n, t) would wait for n or the full t);
        # then take whatever else is already here
        first = self._consumer.poll(timeout)
        msgs = [] if first is None else [first, *self._consumer.consume(500, timeout=0)]
        applied = 0
        for m in msgs:
            if m.error() is not None:
                logger.debug("%s consumer: %s", self.topic, m.error())
                continue
            self.link.ok()
            if m.value() is None:
                continue  # a tombstone: nothing to apply
            try:
                rec = self._codec.decode(
                    m.value() or b"",
                    self.record,
                    topic=m.topic(),
                    partition=m.partition(),
                    offset=m.offset(),
                )
            except CodecError as exc:
                self.undecodable += 1
                logger.warning("ignoring an undecodable %s record: %s", self.record, exc)
                continue
            if self._apply(rec):
                applied += 1
        if not self.caught_up.is_set() and self._ends is not None:
            self._check_caught_up(self._ends)
        return applied

    def _check_caught_up(self, ends: dict[int, int]) -> None:
        # positions, not the offsets seen: compaction may have removed the last offsets
        positions = self._consumer.position([TopicPartition(self.topic, p) for p in ends])
        for tp in positions:
            if tp.offset >= 0 and tp.offset >= ends[tp.partition]:
                del ends[tp.partition]
        if not ends:
            self.caught_up.set()


class ControlFollower(TopicFollower):
    """Follows ``fleetpulse.control`` into ``view`` (breakers and pauses)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        view: ControlView | None = None,
        *,
        codec: AvroCodec | None = None,
        fetch_wait_ms: int = 20,
        client_id: str = "fleetpulse-control",
    ) -> None:
        self.view = view or ControlView()
        super().__init__(
            bootstrap,
            topic,
            "ControlMessage",
            self.view.apply,
            codec=codec,
            fetch_wait_ms=fetch_wait_ms,
            client_id=client_id,
        )

    def start(self, *, timeout: float = 10.0, background: bool = True) -> ControlFollower:
        super().start(timeout=timeout, background=background)
        return self


def catch_up(follower: TopicFollower, timeout: float) -> None:
    """Poll ``follower`` (started with ``background=False``) until it reached the end."""
    deadline = time.monotonic() + timeout
    while not follower.caught_up.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not read {follower.topic} to its end within {timeout:g}s")
        follower.poll(0.2)


def read_control(bootstrap: str, topic: str, *, timeout: float = 15.0) -> ControlView:
    """Read the whole control topic once (what the CLI shows)."""
    follower = ControlFollower(bootstrap, topic, client_id="fleetpulse-cli")
    try:
        follower.start(timeout=timeout, background=False)
        catch_up(follower, timeout)
        return follower.view
    finally:
        follower.close()
