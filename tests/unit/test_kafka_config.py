"""librdkafka's log lines: through the fleetpulse.kafka logger, a starting broker's
self-resolving retries at DEBUG so that `Fleet.connect` right after `dev up` prints nothing."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import Producer

from fleetpulse.kafka_config import LibrdkafkaLog, producer_config

STARTING = (
    "Failed to acquire idempotence PID from broker 127.0.0.1:9092/1: "
    "Broker: Coordinator load in progress: retrying"
)


def test_a_starting_brokers_retries_are_debug_and_real_problems_stay_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = LibrdkafkaLog()
    with caplog.at_level(logging.DEBUG, logger="fleetpulse.kafka"):
        log.log(logging.WARNING, "%s [%s] %s", "GETPID", "fleetpulse-sdk#producer-1", STARTING)
        log.log(logging.ERROR, "%s [%s] %s", "FAIL", "x#producer-1", "SSL handshake failed")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.DEBUG, f"GETPID [fleetpulse-sdk#producer-1] {STARTING}"),
        (logging.ERROR, "FAIL [x#producer-1] SSL handshake failed"),
    ]


def test_clients_accept_the_log_callback() -> None:
    Producer(producer_config("127.0.0.1:9", client_id="t")).flush(0)
