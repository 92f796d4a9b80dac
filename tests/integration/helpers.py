"""Reading topics back, waiting for conditions and running workers in integration tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from confluent_kafka import Consumer, TopicPartition

from fleetpulse.contract.errors import CodecError
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.kafka_config import consumer_config


def consumer_from_start(bootstrap: str, topic: str) -> Consumer:
    """A consumer of its own (fresh group, no commits) assigned to every partition of `topic`
    from offset 0."""
    consumer = Consumer(consumer_config(bootstrap, f"it-{uuid.uuid4().hex[:8]}"))
    md = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    return consumer


def read_all(
    bootstrap: str,
    topic: str,
    expected: int,
    *,
    timeout: float = 60.0,
    idle: float = 2.0,
    logical_types: bool = True,
    skip_undecodable: bool = False,
) -> list[dict[str, Any]]:
    """Decode every TaskEvent on `topic` from the start: stop once `expected` arrived and the
    topic stayed quiet for `idle` seconds (so duplicates would be seen too), or at `timeout`.

    `logical_types=False` gives timestamps as epoch micros (as the processors see them);
    `skip_undecodable` leaves out records the codec rejects instead of failing.
    """
    consumer = consumer_from_start(bootstrap, topic)
    codec = AvroCodec(logical_types=logical_types)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.3)
            for msg in batch:
                assert msg.error() is None, msg.error()
                try:
                    events.append(codec.decode(msg.value() or b"", "TaskEvent"))
                except CodecError:
                    if not skip_undecodable:
                        raise
            if batch:
                last = time.monotonic()
            elif len(events) >= expected and time.monotonic() - last > idle:
                break
    finally:
        consumer.close()
    return events


def process_env(bootstrap: str, topics: Any, workdir: Any, policy: str) -> dict[str, str]:
    """The environment of a fleetpulse subprocess (CLI, agent, service) in a test: this test's
    broker, topic prefix, home and policy (written to ``workdir/policy.yaml``); no other
    FLEETPULSE_ variable leaks in from the caller's shell."""
    (workdir / "policy.yaml").write_text(policy)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_")},
        "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
        "FLEETPULSE_TOPIC_PREFIX": topics.prefix,
        "FLEETPULSE_HOME": str(workdir / "home"),
        "FLEETPULSE_POLICY": str(workdir / "policy.yaml"),
    }


@contextlib.contextmanager
def metric_worker(bootstrap: str, topics: Any, workdir: Any, policy: str) -> Iterator[Any]:
    """A ``processors run --stage metrics`` process for the test's lifetime: its ingest pass
    is what feeds the breaker and alert stages. Its output goes to ``workdir/metrics.log``."""
    env = {**process_env(bootstrap, topics, workdir, policy), "FLEETPULSE_PROCESSORS_WEB_PORT": "0"}
    cmd = [sys.executable, "-m", "fleetpulse.cli", "processors", "run", "--stage", "metrics"]
    with (workdir / "metrics.log").open("ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy, and return that; fail at ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting until {what}")


class Worker(Protocol):
    stop_event: threading.Event

    def run(self) -> None: ...


W = TypeVar("W", bound=Worker)


@contextlib.contextmanager
def running(worker: W) -> Iterator[W]:
    """Run a stage's ``run()`` loop (alert stage, pager) in a thread; stop and join it at exit."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop_event.set()
        thread.join(30)
