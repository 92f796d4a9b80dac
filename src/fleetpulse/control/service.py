"""Operator actions on breakers and agents: the service layer behind the CLI (and later the API).

Every action writes one ControlMessage to ``fleetpulse.control`` that carries who (``actor``)
and why (``reason``); the message is the audit record. ``authorize(action, target)`` is called
before anything is written. A process writes through one `ControlWriter`, one long-lived
producer, whichever caller acts (the API serves many). Role checks and the governance audit
record live one layer up, in `control.plane.ControlPlane`, which the CLI and the API share.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import Producer

from fleetpulse.contract.breakers import (
    BreakerState,
    State,
    from_control,
    next_sequence,
    parse_breaker_id,
    to_control,
)
from fleetpulse.contract.clock import Clock, SystemClock
from fleetpulse.contract.config import CommonSettings
from fleetpulse.contract.control_state import ControlRecord, ControlView
from fleetpulse.contract.errors import ConfigError, DeliveryError
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.kafka_config import producer_config
from fleetpulse.sdk.topic_follower import read_control

logger = logging.getLogger(__name__)

Authorize = Callable[[str, str], None]


def allow_all(action: str, target: str) -> None:
    """The authorization hook until roles exist (governance issue)."""


class ControlWriter:
    """The process's one producer to ``fleetpulse.control``: made on the first write and kept.
    Each write waits for Kafka's acknowledgement (an operator action returns once it is
    durable); writes from several threads take turns.

    Example:
        >>> writer = ControlWriter("127.0.0.1:9092")                    # doctest: +SKIP
        >>> writer.write("fleetpulse.control", b"integration:crm", encoded)
    """

    def __init__(self, bootstrap: str, *, client_id: str = "fleetpulse-control") -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.producers_made = 0  # 1 for the life of the process, however many actions
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def write(self, topic: str, key: bytes, value: bytes, *, timeout: float = 15.0) -> None:
        """Produce one record and wait for its acknowledgement.

        Raises:
            DeliveryError: Kafka did not acknowledge it within ``timeout``.
        """
        with self._lock:
            if self._producer is None:
                self._producer = Producer(
                    producer_config(self.bootstrap, client_id=self.client_id, linger_ms=0)
                )
                self.producers_made += 1
            self._producer.produce(topic, value, key)
            if self._producer.flush(timeout):
                raise DeliveryError(
                    f"control message for {key.decode(errors='replace')} not acknowledged",
                    topic=topic,
                )

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(5)
                self._producer = None


@dataclass(frozen=True)
class PauseState:
    agent_id: str
    paused: bool
    reason: str
    actor: str
    since_us: int
    sequence: int


class ControlService:
    """Read and change breakers and pauses as ``actor``.

    Example:
        >>> svc = ControlService(settings, actor="user:ana")   # doctest: +SKIP
        >>> svc.force_open("integration:crm", reason="vendor incident")  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: CommonSettings,
        *,
        actor: str,
        clock: Clock | None = None,
        authorize: Authorize = allow_all,
        view_source: Callable[[], ControlView] | None = None,
        writer: ControlWriter | None = None,
    ) -> None:
        if not actor:
            raise ConfigError("an operator action needs an actor (who is doing it)", field="actor")
        self.settings = settings
        self.actor = actor
        self.clock = clock or SystemClock()
        self.authorize = authorize
        self._view_source = view_source
        self.bootstrap = settings.resolved_bootstrap()
        self.topic = settings.topics.control
        self._codec = AvroCodec(registry_url=settings.schema_registry_url)
        self._encode = self._codec.encoder("ControlMessage", self.topic)
        self.writer = writer or ControlWriter(self.bootstrap, client_id="fleetpulse-cli")

    # -- reading --------------------------------------------------------------------------

    def view(self) -> ControlView:
        """The control topic's states: a live view when one was given, else read it now."""
        if self._view_source is not None:
            return self._view_source()
        return read_control(self.bootstrap, self.topic)

    def breakers(self) -> list[BreakerState]:
        return [from_control(r) for r in self.view().records("breaker")]

    def breaker(self, breaker_id: str) -> BreakerState | None:
        parse_breaker_id(breaker_id)
        rec = self.view().get("breaker", breaker_id)
        return from_control(rec) if rec else None

    def pauses(self) -> list[PauseState]:
        return [_pause(r) for r in self.view().records("agent_pause")]

    # -- breakers -------------------------------------------------------------------------

    def force_open(self, breaker_id: str, *, reason: str) -> BreakerState:
        """Hold the breaker OPEN fleet-wide until ``reset``; the processors leave it alone."""
        return self._set_breaker("breakers.force_open", breaker_id, State.FORCED_OPEN, reason)

    def disable(self, breaker_id: str, *, reason: str) -> BreakerState:
        """Let every call through until ``reset``, whatever the failure rate."""
        return self._set_breaker("breakers.disable", breaker_id, State.DISABLED, reason)

    def reset(self, breaker_id: str, *, reason: str) -> BreakerState:
        """Back to CLOSED with an empty window; the processors take over again."""
        return self._set_breaker("breakers.reset", breaker_id, State.CLOSED, reason)

    def _set_breaker(self, action: str, breaker_id: str, state: State, reason: str) -> BreakerState:
        key = parse_breaker_id(breaker_id)
        _need_reason(reason)
        self.authorize(action, breaker_id)
        now = self.clock.time_us()
        new = BreakerState(
            key=key,
            state=state,
            since_us=now,
            reason=reason,
            actor=self.actor,
            measurements={},
        )
        rec = self._write("breaker", breaker_id, lambda seq: to_control(_with_seq(new, seq)))
        return from_control(rec)

    # -- agents ---------------------------------------------------------------------------

    def pause(self, agent_id: str, *, reason: str) -> PauseState:
        """Stop the agent fleet-wide: its next ``fleet.task(...)`` raises AgentPausedError."""
        return self._set_pause("agents.pause", agent_id, "PAUSED", reason)

    def resume(self, agent_id: str, *, reason: str) -> PauseState:
        return self._set_pause("agents.resume", agent_id, "RUNNING", reason)

    def _set_pause(self, action: str, agent_id: str, state: str, reason: str) -> PauseState:
        if not agent_id:
            raise ValueError("agent id is empty")
        _need_reason(reason)
        self.authorize(action, agent_id)
        now = self.clock.time_us()

        def record(seq: int) -> dict[str, Any]:
            return {
                "kind": "agent_pause",
                "target_id": agent_id,
                "scope": "agent",
                "agent_id": agent_id,
                "integration": None,
                "state": state,
                "reason": reason,
                "measurements": {},
                "since": now,
                "retry_at": None,
                "probe_allowance": 0.0,
                "sequence": seq,
                "actor": self.actor,
            }

        return _pause(self._write("agent_pause", agent_id, record))

    # -- writing --------------------------------------------------------------------------

    def _write(
        self, kind: str, target: str, build: Callable[[int], dict[str, Any]]
    ) -> ControlRecord:
        """Write with a sequence newer than the one held, then read back: if a processor's
        transition raced ours and won, write again (at most three times)."""
        for _attempt in range(3):
            held = self.view().sequence(kind, target)
            rec = build(next_sequence(held, self.clock.time_us()))
            self.writer.write(self.topic, target.encode(), self._encode(rec))
            logger.info(
                "%s %s set %s by %s: %s", kind, target, rec["state"], self.actor, rec["reason"]
            )
            now = self._read_back(kind, target, rec["sequence"])
            if now is not None and now["sequence"] == rec["sequence"]:
                return rec
            time.sleep(0.2)
        raise DeliveryError(
            f"{target}: another writer kept superseding this action; check `fleetpulse breakers "
            f"show {target}` and retry",
            topic=self.topic,
        )

    def _read_back(self, kind: str, target: str, sequence: int) -> ControlRecord | None:
        """The state after our write: a live view may take a moment to see it."""
        deadline = time.monotonic() + (5.0 if self._view_source is not None else 0)
        while True:
            now = self.view().get(kind, target)
            if (now is not None and now["sequence"] >= sequence) or time.monotonic() > deadline:
                return now
            time.sleep(0.02)


def _with_seq(s: BreakerState, seq: int) -> BreakerState:
    return replace(s, sequence=seq)


def _need_reason(reason: str) -> None:
    if not reason or not reason.strip():
        raise ValueError("a reason is required (--reason): it goes into the audit record")


def _pause(r: ControlRecord) -> PauseState:
    since = r["since"]
    return PauseState(
        agent_id=r["target_id"],
        paused=r["state"] == "PAUSED",
        reason=r.get("reason") or "",
        actor=r.get("actor") or "",
        since_us=since if isinstance(since, int) else int(since.timestamp() * 1_000_000),
        sequence=int(r["sequence"]),
    )
