"""The same SDK path against a testcontainers Kafka, where Docker exists (skipped elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpulse import Fleet
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack import ensure_topics

from .helpers import read_all

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def test_sdk_round_trip_on_a_container_broker(docker_kafka: str, tmp_path: Path) -> None:
    topics = Topics("tc.")
    ensure_topics(docker_kafka, topics)
    with Fleet.connect(
        "containerised", bootstrap_servers=docker_kafka, topic_prefix="tc.", spool_dir=tmp_path
    ) as fleet:
        for i in range(100):
            with fleet.task("job", input=i):
                pass
        assert fleet.flush(30) == 0
    assert len(read_all(docker_kafka, topics.task_events, 100)) == 100
