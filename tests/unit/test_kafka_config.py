"""librdkafka's log lines: through the fleetpulse.kafka logger; a starting broker's
self-resolving retries at DEBUG (so `Fleet.connect` right after `dev up` prints nothing); an
unreachable broker logged by state change and a periodic summary, not a line per retry."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import Producer

from fleetpulse.contract.kafka_config import KafkaLink, producer_config

STARTING = (
    "Failed to acquire idempotence PID from broker 127.0.0.1:9092/1: "
    "Broker: Coordinator load in progress: retrying"
)
REFUSED = (
    "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused "
    "(after 0ms in state CONNECT)"
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def test_a_starting_brokers_retries_are_debug_and_real_problems_stay_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = KafkaLink("sdk")
    with caplog.at_level(logging.DEBUG, logger="fleetpulse.kafka"):
        log.log(logging.WARNING, "%s [%s] %s", "GETPID", "fleetpulse-sdk#producer-1", STARTING)
        log.log(logging.ERROR, "%s [%s] %s", "FAIL", "x#producer-1", "SSL handshake failed")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.DEBUG, f"GETPID [fleetpulse-sdk#producer-1] {STARTING}"),
        (logging.ERROR, "FAIL [x#producer-1] SSL handshake failed"),
    ]


def test_an_outage_is_one_line_a_summary_every_60_s_and_one_line_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    link = KafkaLink("fleetpulse-sink", clock=clock)
    with caplog.at_level(logging.DEBUG, logger="fleetpulse.kafka"):
        for _ in range(90):  # a minute and a half of retries, one a second
            link.log(logging.ERROR, "%s [%s] %s", "FAIL", "fleetpulse-sink#consumer-1", REFUSED)
            link.error_cb('KafkaError{code=_ALL_BROKERS_DOWN,val=-187,str="1/1 brokers are down"}')
            clock.t += 1
        link.ok()
        link.ok()
    lines = _lines(caplog)
    assert len(lines) == 3, lines
    assert "Kafka unreachable" in lines[0]
    assert "still unreachable after 60s" in lines[1] and "121 failed attempts" in lines[1]
    assert "reachable again after 90.0s (180 failed attempts)" in lines[2]


def test_a_new_outage_after_a_quiet_spell_is_reported_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    link = KafkaLink("api", clock=clock)  # a client that never calls ok()
    with caplog.at_level(logging.INFO, logger="fleetpulse.kafka"):
        link.failed("Connection refused")
        clock.t += 61
        link.failed("Connection refused")
    assert [line.split(" (")[0] for line in _lines(caplog)] == ["api: Kafka unreachable"] * 2


def test_records_fetched_before_the_outage_do_not_end_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    link = KafkaLink("fleetpulse-sink", clock=clock)
    with caplog.at_level(logging.INFO, logger="fleetpulse.kafka"):
        link.failed("Connection refused")
        clock.t += 0.2
        link.ok()  # a record fetched before the broker went: not a sign it is back
        link.failed("Connection refused")
    assert len(_lines(caplog)) == 1


def test_clients_accept_the_callbacks() -> None:
    Producer(producer_config("127.0.0.1:9", client_id="t")).flush(0)
