"""`fleetpulse demo`: the devstack, a small fleet through the SDK, the events read back.

The demo issue grows this into the full incident show; today it proves the foundation end to
end on real Kafka: produce through the SDK, consume back, count, and check nothing was lost.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from fleetpulse.config import DevstackSettings
from fleetpulse.devstack import Devstack
from fleetpulse.events.codec import AvroCodec
from fleetpulse.kafka_config import consumer_config
from fleetpulse.sdk.fleet import Fleet
from fleetpulse.sim.agents import run_agent, standard_profiles


def run_demo(
    settings: DevstackSettings, *, agents: int, seconds: float, keep: bool, console: Console
) -> dict[str, Any]:
    stack = Devstack(settings)
    started_here = stack.running_node() is None
    with console.status("starting the devstack (Apache Kafka, KRaft)..."):
        status = stack.up()
    bootstrap = status["bootstrap_servers"]
    console.print(f"Kafka {status['kafka']['version']} on [bold]{bootstrap}[/]")
    run_id = os.urandom(4).hex()
    try:
        produced = _run_fleet(settings, bootstrap, agents, seconds, run_id, console)
        consumed = _read_back(settings, bootstrap, run_id, sum(produced.values()), console)
        _report(produced, consumed, console)
        return {"produced": produced, "consumed": consumed}
    finally:
        if keep or not started_here:
            console.print("devstack left running; stop it with [bold]fleetpulse dev down[/]")
        else:
            stack.down()
            console.print("devstack stopped")


def _run_fleet(
    settings: DevstackSettings,
    bootstrap: str,
    n: int,
    seconds: float,
    run_id: str,
    console: Console,
) -> Counter[str]:
    profiles = standard_profiles(n)
    stop = threading.Event()
    produced: Counter[str] = Counter()
    fleets = [
        Fleet.connect(
            p.agent_id,
            agent_version=p.version,
            agent_role=p.role,
            bootstrap_servers=bootstrap,
            topic_prefix=settings.topic_prefix,
            home=settings.home,
        )
        for p in profiles
    ]

    def work(i: int) -> None:
        produced[profiles[i].agent_id] = run_agent(
            fleets[i], profiles[i], stop, seed=i, attributes={"demo_run": run_id}
        )

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    with console.status(f"{n} agents working through the SDK for {seconds:.0f}s..."):
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        for f in fleets:
            f.close()
    console.print(f"{sum(produced.values()):,} task events produced by {n} agents")
    return produced


def _read_back(
    settings: DevstackSettings, bootstrap: str, run_id: str, expected: int, console: Console
) -> dict[str, Counter[str]]:
    topic = settings.topics.task_events
    consumer = Consumer(consumer_config(bootstrap, f"fleetpulse-demo-{run_id}"))
    md = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    codec = AvroCodec()
    per_agent: dict[str, Counter[str]] = {}
    seen = 0
    deadline = time.monotonic() + 30
    with console.status("reading the events back from Kafka..."):
        while seen < expected and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                if msg.error():
                    continue
                event = codec.decode(
                    msg.value() or b"",
                    "TaskEvent",
                    topic=topic,
                    partition=msg.partition(),
                    offset=msg.offset(),
                )
                if event["attributes"].get("demo_run") != run_id:
                    continue
                seen += 1
                c = per_agent.setdefault(event["agent_id"], Counter())
                c["tasks"] += 1
                c[event["outcome"]] += 1
                c["tool_calls"] += len(event["tool_calls"])
                c["cost_micros"] += event["cost_micros"]
                c["duration_ms"] += int(event["duration_ms"])
    consumer.close()
    return per_agent


def _report(produced: Counter[str], consumed: dict[str, Counter[str]], console: Console) -> None:
    table = Table(title="per-agent tasks, read back from fleetpulse.task-events")
    table.add_column("agent", no_wrap=True)
    for col in ("produced", "consumed", "failed", "fail %", "tools", "cost"):
        table.add_column(col, justify="right", no_wrap=True)
    for agent in sorted(produced):
        c = consumed.get(agent, Counter())
        rate = c["failure"] / c["tasks"] if c["tasks"] else 0.0
        table.add_row(
            agent,
            f"{produced[agent]:,}",
            f"{c['tasks']:,}",
            f"{c['failure']:,}",
            f"{rate:.1%}",
            f"{c['tool_calls']:,}",
            f"${c['cost_micros'] / 1e6:,.2f}",
        )
    console.print(table)
    total_p, total_c = sum(produced.values()), sum(c["tasks"] for c in consumed.values())
    verdict = "[bold green]nothing lost[/]" if total_p == total_c else "[bold red]MISMATCH[/]"
    console.print(f"produced {total_p:,}, consumed {total_c:,}: {verdict}")
