"""The one place librdkafka's dotted settings are spelled out; users never type them.

Every client routes librdkafka's own log lines through the ``fleetpulse.kafka`` logger, so a
library using fleetpulse never gets stray lines on stderr. The retries of a broker that is
still starting (``Coordinator load in progress``, right after ``dev up``) resolve themselves:
they are logged at DEBUG, not as warnings (which Python's last-resort handler would print).
A broker that cannot be reached is logged by state change (`KafkaLink`): one line when it
goes, a summary every 60 s, one line when it is back; not a line per retry. Reconnect backoff
is capped at 2 s, so every client is back within about 2 s of the broker answering.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

KAFKA_LOGGER = logging.getLogger("fleetpulse.kafka")
# back within about 2 s of the broker answering again (librdkafka's consumer default: 10 s)
_BACKOFF = {"reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 2000}
_TRANSIENT = (
    "Coordinator load in progress",
    "Coordinator not available",
    "Not coordinator",
    "COORDINATOR_LOAD_IN_PROGRESS",
)


# librdkafka lines and errors that mean "cannot reach the broker": retried by librdkafka itself
_CONNECTION = (
    "Connect to",
    "Connection refused",
    "Disconnected",
    "brokers are down",
    "Broker transport failure",
    "Receive failed",
    "Send failed",
    "Failed to resolve",
    "Connection reset",
    "connection failure",
)


_QUIET_S = 60.0  # librdkafka itself suppresses repeated identical failures for a while
_SETTLE_S = 1.0  # records fetched before the outage still arrive just after it begins


class KafkaLink:
    """One client's connection to Kafka, logged by state change, not per retry.

    It is that client's librdkafka ``logger`` and ``error_cb``. The first connection failure
    logs one WARNING; while the broker stays away, one summary every ``summary_every_s``
    (failed attempts, for how long); `ok` (the client saw Kafka answer: a delivery, a
    fetched record) logs one INFO that it is back. A client that cannot tell (it may see no
    record for a long time) starts a new episode after 60 s without a failure. Every other
    line passes to `KAFKA_LOGGER` at its own level, except a starting broker's retries
    (``Coordinator load in progress``, right after ``dev up``), at DEBUG.
    """

    def __init__(
        self,
        client: str,
        *,
        summary_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.summary_every_s = summary_every_s
        self.clock = clock
        self.down_since: float | None = None
        self.failures = 0
        self._summary_at = self._last = 0.0
        self._lock = threading.Lock()

    def failed(self, what: str) -> None:
        """A failed attempt to reach Kafka (librdkafka retries it with backoff)."""
        with self._lock:
            now = self.clock()
            if self.down_since is not None and now - self._last > _QUIET_S:
                # a minute without a failure: it was back meanwhile
                self.down_since, self.failures = None, 0
            self._last = now
            self.failures += 1
            if self.down_since is None:
                self.down_since = self._summary_at = now
                KAFKA_LOGGER.warning(
                    "%s: Kafka unreachable (%s); retrying with backoff, a summary every %gs",
                    self.client,
                    what,
                    self.summary_every_s,
                )
            elif now - self._summary_at >= self.summary_every_s:
                self._summary_at = now
                KAFKA_LOGGER.warning(
                    "%s: Kafka still unreachable after %.0fs (%d failed attempts; last: %s)",
                    self.client,
                    now - self.down_since,
                    self.failures,
                    what,
                )
            else:
                KAFKA_LOGGER.debug("%s: %s", self.client, what)

    def ok(self) -> None:
        """Kafka answered this client."""
        if self.down_since is None:  # the common case, without the lock
            return
        with self._lock:
            if self.down_since is None or self.clock() - self._last < _SETTLE_S:
                return
            KAFKA_LOGGER.info(
                "%s: Kafka reachable again after %.1fs (%d failed attempts)",
                self.client,
                self.clock() - self.down_since,
                self.failures,
            )
            self.down_since, self.failures = None, 0

    # -- librdkafka's callbacks -------------------------------------------------------------

    def log(self, level: int, msg: str, *args: Any) -> None:
        text = msg % args if args else msg
        if any(t in text for t in _TRANSIENT):
            KAFKA_LOGGER.debug("%s", text)
        elif level >= logging.WARNING and any(t in text for t in _CONNECTION):
            self.failed(text)
        else:
            KAFKA_LOGGER.log(level, "%s", text)

    def error_cb(self, err: Any) -> None:
        text = str(err)
        if any(t in text for t in _CONNECTION) or "_TRANSPORT" in text or "ALL_BROKERS" in text:
            self.failed(text)
        else:
            KAFKA_LOGGER.error("%s: %s", self.client, text)


def _link(client: str, link: KafkaLink | None) -> dict[str, Any]:
    link = link or KafkaLink(client)
    return {"logger": link, "error_cb": link.error_cb}


def static_member(name: str) -> dict[str, Any]:
    """Static group membership for one process: after a broker outage longer than the
    session, the process rejoins as itself and gets its partitions back at once, instead of
    waiting for its old membership to time out. Unique per host and process."""
    return {"group.instance.id": f"{name}-{socket.gethostname()}-{os.getpid()}"}


def admin_config(bootstrap: str, *, link: KafkaLink | None = None) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, **_BACKOFF, **_link("fleetpulse-admin", link)}


def consumer_config(
    bootstrap: str,
    group_id: str,
    *,
    from_start: bool = True,
    auto_commit: bool = False,
    link: KafkaLink | None = None,
) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "auto.offset.reset": "earliest" if from_start else "latest",
        "enable.auto.commit": auto_commit,
        "enable.partition.eof": False,
        **_BACKOFF,
        **_link(group_id, link),
    }


def producer_config(
    bootstrap: str,
    *,
    client_id: str,
    queue_max_messages: int = 100_000,
    linger_ms: int = 5,
    compression: str = "lz4",
    message_timeout_ms: int = 120_000,
    link: KafkaLink | None = None,
) -> dict[str, Any]:
    """An idempotent producer (acks=all, ordered retries) tuned for many small events."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,  # implies acks=all, retries, ordered per partition
        "acks": "all",
        "compression.type": compression,
        "linger.ms": linger_ms,
        "batch.num.messages": 10_000,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": queue_max_messages,
        "queue.buffering.max.kbytes": 512 * 1024,
        "message.timeout.ms": message_timeout_ms,
        "socket.keepalive.enable": True,
        **_BACKOFF,
        **_link(client_id, link),
    }
