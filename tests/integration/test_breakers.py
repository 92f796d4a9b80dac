"""Fleet-wide breakers on the real broker: one breaker stage process, three SDK agent processes
calling a `flaky` integration, the operator CLI. The integration's health is a file the test
creates and removes; each agent logs every attempt and the state its guard holds."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.topics import Topics

from .helpers import consumer_from_start, process_env

POLICY = """
breakers:
  defaults:
    failure_rate_threshold: 0.5
    minimum_calls: 10
    sliding_window_s: 5
    wait_in_open_s: 2
    permitted_calls_in_half_open: 4
  per_agent: false
"""
AGENT = Path(__file__).with_name("breaker_agent.py")
FLAKY = "integration:flaky"
# the transitions the processors may make; operators may set anything
EDGES = {("OPEN", "HALF_OPEN"), ("HALF_OPEN", "OPEN"), ("HALF_OPEN", "CLOSED"), ("CLOSED", "OPEN")}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g}s waiting until {what}")


class Setup:
    def __init__(self, bootstrap: str, topics: Topics, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.workdir = workdir
        self.env = process_env(bootstrap, topics, workdir, POLICY)
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, *args],
            env=self.env,
            stdout=(self.workdir / log).open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.procs.append(p)
        return p

    def stage(self, *, metrics: bool = True) -> subprocess.Popen[bytes]:
        """The breaker stage (returned) and the metric worker whose ingest pass counts the
        calls."""
        cmd = ["-m", "fleetpulse.cli", "processors", "run", "--stage", "breakers"]
        if metrics:
            self.spawn([*cmd[:-1], "metrics"], "metrics.log")
        return self.spawn(cmd, "stage.log")

    def agent(self, agent_id: str) -> None:
        self.spawn([str(AGENT), agent_id, str(self.workdir)], f"{agent_id}.log")

    def results(self, agent_id: str) -> list[dict[str, Any]]:
        f = self.workdir / f"{agent_id}.jsonl"
        if not f.exists():
            return []
        return [json.loads(line) for line in f.read_text().splitlines() if line.endswith("}")]

    def last(self, agent_id: str, n: int) -> list[dict[str, Any]]:
        return self.results(agent_id)[-n:]

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "fleetpulse.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr + out.stdout
        return out.stdout

    def control_log(self) -> list[dict[str, Any]]:
        """Every control message in log order."""
        consumer = consumer_from_start(self.bootstrap, self.topics.control)
        codec = AvroCodec(logical_types=False)
        records: list[dict[str, Any]] = []
        try:
            while batch := consumer.consume(1000, timeout=1.0):
                records += [codec.decode(m.value() or b"", "ControlMessage") for m in batch]
        finally:
            consumer.close()
        return records

    def close(self) -> None:
        (self.workdir / "stop").touch()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def setup(kafka: Any, fresh_prefix: Topics, tmp_path: Path) -> Any:
    s = Setup(kafka.bootstrap_servers, fresh_prefix, tmp_path)
    yield s
    s.close()


AGENTS = ["agent-0", "agent-1", "agent-2"]


def all_agents(s: Setup, n: int, pred: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
    def check() -> bool:
        return all(len(last := s.last(a, n)) == n and all(pred(r) for r in last) for a in AGENTS)

    return check


def test_fleet_breaker_opens_probes_closes_and_obeys_operators(setup: Setup) -> None:
    s = setup
    stage = s.stage()
    for a in AGENTS:
        s.agent(a)
    wait_for(lambda: all(s.results(a) for a in AGENTS), "every agent connected")

    # 1. the integration fails: the fleet-wide breaker opens and every SDK short-circuits
    wait_for(
        lambda: all(any(r["r"] == "short" for r in s.results(a)) for a in AGENTS),
        "every agent short-circuits flaky",
    )
    opened = [r for r in s.control_log() if r["target_id"] == FLAKY and r["state"] == "OPEN"]
    assert opened and opened[0]["actor"] == "processors"
    assert opened[0]["measurements"]["calls"] >= 10
    assert opened[0]["measurements"]["failure_rate"] >= 0.5
    assert "failure rate" in opened[0]["reason"]

    # 2. after the wait, probes go through (and fail: back to OPEN)
    wait_for(
        lambda: any(
            r["r"] == "error" and r.get("s") == "HALF_OPEN" for a in AGENTS for r in s.results(a)
        ),
        "a probe call is made in HALF_OPEN",
    )

    # 3. the integration recovers: the probes succeed and the breaker closes fleet-wide
    (s.workdir / "healthy").touch()
    wait_for(
        all_agents(s, 5, lambda r: r["r"] == "ok" and r["s"] == "CLOSED"), "the breaker closes"
    )
    flaky = [r for r in s.control_log() if r["target_id"] == FLAKY]
    assert [r["sequence"] for r in flaky] == sorted({r["sequence"] for r in flaky})
    assert all((a["state"], b["state"]) in EDGES for a, b in itertools.pairwise(flaky))
    assert flaky[-1]["state"] == "CLOSED" and "probes succeeded" in flaky[-1]["reason"]

    # 4. an operator forces it open: calls stop fleet-wide although flaky is healthy
    s.cli("breakers", "force-open", FLAKY, "--reason", "vendor incident", "--as", "user:ana")
    wait_for(all_agents(s, 3, lambda r: r["r"] == "short"), "force-open stops every agent")
    shown = json.loads(s.cli("breakers", "show", FLAKY, "--json"))
    assert shown["state"] == "FORCED_OPEN" and shown["actor"] == "user:ana"
    assert shown["reason"] == "vendor incident"
    listed = json.loads(s.cli("breakers", "list", "--json"))
    assert [b["id"] for b in listed] == [FLAKY]
    time.sleep(3)  # longer than wait_in_open_s: the processors must not half-open it
    assert all(r["r"] == "short" for a in AGENTS for r in s.last(a, 3))
    s.cli("breakers", "reset", FLAKY, "--reason", "vendor fixed it")
    wait_for(all_agents(s, 3, lambda r: r["r"] == "ok"), "reset lets calls through")

    # 5. an operator pauses one agent: it stops, the others go on
    s.cli("agents", "pause", "agent-1", "--reason", "bad prompt", "--as", "user:ops")
    wait_for(lambda: all(r["r"] == "paused" for r in s.last("agent-1", 3)), "agent-1 pauses")
    assert all(r["r"] == "ok" for a in ("agent-0", "agent-2") for r in s.last(a, 3))
    s.cli("agents", "resume", "agent-1", "--reason", "prompt fixed")
    wait_for(lambda: all(r["r"] == "ok" for r in s.last("agent-1", 3)), "agent-1 resumes")

    # 6. a processor restart keeps the states: kill the stage while flaky is OPEN
    (s.workdir / "healthy").unlink()
    wait_for(all_agents(s, 3, lambda r: r["r"] == "short"), "the breaker opens again")
    s.cli("breakers", "force-open", "integration:ledger", "--reason", "migration")
    stage.send_signal(signal.SIGKILL)
    stage.wait(10)
    held = [r for r in s.control_log() if r["target_id"] == FLAKY][-1]
    assert held["state"] in ("OPEN", "HALF_OPEN")
    s.stage(metrics=False)
    (s.workdir / "healthy").touch()
    wait_for(all_agents(s, 5, lambda r: r["r"] == "ok" and r["s"] == "CLOSED"), "closes again")
    log = s.control_log()
    after = [r for r in log if r["target_id"] == FLAKY and r["sequence"] > held["sequence"]]
    chain = [held, *after]
    # the new stage carried on from the held state: no fresh CLOSED, no skipped HALF_OPEN
    assert all((a["state"], b["state"]) in EDGES for a, b in itertools.pairwise(chain))
    ledger = [r for r in log if r["target_id"] == "integration:ledger"]
    assert [r["state"] for r in ledger] == ["FORCED_OPEN"]  # left alone across the restart
