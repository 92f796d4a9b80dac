"""The breaker stage of the processors: breaker-count cells in, breaker decisions on
fleetpulse.control out.

It runs beside the metric windows (``fleetpulse processors run`` starts both), in its own
consumer group and its own process, because its job is latency, not volume: a breaker must
open within a second of the event that crossed its threshold, whatever else the processors
are doing. It never reads a task event: the ingest pass of the metric workers decodes each
event once and sends the calls, failures and slow calls per (breaker, source partition,
second) as *cells* to ``processors.breaker-counts``, on the partition that owns the breaker
(``breakers/counts.py``).

Per worker of the ``<prefix>breakers`` group, for each breaker-counts partition it owns: set
the cells into each breaker's window (cells replace, never add, so replays change nothing),
run the state machine (``machine.py``) after every batch and on a short timer, and publish
every transition to the compacted control topic, keyed by breaker id.

State across restarts: decisions live in the control topic (read back in full at start, with
operators' FORCED_OPEN / DISABLED / resets); windows are rebuilt by reading breaker-counts from
now minus the longest breaker window (nothing is committed: only recent calls matter).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import orjson
from confluent_kafka import OFFSET_END, Consumer, Message, Producer, TopicPartition

from fleetpulse.contract.breakers import (
    BreakerState,
    State,
    from_control,
    next_sequence,
    parse_breaker_id,
    to_control,
)
from fleetpulse.contract.clock import Clock, SystemClock
from fleetpulse.contract.config import ProcessorSettings
from fleetpulse.contract.control_state import ControlRecord, ControlView
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.kafka_config import consumer_config, producer_config, static_member
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.processors.breakers.counts import BreakerPolicies, lookback_s, owner_partition
from fleetpulse.processors.breakers.machine import US, Breaker
from fleetpulse.processors.loop import StageLoop, partition_count
from fleetpulse.processors.produce import produce
from fleetpulse.sdk.topic_follower import ControlFollower

logger = logging.getLogger(__name__)

_TIMER_S = 0.05  # OPEN -> HALF_OPEN and half-open timeouts are checked this often
_EVICT_S = 10.0


class BreakerStage:
    """One worker of the breaker stage. ``run()`` until ``stop_event`` is set."""

    def __init__(
        self,
        settings: ProcessorSettings,
        policy: FleetPolicy,
        *,
        clock: Clock | None = None,
        client_id: str = "fleetpulse-breakers",
    ) -> None:
        self.settings = settings
        self.policies = BreakerPolicies(policy.breakers)
        self.topics = settings.topics
        self.bootstrap = settings.resolved_bootstrap()
        self.clock = clock or SystemClock()
        self.lookback_s = lookback_s(policy)
        self.partitions = partition_count(self.bootstrap, self.topics.breaker_counts)
        self._encode_control = AvroCodec(registry_url=settings.schema_registry_url).encoder(
            "ControlMessage", self.topics.control
        )
        self.producer = Producer(producer_config(self.bootstrap, client_id=client_id, linger_ms=1))
        self.consumer = Consumer(
            {
                **consumer_config(self.bootstrap, settings.breakers_group_id),
                "client.id": client_id,
                "fetch.wait.max.ms": settings.breakers_fetch_wait_ms,
                "fetch.max.bytes": 64 * 1024 * 1024,
                # a crashed worker's breakers have no decider until the group notices: keep
                # that short (librdkafka's default is 45 s; 6 s is the broker's minimum)
                "session.timeout.ms": settings.breakers_session_timeout_ms,
                "heartbeat.interval.ms": max(500, settings.breakers_session_timeout_ms // 6),
                **static_member(client_id),
            }
        )
        self.view = ControlView()
        self.follower = ControlFollower(
            self.bootstrap,
            self.topics.control,
            self.view,
            fetch_wait_ms=settings.breakers_fetch_wait_ms,
            client_id=f"{client_id}-control",
        )
        self.view.on_change(self._on_control)
        self.view.on_stale(self._on_stale_control)
        self.stop_event = threading.Event()
        self._owned: set[int] = set()  # the breaker-counts partitions this worker decides for
        self.breakers: dict[str, Breaker] = {}
        self.counters = {"cells_in": 0, "transitions": 0, "bad": 0}
        self.on_transition: Callable[[BreakerState], None] | None = None

    # -- the loop -------------------------------------------------------------------------

    def start(self, *, timeout: float = 60.0) -> None:
        """Read the control topic to its end (states survive restarts), then subscribe."""
        self.follower.start(timeout=timeout, background=False)
        deadline = time.monotonic() + timeout
        while not self.follower.caught_up.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self.topics.control} within {timeout:g}s")
            self.follower.poll(0.1)
        self.consumer.subscribe(
            [self.topics.breaker_counts],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def run(self) -> None:
        self.start()
        loop = StageLoop(
            "breaker stage",
            self.consumer,
            self.producer,
            batch_max=self.settings.processors_batch_max,
            wait_s=_TIMER_S,
            eager=True,  # a breaker must not wait for a full batch
            stop_event=self.stop_event,
        )
        loop.every(_TIMER_S, self._on_timer)
        loop.every(_EVICT_S, self._evict)
        try:
            loop.run(self.step)
        finally:
            self.close()

    def _on_timer(self) -> None:
        self.follower.poll(0)
        self.evaluate(None)

    def step(self, msgs: list[Message]) -> None:
        """Fold in received cells, decide for the breakers they touched."""
        touched: set[str] = set()
        for m in msgs:
            touched |= self._take_cells(m)
        if touched:
            self.evaluate(touched)

    # -- owner side -----------------------------------------------------------------------

    def _take_cells(self, m: Message) -> set[str]:
        if (m.partition() or 0) not in self._owned:
            return set()
        try:
            doc = orjson.loads(m.value() or b"")
            src = int(doc["src"])
            cells = [(str(c[0]), int(c[1]), int(c[2]), int(c[3]), int(c[4])) for c in doc["cells"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            self.counters["bad"] += 1
            logger.warning("ignoring a malformed breaker-counts record @%s: %s", m.offset(), exc)
            return set()
        touched = set()
        for breaker_id, sec, calls, failures, slow in cells:
            b = self._breaker(breaker_id)
            if b is None:
                continue
            b.window.set_cell(src, sec, calls, failures, slow)
            touched.add(breaker_id)
        self.counters["cells_in"] += len(cells)
        return touched

    def _breaker(self, breaker_id: str, state: BreakerState | None = None) -> Breaker | None:
        b = self.breakers.get(breaker_id)
        if b is None:
            try:
                key = parse_breaker_id(breaker_id)
            except ValueError:
                return None
            held = self.view.get("breaker", breaker_id)
            b = Breaker(
                key, self.policies.of(breaker_id), state or (from_control(held) if held else None)
            )
            self.breakers[breaker_id] = b
        return b

    def evaluate(self, ids: set[str] | None) -> None:
        """Run the machine for ``ids`` (changed windows), or, on the timer, for every breaker
        waiting on time (OPEN, HALF_OPEN)."""
        now = self.clock.time_us()
        if ids is None:
            ids = {
                i
                for i, b in self.breakers.items()
                if b.state.state in (State.OPEN, State.HALF_OPEN)
            }
        for breaker_id in ids:
            b = self.breakers.get(breaker_id)
            if b is None:
                continue
            new = b.evaluate(now)
            if new is not None:
                self._publish(new)

    def _publish(self, s: BreakerState) -> None:
        self.counters["transitions"] += 1
        log = logger.warning if s.state == State.OPEN else logger.info
        log("breaker %s -> %s: %s", s.id, s.state.value, s.reason)
        self._produce(self.topics.control, self._encode_control(to_control(s)), s.id.encode())
        self.producer.poll(0)
        if self.on_transition is not None:
            self.on_transition(s)

    # -- the control topic ----------------------------------------------------------------

    def _owns(self, breaker_id: str) -> bool:
        return owner_partition(breaker_id, self.partitions) in self._owned

    def _on_control(self, rec: ControlRecord) -> None:
        if rec["kind"] != "breaker" or not self._owns(rec["target_id"]):
            return
        incoming = from_control(rec)
        b = self._breaker(rec["target_id"], incoming)
        if b is not None and b.adopt(incoming) and incoming.actor != "processors":
            logger.warning(
                "breaker %s set %s by %s: %s",
                b.key.id,
                incoming.state.value,
                incoming.actor,
                incoming.reason,
            )

    def _on_stale_control(self, rec: ControlRecord) -> None:
        # a record older than the state we hold came last in the log (two writers raced);
        # after compaction it would be the only one left, so the owner writes the state again
        b = self.breakers.get(rec["target_id"]) if rec["kind"] == "breaker" else None
        if b is None or not self._owns(rec["target_id"]) or rec["sequence"] >= b.state.sequence:
            return
        b.state = replace(b.state, sequence=next_sequence(b.state.sequence, self.clock.time_us()))
        self._publish(b.state)

    # -- assignment -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        since_ms = (self.clock.time_us() // 1000) - self.lookback_s * 1000
        wanted = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in partitions]
        found = consumer.offsets_for_times(wanted, timeout=30) if wanted else []
        start = [
            TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
            for tp in found
        ]
        self._owned |= {tp.partition for tp in partitions}
        # breakers whose decisions we now own: start from their last published state
        for rec in self.view.records("breaker"):
            if self._owns(rec["target_id"]):
                self._breaker(rec["target_id"])
        consumer.assign(start)
        logger.info("breaker stage assigned %s", sorted((t.topic, t.partition) for t in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._owned -= {tp.partition for tp in partitions}
        for breaker_id in [i for i in self.breakers if not self._owns(i)]:
            del self.breakers[breaker_id]
        consumer.unassign()

    def _evict(self) -> None:
        oldest = self.clock.time_us() // US - self.lookback_s
        for b in self.breakers.values():
            b.window.evict(oldest)

    # -- output ---------------------------------------------------------------------------

    def _produce(self, topic: str, value: bytes, key: bytes, partition: int = -1) -> None:
        produce(self.producer, topic, value, key, partition)

    def close(self, timeout: float = 10.0) -> None:
        left = self.producer.flush(timeout)
        if left:
            logger.error("%d breaker-stage outputs were not delivered before close", left)
        self.consumer.close()
        self.follower.close()


def run_breaker_stage(settings: ProcessorSettings, policy: FleetPolicy) -> None:
    """Run one breaker-stage worker until SIGTERM/SIGINT."""
    stage = BreakerStage(settings, policy)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stage.stop_event.set())
    stage.run()
