"""A seeded fleet, an exact oracle for MetricSnapshots, and processor worker processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from fleetpulse.contract.clock import ManualClock
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.topics import Topics
from fleetpulse.processors.figures.aggregate import COUNTERS
from fleetpulse.sdk.fleet import Fleet

from .helpers import consumer_from_start, read_all

INTEGRATIONS = ["salesforce", "gmail", "postgres", "slack", "stripe"]
TASK_TYPES = ["triage", "summarize", "refund"]
MODELS = ["gpt-4o", "claude-sonnet-4", "gemini-2.5-pro"]
QUANTILES = {
    "latency_p50_ms": 0.5,
    "latency_p90_ms": 0.9,
    "latency_p95_ms": 0.95,
    "latency_p99_ms": 0.99,
}


def produce_fleet(
    bootstrap: str, topics: Topics, *, agents: int = 20, tasks: int = 30, seed: int = 42
) -> int:
    """20 agents, several versions, task types, models and integrations; outcomes and latencies
    from a seeded generator, produced through the SDK. Event times end near now."""
    rng = random.Random(seed)
    produced = 0
    for a in range(agents):
        clock = ManualClock(int((time.time() - 40) * 1_000_000))
        fleet = Fleet.connect(
            f"agent-{a:02d}",
            agent_version=f"v{a % 3 + 1}",
            clock=clock,
            bootstrap_servers=bootstrap,
            topic_prefix=topics.prefix,
            spool_dir=Path(f"/tmp/fp-spool-{uuid.uuid4().hex[:8]}"),
        )
        with fleet:
            for _ in range(tasks):
                fail = rng.random() < 0.15
                try:
                    with fleet.task(rng.choice(TASK_TYPES), input={"n": rng.random()}) as task:
                        for integration in rng.sample(INTEGRATIONS, 2):
                            with task.tool(integration, "call", access="read") as call:
                                clock.advance(ms=rng.lognormvariate(4, 1))
                                r = rng.random()
                                if r < 0.1:
                                    call.mark("error", "HTTP500")
                                elif r < 0.13:
                                    call.mark("denied")
                        task.usage(model=MODELS[a % 3], input_tokens=rng.randint(10, 900))
                        clock.advance(ms=rng.lognormvariate(5, 1))
                        if fail:
                            raise (
                                TimeoutError("upstream")
                                if rng.random() < 0.3
                                else RuntimeError("boom")
                            )
                except (TimeoutError, RuntimeError):
                    pass
                produced += 1
            fleet.flush()
    return produced


def read_events(bootstrap: str, topic: str, expected: int) -> list[dict[str, Any]]:
    """The TaskEvents on `topic`, timestamps as epoch micros; undecodable records left out."""
    return read_all(
        bootstrap, topic, expected, idle=0.5, logical_types=False, skip_undecodable=True
    )


def oracle(events: list[dict[str, Any]], snap: dict[str, Any]) -> dict[str, Any]:
    """The exact figures ``snap`` should carry, computed from the events themselves."""
    dims = snap["dimensions"]
    ws, we = snap["window_start"], snap["window_end"]
    in_window = [e for e in events if ws <= e["ended_at"] < we]
    st = snap["scope_type"]
    # the field names only; every value below is computed from the events themselves
    fig: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    latencies: list[float] = []

    def matches(e: dict[str, Any]) -> bool:
        if "agent_id" in dims and e["agent_id"] != dims["agent_id"]:
            return False
        if "agent_version" in dims and e["agent_version"] != dims["agent_version"]:
            return False
        if "task_type" in dims and e["task_type"] != dims["task_type"]:
            return False
        return not ("model" in dims and e["model"] != dims["model"])

    for e in in_window:
        if not matches(e):
            continue
        if st in ("integration", "agent_integration"):
            calls = [c for c in e["tool_calls"] if c["integration"] == dims["integration"]]
            if not calls:
                continue
            fig["task_count"] += 1
            fig[e["outcome"]] += 1
            for c in calls:
                fig["tool_calls"] += 1
                fig["cost_micros"] += c["cost_micros"]
                if c["status"] in ("ok", "error", "timeout"):
                    latencies.append(c["latency_ms"])
                    fig["tool_errors"] += c["status"] != "ok"
                elif c["status"] == "denied":
                    fig["tool_denied"] += 1
                else:
                    fig["tool_short_circuited"] += 1
        else:
            fig["task_count"] += 1
            fig[e["outcome"]] += 1
            fig["cost_micros"] += e["cost_micros"]
            fig["input_tokens"] += e["input_tokens"]
            fig["output_tokens"] += e["output_tokens"]
            latencies.append(e["duration_ms"])
            for c in e["tool_calls"]:
                fig["tool_calls"] += 1
                fig["tool_errors"] += c["status"] in ("error", "timeout")
                fig["tool_denied"] += c["status"] == "denied"
                fig["tool_short_circuited"] += c["status"] == "short_circuited"
    n = fig["task_count"]
    fig["failure_rate"] = (fig["failure"] + fig["timeout"]) / n if n else 0.0
    attempted = fig["tool_calls"] - fig["tool_denied"] - fig["tool_short_circuited"]
    fig["tool_error_rate"] = fig["tool_errors"] / attempted if attempted else 0.0
    ordered = sorted(latencies)
    for name, q in QUANTILES.items():
        fig[name] = ordered[int(q * (len(ordered) - 1))] if ordered else 0.0
    return fig


def differences(events: list[dict[str, Any]], snap: dict[str, Any]) -> list[str]:
    want = oracle(events, snap)
    out = []
    for name, value in want.items():
        got = snap[name]
        if name in QUANTILES:
            if abs(got - value) > 0.01 * value + 1e-9:
                out.append(f"{name}: {got} vs exact {value}")
        elif got != value:
            out.append(f"{name}: {got} != {value}")
    return out


def expected_scopes(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    out = set()
    for e in events:
        a = e["agent_id"]
        out |= {
            ("agent", f"agent={a}"),
            ("agent_version", f"agent={a}|version={e['agent_version']}"),
            ("agent_task_type", f"agent={a}|task_type={e['task_type']}"),
        }
        if e["model"]:
            out.add(("model", f"model={e['model']}"))
        for c in e["tool_calls"]:
            out.add(("agent_integration", f"agent={a}|integration={c['integration']}"))
            out.add(("integration", f"integration={c['integration']}"))
    return out


class SnapshotReader:
    """Follows the metrics topic, keeping the latest snapshot per (scope, horizon)."""

    def __init__(self, bootstrap: str, topic: str):
        self.codec = AvroCodec(logical_types=False)
        self.consumer = consumer_from_start(bootstrap, topic)
        self.latest: dict[tuple[str, str, int], dict[str, Any]] = {}

    def poll(self, seconds: float = 1.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for m in self.consumer.consume(10_000, timeout=0.2):
                if m.error() is None:
                    s = self.codec.decode(m.value() or b"", "MetricSnapshot")
                    self.latest[(s["scope_type"], s["scope_id"], s["horizon_s"])] = s

    def wait_until_exact(
        self, events: list[dict[str, Any]], timeout: float = 120
    ) -> dict[tuple[str, str, int], list[str]]:
        """Poll until every expected scope's latest snapshots equal the oracle; return the
        remaining differences (empty on success)."""
        scopes = expected_scopes(events)
        deadline = time.monotonic() + timeout
        problems: dict[tuple[str, str, int], list[str]] = {}
        while time.monotonic() < deadline:
            self.poll(1.0)
            problems = {}
            for st, sid in scopes:
                for h in (60, 300, 3600, 86400):
                    snap = self.latest.get((st, sid, h))
                    if snap is None:
                        problems[(st, sid, h)] = ["no snapshot yet"]
                    elif diff := differences(events, snap):
                        problems[(st, sid, h)] = diff
            if not problems:
                return {}
        return problems

    def close(self) -> None:
        self.consumer.close()


class Worker:
    """One `fleetpulse processors run` process."""

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        home: Path,
        *,
        web_port: int,
        runtime: str = "kafka",
        checkpoint_s: float = 60,
        instance_id: str | None = None,
    ):
        env = {
            **os.environ,
            "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
            "FLEETPULSE_TOPIC_PREFIX": topics.prefix,
            "FLEETPULSE_HOME": str(home),
            "FLEETPULSE_PROCESSORS_CADENCE_S": "1",
            "FLEETPULSE_PROCESSORS_LONG_CADENCE_S": "2",
            "FLEETPULSE_PROCESSORS_PARTIALS_INTERVAL_S": "0.5",
            "FLEETPULSE_PROCESSORS_WEB_PORT": str(web_port),
            # the test fleets are small: make every batch take the native pass anyway
            "FLEETPULSE_PROCESSORS_INGEST_NATIVE_MIN": "0",
            "FLEETPULSE_PROCESSORS_CHECKPOINT_INTERVAL_S": str(checkpoint_s),
            "FLEETPULSE_LOG_LEVEL": "INFO",  # tests read what the worker did off its log
        }
        if instance_id:  # a static member: its restart takes the partitions back at once
            env["FLEETPULSE_PROCESSORS_INSTANCE_ID"] = instance_id
        self.log = home / f"worker-{web_port}.log"
        home.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetpulse.cli",
                "processors",
                "run",
                "--stage",
                "metrics",
                "--runtime",
                runtime,
            ],
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.web_port = web_port

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def wait_for_group(bootstrap: str, group: str, members: int, timeout: float = 90.0) -> None:
    """Wait until ``group`` is stable with ``members`` members that all hold partitions, so a
    test that needs every worker to take part does not race the second worker's start."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
        except Exception:  # the group does not exist yet
            desc = None
        if (
            desc is not None
            and desc.state == ConsumerGroupState.STABLE
            and len(desc.members) == members
            and all(m.assignment.topic_partitions for m in desc.members)
        ):
            return
        time.sleep(0.5)
    raise AssertionError(f"group {group} did not reach {members} members with partitions")
