"""``fleetpulse.governance`` as a live `GovernanceState`: follow it, append to it, and learn
whether an appended event took effect.

Every event is keyed ``<entity_type>/<entity_id>/<event_id>``: the topic is compacted, and
unique keys mean compaction never drops history (a request and its decision stay apart).

Example:
    >>> log = GovernanceLog.open(settings)                    # doctest: +SKIP
    >>> log.append(new_event("principal", "ana", ...))         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from confluent_kafka import Producer

from fleetpulse.contract.errors import ConflictError, DeliveryError
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.governance import Event, GovernanceState
from fleetpulse.contract.kafka_config import producer_config
from fleetpulse.sdk.topic_follower import TopicFollower, catch_up

if TYPE_CHECKING:  # the settings are built by a service's main(); the SDK never loads them here
    from fleetpulse.contract.config import CommonSettings

logger = logging.getLogger(__name__)
T = TypeVar("T")


class GovernanceLog:
    """The governance state of one process, kept current by a follower.

    Args:
        background: follow in a daemon thread (services, the SDK); otherwise the caller's
            thread polls when it needs to (the CLI's one-shot commands).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        registry_url: str | None = None,
        background: bool = True,
        client_id: str = "fleetpulse-governance",
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.state = GovernanceState()
        self._cond = threading.Condition()
        self._background = background
        self._client_id = client_id
        self._follower = TopicFollower(
            bootstrap, topic, "GovernanceEvent", self._apply, client_id=client_id
        )
        self._encode = AvroCodec(registry_url=registry_url).encoder("GovernanceEvent", topic)
        self._producer: Producer | None = None

    @classmethod
    def open(
        cls,
        settings: CommonSettings,
        *,
        background: bool = True,
        timeout: float = 15.0,
        client_id: str = "fleetpulse-governance",
    ) -> GovernanceLog:
        """Start following the settings' governance topic and wait until it is read to its end
        (a service starts from the whole state, not part of it)."""
        log = cls(
            settings.resolved_bootstrap(),
            settings.topics.governance,
            registry_url=settings.schema_registry_url,
            background=background,
            client_id=client_id,
        )
        log.start(timeout=timeout)
        return log

    def start(self, *, timeout: float = 15.0, wait: bool = True) -> GovernanceLog:
        self._follower.start(timeout=timeout, background=self._background)
        if not wait:
            return self
        if self._background:
            if not self._follower.wait_caught_up(timeout):
                raise TimeoutError(f"could not read {self.topic} to its end within {timeout:g}s")
        else:
            catch_up(self._follower, timeout)
        return self

    @property
    def caught_up(self) -> threading.Event:
        return self._follower.caught_up

    def close(self) -> None:
        self._follower.close()
        if self._producer is not None:
            self._producer.flush(5)

    # -- reading --------------------------------------------------------------------------

    def _apply(self, event: dict[str, Any]) -> bool:
        with self._cond:
            outcome = self.state.apply(event)
            self._cond.notify_all()
        if outcome is not None:
            logger.info(
                "governance event %s (%s %s by %s) rejected: %s",
                event["event_id"],
                event["entity_type"],
                event["action"],
                event["actor"],
                outcome,
            )
        return outcome is None

    def read(self, fn: Callable[[GovernanceState], T]) -> T:
        """``fn(state)`` under the lock: a consistent read while the follower applies."""
        with self._cond:
            return fn(self.state)

    def refresh(self, timeout: float = 0.2) -> None:
        """Foreground mode: take what has arrived since the last poll."""
        if not self._background:
            self._follower.poll(timeout)

    def wait_for(self, predicate: Callable[[GovernanceState], bool], timeout: float) -> bool:
        """Wait until ``predicate(state)`` holds (polling in foreground mode); return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.state):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if self._background:
                    self._cond.wait(min(left, 1.0))
                else:
                    self._cond.release()
                    try:
                        self._follower.poll(min(left, 0.2))
                    finally:
                        self._cond.acquire()
            return True

    # -- writing --------------------------------------------------------------------------

    def append(self, event: Event, *, timeout: float = 15.0) -> Event:
        """Write ``event`` and wait until the log folded it.

        Raises:
            ConflictError: the state rejected it (the message says why).
            DeliveryError: Kafka did not acknowledge it, or it was not read back in time.
        """
        if self._producer is None:
            self._producer = Producer(
                producer_config(self.bootstrap, client_id=self._client_id, linger_ms=0)
            )
        key = f"{event['entity_type']}/{event['entity_id']}/{event['event_id']}"
        self._producer.produce(self.topic, self._encode(event), key.encode())
        if self._producer.flush(timeout):
            raise DeliveryError(
                f"governance event for {event['entity_id']} not acknowledged", topic=self.topic
            )
        event_id = event["event_id"]
        if not self.wait_for(lambda s: event_id in s.outcomes, timeout):
            raise DeliveryError(
                f"governance event {event_id} was written but not read back within {timeout:g}s",
                topic=self.topic,
            )
        outcome = self.read(lambda s: s.outcomes[event_id])
        if outcome is not None:
            raise ConflictError(outcome)
        return event
