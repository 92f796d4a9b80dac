"""Alert workers on the real broker: two alert workers, each owning half of the partitions and
exchanging scope records and alert phases through Kafka, send exactly the alert events one
worker sends on the same seeded input, and still do after both restart mid-incident (a firing
budget alert is not sent again, a pending ``for`` timer is not restarted, nothing is forgotten).

The stages are stepped by the test with a manual clock, so that both runs evaluate at the same
instants; the input is the alert-cells records the metric workers would send."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from fleetpulse.contract.clock import ManualClock
from fleetpulse.contract.config import ProcessorSettings
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack.topics import ensure_topics
from fleetpulse.processors.alerts.split import route_groups
from fleetpulse.processors.alerts.stage import AlertStage
from fleetpulse.processors.ingest.params import AlertSpec
from fleetpulse.processors.ingest.reference import alert_groups

from .helpers import consumer_from_start

US = 1_000_000
ROUNDS, RESTART_AFTER, STEP_S = 16, 7, 5
AGENTS = [f"a{i}" for i in range(6)]
POLICY = FleetPolicy.model_validate(
    {
        "alerts": {
            "rules": [
                {"name": "fail", "kind": "failure_rate", "threshold": 0.5, "min_volume": 4,
                 "window_s": 60, "for_s": 30, "keep_firing_for_s": 5},
                {"name": "crm-errors", "kind": "integration_error_rate", "threshold": 0.4,
                 "min_volume": 5, "window_s": 60, "for_s": 5},
                {"name": "team-budget", "kind": "cost_budget", "scope": "team",
                 "threshold": 0.5, "critical": 1.0},
                {"name": "agent-budget", "kind": "cost_budget", "threshold": 0.8},
            ],
            "teams": {"red": {"agents": ["a0", "a1", "a2"], "daily_usd": 0.3},
                      "blue": {"agents": ["a3", "a4", "a5"], "daily_usd": 0.3}},
            "budgets": {"a0": {"daily_usd": 0.1}, "a5": {"daily_usd": 0.1}},
        }
    }
)  # fmt: skip


def round_events(r: int, t0: int, rnd: random.Random) -> list[dict[str, Any]]:
    """a1 fails from round 2 (its alert is pending at the restart), and a5, which runs after
    it and belongs to the other worker, fails with it (a cascade); a4 fails early and
    recovers; crm errors in the middle; every task costs, so budgets fill."""
    out = []
    for agent in AGENTS:
        bad = (agent in ("a1", "a5") and r >= 2) or (agent == "a4" and 1 <= r <= 8)
        for i in range(6):
            at = t0 + r * STEP_S * US + rnd.randint(0, STEP_S * US - 1)
            failed = rnd.random() < (0.9 if bad else 0.05)
            crm_bad = 3 <= r <= 9 and rnd.random() < 0.7
            call = {"call_id": "c", "integration": "crm", "operation": "get", "access": "read",
                    "status": "error" if crm_bad else "ok", "target": None,
                    "latency_ms": 20.0}  # fmt: skip
            out.append({
                "event_id": f"{agent}-{r}-{i}", "agent_id": agent, "agent_version": "1",
                "agent_role": "", "task_id": f"t-{agent}-{r}-{i}", "task_type": "work",
                "upstream_agent_id": "a1" if agent == "a5" else None,
                "outcome": "failure" if failed else "success",
                "started_at": at - 100_000, "ended_at": at, "duration_ms": 100.0,
                "cost_micros": 2000, "tool_calls": [call], "attributes": {},
            })  # fmt: skip
    return out


def stage(settings: ProcessorSettings, clock: ManualClock, workers: int, index: int) -> AlertStage:
    s = settings.model_copy(update={"alerts_workers": workers, "alerts_index": index})
    st = AlertStage(s, POLICY, clock=clock, client_id=f"test-alerts-{index}")
    st.start(timeout=30)
    return st


def pump(stages: list[AlertStage], timeout: float = 30.0) -> None:
    """Step every stage until each has read its partitions to their current end and nothing
    it sent is left unread (scope records and phases travel between the workers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for st in stages:
            st.producer.flush(10)
        for st in stages:
            msgs = [m for m in st.consumer.consume(1000, 0.05) if m.error() is None]
            if msgs:
                st.step(msgs)
        if all(st.producer.flush(10) == 0 and _at_end(st) for st in stages):
            return
    where = [
        (tp.topic, tp.partition, tp.offset, st.consumer.get_watermark_offsets(tp, timeout=5))
        for st in stages
        for tp in st.consumer.position(st.consumer.assignment())
    ]
    raise AssertionError(f"the alert workers did not read their partitions to the end: {where}")


def _at_end(st: AlertStage) -> bool:
    parts = st.consumer.assignment()
    for tp in st.consumer.position(parts):
        low, high = st.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        # no position yet: nothing was fetched, which is the end when nothing is there
        if tp.offset < high and not (tp.offset < 0 and low == high):
            return False
    return True


def run(settings: ProcessorSettings, workers: int, t0: int) -> list[tuple[Any, ...]]:
    clock = ManualClock(t0)
    stages = [stage(settings, clock, workers, i) for i in range(workers)]
    producer = Producer({"bootstrap.servers": settings.resolved_bootstrap()})
    rnd = random.Random(18)
    pending_at_restart = fired_budget_at_restart = False
    try:
        for r in range(ROUNDS):
            groups = alert_groups(round_events(r, t0, rnd), AlertSpec())
            for p, part in route_groups(groups, 6).items():
                for value in part.records():
                    producer.produce(settings.topics.alert_cells, value, b"", partition=p)
            producer.flush(10)
            clock.advance(ms=STEP_S * 1000)
            pump(stages)
            for st in stages:
                st.evaluate()
            pump(stages)
            if workers > 1 and r == RESTART_AFTER:  # both workers restart mid-incident
                for st in stages:
                    held = {(s.rule, s.phase) for s in st.evaluator.states.values()}
                    pending_at_restart |= ("fail", "pending") in held
                    fired_budget_at_restart |= ("team-budget", "firing") in held
                    st.close()
                stages = [stage(settings, clock, workers, i) for i in range(workers)]
                pump(stages)
        if workers > 1:
            assert pending_at_restart and fired_budget_at_restart, "the restart tests nothing"
    finally:
        for st in stages:
            st.close()
    consumer = consumer_from_start(settings.resolved_bootstrap(), settings.topics.alerts)
    codec = AvroCodec(logical_types=False)
    seen = [codec.decode(m.value(), "Alert") for m in consumer.consume(10_000, 5)]
    consumer.close()
    return sorted(
        (a["emitted_at"], a["dedup_key"], a["status"], a["severity"], round(a["value"], 9),
         a["started_at"], a["labels"].get("suppressed"))
        for a in seen
    )  # fmt: skip


@pytest.fixture
def two_prefixes(kafka: Any, tmp_path: Path) -> Iterator[list[ProcessorSettings]]:
    out = []
    for name in ("one", "two"):
        topics = Topics(f"t{name}{int(time.time() * 1000) % 10**9}.")
        ensure_topics(kafka.bootstrap_servers, topics)
        out.append(
            ProcessorSettings(
                bootstrap_servers=kafka.bootstrap_servers,
                topic_prefix=topics.prefix,
                home=tmp_path / name,
            )
        )
    yield out


def test_two_alert_workers_send_exactly_what_one_sends(two_prefixes: list[Any]) -> None:
    one, two = two_prefixes
    t0 = (time.time_ns() // 1000) // US * US
    alone = run(one, 1, t0)
    split = run(two, 2, t0)
    keys = {(k[1], k[2]) for k in alone}
    want = {("fail:agent=a1", "firing"), ("fail:agent=a4", "firing"),
            ("fail:agent=a4", "resolved"), ("crm-errors:integration=crm", "firing"),
            ("fail:agent=a5", "firing"),
            ("team-budget:team=red", "firing"), ("agent-budget:agent=a0", "firing")}  # fmt: skip
    assert want <= keys, keys
    assert {k[6] for k in alone if k[1] == "fail:agent=a5"} == {"grouped"}
    assert split == alone


A0 = "agent=a0"  # the ledger's scope id of agent a0


def test_a_budget_survives_a_restart_after_its_alert_groups_expired(kafka: Any, tmp_path: Path):
    """The month's (here the day's) cost outlives the alert groups it was counted from: the
    restarted worker adopts the saved totals, so with every alert-cells record deleted (as
    retention would) the firing budget alert neither resolves nor fires again, and new cost
    adds to the adopted total."""
    topics = Topics(f"tledger{int(time.time() * 1000) % 10**9}.")
    ensure_topics(kafka.bootstrap_servers, topics)
    settings = ProcessorSettings(
        bootstrap_servers=kafka.bootstrap_servers, topic_prefix=topics.prefix, home=tmp_path
    )
    t0 = (time.time_ns() // 1000) // US * US
    clock = ManualClock(t0)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    rnd = random.Random(3)

    def send(r: int) -> None:
        for p, part in route_groups(alert_groups(round_events(r, t0, rnd), AlertSpec()), 6).items():
            for value in part.records():
                producer.produce(topics.alert_cells, value, b"", partition=p)
        producer.flush(10)
        clock.advance(ms=STEP_S * 1000)

    first = stage(settings, clock, 1, 0)
    try:
        for r in range(RESTART_AFTER):
            send(r)
            pump([first])
            first.evaluate()
        spent = first.evaluator.ledger.get(A0, "day", clock.time_us())
        assert spent > 0
        assert ("agent-budget", "firing") in {
            (s.rule, s.phase) for s in first.evaluator.states.values()
        }
        first._save_ledger()
    finally:
        first.close()
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    ends = []
    c = consumer_from_start(kafka.bootstrap_servers, topics.alert_cells)
    for topic in (topics.alert_cells, topics.alert_scopes):
        for p in range(6):
            _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends.append(TopicPartition(topic, p, high))
    c.close()
    for fut in admin.delete_records(ends).values():
        fut.result(30)

    second = stage(settings, clock, 1, 0)
    try:
        assert second.evaluator.ledger.get(A0, "day", clock.time_us()) == spent
        pump([second])
        sent = second.evaluate()
        assert not [a for a in sent if a["dedup_key"].startswith("agent-budget")], sent
        send(RESTART_AFTER)
        pump([second])
        second.evaluate()
        assert second.evaluator.ledger.get(A0, "day", clock.time_us()) > spent
    finally:
        second.close()
