"""The agents a scaled scenario adds, planned in bulk and produced by one producer.

``fleetpulse sim run --scale N`` runs N times as many agents per group. Thousands of SDK
``Fleet`` objects, each with a thread, would spend the machine on the simulator instead of the
pipeline, so only the agents the scenario names run through the SDK (``runner.py``); the
others are simulated here, one tick at a time:

1. each group's extra agents start ``rate x agents x tick`` tasks per tick (the fraction
   carried to the next tick), each given to one of them at random;
2. each task is planned exactly as a named agent plans it (``agents.plan_task``: the same
   distributions, outages, slow integrations, bad upstreams), then *played* against the same
   control-topic guard the SDK agents use: a paused agent skips its task, a call through an
   open breaker is short-circuited and ends the task, a failing call ends it as the SDK does;
3. the events are encoded with the SDK's codec and produced with the simulator's one producer,
   keyed by agent id like every TaskEvent.

What the extra agents do not do: ask for approvals, attempt the timeline's one-shot writes, or
have bundles of their own (their events carry version ``1`` and their group's role). When a
tick's work takes longer than the tick, the generator skips ahead rather than bursting to
catch up, and counts the ticks it skipped (``SimResult.bulk_behind``).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleetpulse.contract.errors import AgentPausedError, CircuitOpenError
from fleetpulse.contract.events import AvroCodec
from fleetpulse.sdk.fleet import Fleet
from fleetpulse.sdk.task import input_hash
from fleetpulse.sim.agents import Plan, World, plan_task
from fleetpulse.sim.scenario import AgentGroup, Scenario

_OUTCOME = {"timeout": ("timeout", "TimeoutError"), "error": ("failure", "ConnectionError")}


@dataclass
class BulkStats:
    """What the bulk generator did: events by outcome, skipped tasks and ticks."""

    outcomes: dict[str, int] = field(default_factory=dict)
    paused_skips: int = 0
    behind: int = 0

    @property
    def events(self) -> int:
        return sum(self.outcomes.values())


class BulkFleet:
    """The scenario's extra agents (``AgentGroup.extra_ids``) on one thread and one producer.

    Example:
        >>> bulk = BulkFleet(scenario.scaled(100), world, base_fleet)   # doctest: +SKIP
        >>> bulk.run(stop, started=time.time())                         # doctest: +SKIP
    """

    def __init__(
        self,
        scenario: Scenario,
        world: World,
        base: Fleet,
        *,
        tick_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.groups = [(g, g.extra_ids()) for g in scenario.agents if g.scale > 1]
        self.world = world
        self.base = base
        self.tick_s = tick_s
        self.clock = clock
        self.rng = random.Random(scenario.seed * 1000 + 999_983)
        self.stats = BulkStats()
        self._carry = [0.0] * len(self.groups)
        self._encode = AvroCodec(registry_url=base.settings.schema_registry_url).encoder(
            "TaskEvent", base.topic
        )

    @property
    def agents(self) -> int:
        return sum(len(ids) for _, ids in self.groups)

    def run(self, stop: threading.Event, started: float) -> None:
        """Produce one tick of tasks every ``tick_s`` until ``stop`` is set."""
        next_at = started
        while True:
            next_at += self.tick_s
            if stop.wait(max(0.0, next_at - self.clock())):
                return
            if self.clock() - next_at > 5 * self.tick_s:  # fell behind: skip, do not burst
                self.stats.behind += 1
                next_at = self.clock()
            self.tick(self.tick_s)

    def tick(self, dt: float) -> int:
        """Plan, play and produce ``dt`` seconds of tasks; return how many events went out."""
        sent = 0
        for gi, (g, ids) in enumerate(self.groups):
            due = g.rate * len(ids) * dt + self._carry[gi]
            n = int(due)
            self._carry[gi] = due - n
            for _ in range(n):
                agent_id = ids[self.rng.randrange(len(ids))]
                if agent_id in self.world.stopped:
                    continue
                event = self.play(agent_id, g)
                if event is None:
                    continue
                self.base.transport.produce(self.base.topic, agent_id.encode(), self._encode(event))
                outcomes = self.stats.outcomes
                outcomes[event["outcome"]] = outcomes.get(event["outcome"], 0) + 1
                sent += 1
        return sent

    def play(self, agent_id: str, g: AgentGroup) -> dict[str, Any] | None:
        """One planned task as a TaskEvent (what the SDK would emit), or None when the agent
        is paused."""
        guard = self.base.guard
        if guard is not None:
            try:
                guard.check_agent(agent_id)
            except AgentPausedError:
                self.stats.paused_skips += 1
                return None
        plan = plan_task(g, self.world, self.rng, agent_id, None, 0)
        now_us = int(self.clock() * 1_000_000)
        started_us = now_us - int(plan.total_ms * 1000)
        spent_ms = plan.model_ms
        outcome, error_type = "success", None
        calls = []
        for call in plan.calls:
            status, error, latency = "ok", None, call.latency_ms
            try:
                if guard is not None:
                    guard.check_tool(agent_id, call.tool.integration)
            except CircuitOpenError:
                status, error, latency = "short_circuited", "CircuitOpenError", 0.0
                outcome, error_type = "failure", error
            if status == "ok" and call.fails is not None:
                status, error = call.fails, _OUTCOME[call.fails][1]
                outcome, error_type = _OUTCOME[call.fails]
            calls.append(_call(call.tool.integration, call.tool.operation, call.tool.access,
                               plan.record, status, error, started_us + int(spent_ms * 1000),
                               latency))  # fmt: skip
            spent_ms += latency
            if status != "ok":
                break  # the exception leaves the task, as through the SDK
        if outcome == "success" and plan.failure is not None:
            outcome, error_type = "failure", plan.failure.__name__
        return self._event(agent_id, g, plan, started_us, spent_ms, outcome, error_type, calls)

    def _event(
        self,
        agent_id: str,
        g: AgentGroup,
        plan: Plan,
        started_us: int,
        spent_ms: float,
        outcome: str,
        error_type: str | None,
        calls: list[dict[str, Any]],
    ) -> dict[str, Any]:
        prices = self.base.prices
        found = prices.lookup(g.model)
        cost = prices.cost_micros(
            g.model, input_tokens=plan.input_tokens, output_tokens=plan.output_tokens
        )
        task_id = os.urandom(16).hex()
        return {
            "event_id": os.urandom(16).hex(),
            "agent_id": agent_id,
            "agent_version": "1",
            "agent_role": g.role,
            "task_id": task_id,
            "task_type": g.task_type,
            "trace_id": task_id,
            "parent_task_id": None,
            "upstream_agent_id": g.upstream,
            "input_hash": input_hash({"record": plan.record}),
            "outcome": outcome,
            "error_type": error_type,
            "started_at": started_us,
            "ended_at": started_us + int(spent_ms * 1000),
            "duration_ms": spent_ms,
            "model": g.model,
            "provider": found[1].provider if found else None,
            "input_tokens": plan.input_tokens,
            "output_tokens": plan.output_tokens,
            "cached_tokens": 0,
            "cost_micros": cost or 0,
            "price_table_version": prices.version if cost is not None else "",
            "tool_calls": calls,
            "attributes": {},
        }


def _call(
    integration: str,
    operation: str,
    access: str,
    target: str,
    status: str,
    error_type: str | None,
    started_at: int,
    latency_ms: float,
) -> dict[str, Any]:
    return {
        "call_id": os.urandom(16).hex(),
        "integration": integration,
        "operation": operation,
        "access": access,
        "target": target,
        "status": status,
        "error_type": error_type,
        "started_at": started_at,
        "latency_ms": latency_ms,
        "cost_micros": 0,
    }
