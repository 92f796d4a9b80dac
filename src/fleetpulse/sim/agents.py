"""Simulated agents that do their work through the real SDK.

An agent plans each task first (seeded: the record it works on, tokens, model and call
latencies drawn from log-normal distributions, which calls fail and why), then runs the plan
through `fleet.task`, `task.tool`, `task.usage` and `task.require_approval`, so breakers,
pauses, permissions and approvals act on it as on any agent. Latencies are simulated, not
slept: the agent's clock (`SimClock`) starts the task that much in the past, so the event is
produced when the task "ends" and carries realistic durations without holding a thread.

The faults a scenario injects live in one `World` that every agent reads when it plans.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleetpulse.contract.errors import (
    AgentPausedError,
    ApprovalDeniedError,
    ApprovalExpiredError,
    CircuitOpenError,
    PermissionDeniedError,
)
from fleetpulse.sdk.fleet import Fleet
from fleetpulse.sim.scenario import AgentGroup, IntegrationSpec, Step, ToolUse


class SimClock:
    """Wall time that ends each task now, with simulated durations inside it."""

    def __init__(self) -> None:
        self._base_us = time.time_ns() // 1000
        self._offset_ns = 0

    def begin(self, planned_ms: float) -> None:
        self._base_us = time.time_ns() // 1000 - int(planned_ms * 1000)
        self._offset_ns = 0

    def spend(self, ms: float) -> None:
        self._offset_ns += int(ms * 1_000_000)

    def time_us(self) -> int:
        return self._base_us + self._offset_ns // 1000

    def perf_ns(self) -> int:
        return self._offset_ns


class OutputValidationError(Exception):
    """The model's output did not validate (the agent's own failure)."""


class UpstreamDataError(Exception):
    """The input, another agent's output, was bad."""


@dataclass
class World:
    """The faults in force, switched by the timeline; agents read it when they plan."""

    integrations: dict[str, IntegrationSpec]
    outages: dict[str, Step] = field(default_factory=dict)
    slow_agents: dict[str, float] = field(default_factory=dict)
    slow_integrations: dict[str, float] = field(default_factory=dict)
    runaway: dict[str, float] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)
    bad_output: set[str] = field(default_factory=set)
    regressed: dict[tuple[str, int], float] = field(default_factory=dict)
    one_shots: dict[str, list[Step]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_one_shots(self, agent_id: str) -> list[Step]:
        with self.lock:
            return self.one_shots.pop(agent_id, [])


@dataclass(frozen=True)
class Call:
    tool: ToolUse
    latency_ms: float
    fails: str | None  # None, "error" or "timeout"


@dataclass(frozen=True)
class Plan:
    record: str
    input_tokens: int
    output_tokens: int
    model_ms: float
    calls: tuple[Call, ...]
    failure: type[Exception] | None
    approval_amount: int | None

    @property
    def total_ms(self) -> float:
        return self.model_ms + sum(c.latency_ms for c in self.calls)


@dataclass
class Emitted:
    """What the simulator saw an agent do: one task event, as produced."""

    produced_at: float  # wall clock, seconds
    event: dict[str, Any]


Observer = Callable[[Emitted], None]


def plan_task(
    g: AgentGroup, w: World, rng: random.Random, agent_id: str, version: int | None, done: int
) -> Plan:
    """One task of ``agent_id`` (``done`` tasks so far, running bundle ``version``) under the
    faults in force: pure given the seed and the world."""
    factor = w.slow_agents.get(agent_id, 1.0)
    burn = w.runaway.get(agent_id, 1.0)
    i_tok = max(1, int(rng.lognormvariate(math.log(g.tokens[0]), 0.4) * burn))
    o_tok = max(1, int(rng.lognormvariate(math.log(g.tokens[1]), 0.5) * burn))
    # a runaway loop's calls take longer, but not in proportion to the tokens they burn
    speed = g.tokens_per_s * burn / min(burn, 3.0)
    model_ms = (rng.lognormvariate(math.log(350), 0.3) + 1000 * o_tok / speed) * factor
    calls = []
    for tool in g.tools:
        if tool.share < 1 and rng.random() >= tool.share:
            continue
        spec = w.integrations[tool.integration]
        slow = factor * w.slow_integrations.get(tool.integration, 1.0)
        latency = rng.lognormvariate(math.log(spec.latency_ms), spec.spread) * slow
        fails: str | None = "error" if rng.random() < spec.error_rate else None
        outage = w.outages.get(tool.integration)
        if outage is not None:
            fails = outage.mode
            latency = outage.latency_ms if outage.mode == "error" else 5000.0
        calls.append(Call(tool, latency, fails))
    failure: type[Exception] | None = None
    rate = g.failure_rate
    if version is not None:
        rate = max(rate, w.regressed.get((agent_id, version), 0.0))
    if agent_id in w.bad_output:
        rate = max(rate, 0.8)
    if rng.random() < rate:
        failure = OutputValidationError
    if g.upstream is not None and g.upstream in w.bad_output and rng.random() < 0.7:
        failure = UpstreamDataError
    approval = None
    if g.approvals is not None and (done + 1) % g.approvals.every == 0:
        approval = rng.randint(*g.approvals.amounts)
    record = f"customer/{rng.randint(1, g.records)}"
    return Plan(record, i_tok, o_tok, model_ms, tuple(calls), failure, approval)


class SimAgent:
    """One simulated agent: plans and runs tasks at its rate until stopped."""

    def __init__(
        self,
        agent_id: str,
        group: AgentGroup,
        fleet: Fleet,
        clock: SimClock,
        world: World,
        *,
        seed: int,
        observe: Observer,
    ) -> None:
        self.agent_id = agent_id
        self.group = group
        self.fleet = fleet
        self.clock = clock
        self.world = world
        self.rng = random.Random(seed)
        self.observe = observe
        self.tasks = 0
        self.paused_skips = 0

    # -- planning (pure given the seed and the world) -------------------------------------

    def plan(self) -> Plan:
        return plan_task(
            self.group, self.world, self.rng, self.agent_id, self.fleet.config_version, self.tasks
        )

    # -- running through the SDK ----------------------------------------------------------

    def run(self, stop: threading.Event, started: float) -> None:
        """Tasks at the group's rate (Poisson arrivals; scheduled agents in bursts on their
        interval) until ``stop`` is set."""
        g = self.group
        interval = g.schedule.interval_s if g.schedule and g.schedule.interval_s else None
        next_at = started + (self.rng.random() * (interval or 1 / g.rate))
        while not stop.is_set():
            if stop.wait(max(0.0, next_at - time.time())):
                return
            for step in self.world.take_one_shots(self.agent_id):
                self.attempt_write(step)
            if interval is not None:
                next_at += interval
                burst = max(1, round(g.rate * interval))
                if self.agent_id not in self.world.stopped:
                    for _ in range(min(burst, 5)):
                        self.run_task()
            else:
                next_at += self.rng.expovariate(g.rate)
                if self.agent_id not in self.world.stopped:
                    self.run_task()
            if next_at < time.time() - 5:  # fell behind (paused, approvals): do not catch up
                next_at = time.time()

    def run_task(self) -> None:
        plan = self.plan()
        self.tasks += 1
        self.clock.begin(plan.total_ms)
        try:
            task = self.fleet.task(
                self.group.task_type,
                input={"record": plan.record, "n": self.tasks},
                upstream_agent_id=self.group.upstream,
            )
        except AgentPausedError:
            self.paused_skips += 1
            return
        try:
            with task:
                self.clock.spend(plan.model_ms)
                task.usage(
                    model=self.group.model,
                    input_tokens=plan.input_tokens,
                    output_tokens=plan.output_tokens,
                )
                for call in plan.calls:
                    self._call(task, call.tool, plan.record, call.latency_ms, call.fails)
                if plan.approval_amount is not None:
                    self._gated(task, plan)
                if plan.failure is not None:
                    raise plan.failure(f"{self.agent_id}: simulated {plan.failure.__name__}")
        except (
            CircuitOpenError,
            PermissionDeniedError,
            ApprovalDeniedError,
            ApprovalExpiredError,
            ConnectionError,
            TimeoutError,
            OutputValidationError,
            UpstreamDataError,
        ):
            pass  # recorded on the event; the agent moves on
        if task.event is not None:
            self.observe(Emitted(time.time(), task.event))

    def _call(
        self, task: Any, tool: ToolUse, record: str, latency: float, fails: str | None
    ) -> None:
        with task.tool(tool.integration, tool.operation, access=tool.access, target=record):
            self.clock.spend(latency)
            if fails == "timeout":
                raise TimeoutError(f"{tool.integration} did not answer")
            if fails == "error":
                raise ConnectionError(f"{tool.integration} unavailable")

    def _gated(self, task: Any, plan: Plan) -> None:
        spec = self.group.approvals
        assert spec is not None and plan.approval_amount is not None
        integration, operation = spec.action.split(".", 1)
        waited = time.monotonic()
        try:
            task.require_approval(
                spec.action,
                summary=f"{operation} ${plan.approval_amount} on {plan.record}",
                details={"amount": plan.approval_amount, "record": plan.record},
                timeout=30,
            )
        finally:
            self.clock.spend((time.monotonic() - waited) * 1000)  # the human's time counts
        tool = ToolUse(integration=integration, operation=operation, access="write")
        latency = self.rng.lognormvariate(
            math.log(self.world.integrations[integration].latency_ms), 0.3
        )
        self._call(task, tool, plan.record, latency, None)

    def attempt_write(self, step: Step) -> None:
        """A write the agent's role does not grant: the SDK refuses it before it is made."""
        assert step.integration is not None
        tool = ToolUse(integration=step.integration, operation="update", access="write")
        record = step.target or f"customer/{self.rng.randint(1, self.group.records)}"
        for _ in range(step.count):
            self.clock.begin(0)
            try:
                task = self.fleet.task(
                    self.group.task_type, input={"record": record, "write": True}
                )
            except AgentPausedError:
                self.paused_skips += 1  # a paused agent attempts nothing
                continue
            try:
                with task:
                    self._call(task, tool, record, 0, None)
            except PermissionDeniedError:
                pass
            if task.event is not None:
                self.observe(Emitted(time.time(), task.event))
