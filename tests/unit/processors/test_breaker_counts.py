"""The breakers' source side counts phase 1's groups exactly as the per-call classification
counts the calls one by one."""

from __future__ import annotations

import random

import orjson

from fleetpulse.contract.breakers import agent_breaker_id, agent_integration_id, integration_id
from fleetpulse.contract.policy import BreakersSection
from fleetpulse.processors.breakers.counts import BreakerCounts, owner_partition
from fleetpulse.processors.breakers.machine import classify_call, classify_task
from fleetpulse.processors.ingest.cells import CallGroup, TaskGroup

SECTION = BreakersSection.model_validate(
    {
        "defaults": {"slow_call_duration_ms": 500},
        "integrations": {
            "crm": {"slow_call_duration_ms": 2000, "ignore_error_types": ["HTTP429"]},
            "mail": {"failure_statuses": ["error", "timeout", "denied"]},
        },
        "agent_defaults": {"enabled": True, "slow_call_duration_ms": 1000},
        "agents": {"a-1": {"integrations": {"crm": {"record_error_types": ["HTTP500"]}}}},
    }
)


def calls_and_tasks(seed: int) -> tuple[list[tuple], list[tuple]]:
    rng = random.Random(seed)
    calls = [
        (
            rng.randrange(3),
            f"a-{rng.randrange(3)}",
            rng.choice(("crm", "mail", "db")),
            rng.choice(("ok", "ok", "error", "timeout", "denied")),
            rng.choice((None, "HTTP500", "HTTP429")),
            100 + rng.randrange(5),
            rng.lognormvariate(6, 1.5),
        )
        for _ in range(3000)
    ]
    tasks = [
        (
            rng.randrange(3),
            f"a-{rng.randrange(3)}",
            rng.choice(("success", "failure", "timeout", "denied", "cancelled")),
            100 + rng.randrange(5),
            rng.lognormvariate(6, 1.5),
        )
        for _ in range(1000)
    ]
    return calls, tasks


def grouped(counts: BreakerCounts, calls: list[tuple], tasks: list[tuple]):
    """What phase 1 would send for these calls and tasks."""
    spec = counts.spec
    cg: dict[tuple, list[int]] = {}
    for p, agent, integ, status, et, sec, lat in calls:
        n = cg.setdefault((p, agent, integ, status, et, sec), [0] * (1 + len(spec.call_slow_ms)))
        n[0] += 1
        for i, t in enumerate(spec.call_slow_ms, 1):
            n[i] += lat >= t
    tg: dict[tuple, list[int]] = {}
    for p, agent, outcome, sec, dur in tasks:
        n = tg.setdefault((p, agent, outcome, sec), [0] * (1 + len(spec.task_slow_ms)))
        n[0] += 1
        for i, t in enumerate(spec.task_slow_ms, 1):
            n[i] += dur >= t
    call_groups: list[CallGroup] = [(*k, v[0], tuple(v[1:])) for k, v in cg.items()]
    task_groups: list[TaskGroup] = [(*k, v[0], tuple(v[1:])) for k, v in tg.items()]
    return call_groups, task_groups


def test_groups_count_as_the_calls_one_by_one() -> None:
    counts = BreakerCounts(SECTION, partitions=4)
    assert counts.spec.call_slow_ms == (500.0, 2000.0)
    assert counts.spec.task_slow_ms == (1000.0,)
    calls, tasks = calls_and_tasks(7)
    for p in range(3):
        counts.assign(p)
    counts.add(*grouped(counts, calls, tasks))

    want: dict[tuple, list[int]] = {}
    for p, agent, integ, status, et, sec, lat in calls:
        for bid in (integration_id(integ), agent_integration_id(agent, integ)):
            c = classify_call(counts.policies.of(bid), status, et, lat)
            if c[0]:
                cell = want.setdefault((p, bid, sec), [0, 0, 0])
                for i in range(3):
                    cell[i] += c[i]
    for p, agent, outcome, sec, dur in tasks:
        bid = agent_breaker_id(agent)
        c = classify_task(counts.policies.of(bid), outcome, dur)
        if c[0]:
            cell = want.setdefault((p, bid, sec), [0, 0, 0])
            for i in range(3):
                cell[i] += c[i]

    got: dict[tuple, list[int]] = {}
    for dest, key, value in counts.take():
        doc = orjson.loads(value)
        assert key == str(doc["src"]).encode()
        for bid, sec, *cell in doc["cells"]:
            assert owner_partition(bid, 4) == dest
            got[(doc["src"], bid, sec)] = cell
    assert got == want
    assert counts.take() == []  # nothing changed since


def test_cells_are_absolute_and_only_for_owned_recent_partitions() -> None:
    counts = BreakerCounts(SECTION, partitions=1)
    counts.assign(0)
    group: CallGroup = (0, "a-2", "db", "error", None, 100, 3, (1, 0))
    counts.add([group], [])
    counts.take()
    counts.add([group, (1, "a-2", "db", "ok", None, 100, 5, (0, 0))], [])  # 1: not ours
    counts.add([(0, "a-2", "db", "ok", None, 40, 5, (0, 0))], [], oldest_s=50)  # too old
    [(_, _, value)] = counts.take()
    cells = sorted(orjson.loads(value)["cells"])
    # the second batch's cell carries the total of both batches, not the increment
    assert cells == [["agent:a-2|integration:db", 100, 6, 6, 2], ["integration:db", 100, 6, 6, 2]]
    counts.revoke(0)
    counts.add([group], [])
    assert counts.take() == []
