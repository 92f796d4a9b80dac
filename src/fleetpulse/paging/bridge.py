"""``fleetpulse pager run``: the ``<prefix>pager`` consumer group on ``fleetpulse.alerts``,
delivering every alert event to the receivers its labels route to.

No loss, no silent drop: an event's offset is committed only after every receiver took it, or
after the event went to ``fleetpulse.dlq`` with the reason (retries exhausted, or a receiver
refused it for good with a 4xx). Retries back off exponentially with full jitter. A firing
event the alert stage marked suppressed (silenced, inhibited, grouped) is not paged; resolved
events always go out (receivers ignore resolving what they never saw). Repeats are idempotent:
Alertmanager and PagerDuty deduplicate by key; for the others, an event already delivered by
this process is not sent again, and webhooks carry an ``Idempotency-Key``.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx
from confluent_kafka import Consumer, Message, Producer

from fleetpulse.contract.config import PagerSettings
from fleetpulse.contract.errors import CodecError
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.kafka_config import consumer_config, producer_config
from fleetpulse.contract.topics import dlq_headers
from fleetpulse.paging.config import PagerConfig
from fleetpulse.paging.receivers import DeliveryError, idempotency_key, labels_of, send

logger = logging.getLogger(__name__)
_REMEMBER = 100_000  # delivered (receiver, event) pairs kept for idempotency


class PagerBridge:
    """One pager worker. ``run()`` until ``stop_event`` is set."""

    def __init__(
        self,
        settings: PagerSettings,
        config: PagerConfig,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.config = config
        self.topics = settings.topics
        bootstrap = settings.resolved_bootstrap()
        self.consumer = Consumer(
            {
                **consumer_config(bootstrap, settings.pager_group_id),
                "client.id": "fleetpulse-pager",
                "fetch.wait.max.ms": 20,
            }
        )
        self.producer = Producer(
            producer_config(bootstrap, client_id="fleetpulse-pager", linger_ms=0)
        )
        self.codec = AvroCodec(registry_url=settings.schema_registry_url, logical_types=False)
        self.client = client or httpx.Client()
        self.sleep = sleep
        self.stop_event = threading.Event()
        self.delivered: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.counters = {"delivered": 0, "suppressed": 0, "dead_lettered": 0, "retries": 0}
        self.on_delivered: Callable[[str, dict[str, Any]], None] | None = None

    def run(self) -> None:
        self.consumer.subscribe([self.topics.alerts])
        try:
            while not self.stop_event.is_set():
                m = self.consumer.poll(0.1)
                if m is None:
                    continue
                if m.error() is not None:
                    logger.warning("pager consumer: %s", m.error())
                    continue
                self.handle(m)
                self.consumer.commit(message=m, asynchronous=False)
        finally:
            self.close()

    def handle(self, m: Message) -> None:
        """Deliver one record to its receivers (or the DLQ); returns when it may be committed."""
        where = f"{m.topic()}[{m.partition()}]@{m.offset()}"
        try:
            alert = self.codec.decode(
                m.value() or b"",
                "Alert",
                topic=m.topic(),
                partition=m.partition(),
                offset=m.offset(),
            )
        except CodecError as exc:
            self._dead_letter(m, str(exc), "-")
            return
        if alert["status"] == "firing" and alert["labels"].get("suppressed"):
            self.counters["suppressed"] += 1
            logger.info(
                "%s: %s not paged (%s: %s)",
                where,
                alert["dedup_key"],
                alert["labels"]["suppressed"],
                alert["root_cause"],
            )
            return
        names = self.config.route(labels_of(alert))
        if not names:
            logger.warning(
                "%s: %s matched no route and there is no default receiver",
                where,
                alert["dedup_key"],
            )
        for name in names:
            self._deliver(m, name, alert)

    def _deliver(self, m: Message, name: str, alert: dict[str, Any]) -> None:
        key = (name, idempotency_key(alert))
        if key in self.delivered:
            return
        receiver = self.config.receiver(name)
        retry = self.config.retry
        for attempt in range(1, retry.attempts + 1):
            try:
                send(self.client, self.config, receiver, alert)
            except DeliveryError as exc:
                if not exc.retry or attempt == retry.attempts:
                    why = f"{exc} (after {attempt} attempt{'s' if attempt > 1 else ''})"
                    self._dead_letter(m, why, name)
                    return
                self.counters["retries"] += 1
                backoff = min(retry.max_s, retry.initial_s * 2 ** (attempt - 1))
                logger.info(
                    "%s: retry %d in <=%.1fs: %s", alert["dedup_key"], attempt, backoff, exc
                )
                self.sleep(random.uniform(0, backoff))  # full jitter
                if self.stop_event.is_set():
                    raise RuntimeError(
                        "stopping with an undelivered alert; it is not committed"
                    ) from None
                continue
            self.counters["delivered"] += 1
            self.delivered[key] = None
            if len(self.delivered) > _REMEMBER:
                self.delivered.popitem(last=False)
            logger.info("%s %s -> %s", alert["dedup_key"], alert["status"], name)
            if self.on_delivered is not None:
                self.on_delivered(name, alert)
            return

    def _dead_letter(self, m: Message, reason: str, receiver: str) -> None:
        self.counters["dead_lettered"] += 1
        logger.error(
            "dead-lettering %s[%s]@%s for %s: %s",
            m.topic(),
            m.partition(),
            m.offset(),
            receiver,
            reason,
        )
        source = (m.topic() or "", m.partition() or 0, m.offset() or 0)
        headers = [
            *dlq_headers(reason, *source, "pager"),
            ("fleetpulse.receiver", receiver.encode()),
        ]
        self.producer.produce(self.topics.dlq, m.value(), m.key(), headers=headers)
        if self.producer.flush(30):
            raise RuntimeError("the DLQ did not take an undeliverable alert; it is not committed")

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(10)
        self.client.close()


def run_pager(settings: PagerSettings, config: PagerConfig) -> None:
    bridge = PagerBridge(settings, config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: bridge.stop_event.set())
    bridge.run()
