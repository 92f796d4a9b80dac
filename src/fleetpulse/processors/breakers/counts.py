"""The breakers' source side: phase 1's per-second groups in, breaker-count cells out.

The ingest pass (``processors/ingest``) decodes each batch of task events once and, besides the
metric cells, returns calls per (source partition, agent, integration, status, error type,
second) and tasks per (source partition, agent, outcome, second), each with how many were at
least as slow as every slow-call threshold the policy uses (``BreakerSpec``). This module turns
those groups into what the breaker owners read, without looking at a single event:

1. each group is classified under the policy of every breaker it counts for (integration,
   agent x integration, and the agent's own breaker if opted in): counted, failed, slow;
2. the counts are kept absolute per (source partition, breaker, second);
3. ``take()`` returns the changed cells, one record per (owner partition, source partition),
   for ``processors.breaker-counts``. Cells replace, never add, so a source that replays its
   history after a restart publishes the same figures again and nothing is counted twice.

Pure: no Kafka here; the metric worker (``processors/metrics/worker.py``) owns the edges.
"""

from __future__ import annotations

import zlib

import orjson

from fleetpulse.contract.breakers import (
    agent_breaker_id,
    agent_integration_id,
    integration_id,
    parse_breaker_id,
)
from fleetpulse.contract.policy import BreakerPolicy, BreakersSection, FleetPolicy
from fleetpulse.contract.semantics import FAILED_OUTCOMES, UNCOUNTED_OUTCOMES
from fleetpulse.processors.breakers.machine import call_verdict
from fleetpulse.processors.ingest.cells import CallGroup, TaskGroup
from fleetpulse.processors.ingest.params import BreakerSpec


def lookback_s(policy: FleetPolicy) -> int:
    """How far back breaker counts matter: the longest breaker window and a minute."""
    return policy.longest_breaker_window_s + 60


def owner_partition(breaker_id: str, partitions: int) -> int:
    """The breaker-counts partition (hence the worker) that decides for ``breaker_id``."""
    return zlib.crc32(breaker_id.encode()) % partitions


class BreakerPolicies:
    """The policy of every breaker, resolved once per (scope, agent, integration)."""

    def __init__(self, section: BreakersSection) -> None:
        self.section = section
        self._policies: dict[tuple[str, str | None, str | None], BreakerPolicy] = {}
        self._calls: dict[tuple[str, str], list[tuple[str, BreakerPolicy]]] = {}
        self._agents: dict[str, tuple[str, BreakerPolicy] | None] = {}

    def spec(self) -> BreakerSpec:
        """What phase 1 must count: the distinct slow thresholds of enabled breakers."""
        calls = {p.slow_call_duration_ms for p in self.section.call_policies() if p.enabled}
        tasks = {p.slow_call_duration_ms for p in self.section.agent_policies() if p.enabled}
        return BreakerSpec(tuple(sorted(calls)), tuple(sorted(tasks)))

    def get(self, scope: str, agent: str | None, integration: str | None) -> BreakerPolicy:
        key = (scope, agent, integration)
        found = self._policies.get(key)
        if found is None:
            if scope == "integration":
                found = self.section.for_integration(integration or "")
            elif scope == "agent_integration":
                found = self.section.for_agent_integration(agent or "", integration or "")
            else:
                found = self.section.for_agent(agent or "")
            self._policies[key] = found
        return found

    def of(self, breaker_id: str) -> BreakerPolicy:
        k = parse_breaker_id(breaker_id)
        return self.get(k.scope, k.agent_id, k.integration)

    def call_breakers(self, agent: str, integration: str) -> list[tuple[str, BreakerPolicy]]:
        """The enabled breakers a call of ``agent`` to ``integration`` counts for."""
        key = (agent, integration)
        found = self._calls.get(key)
        if found is None:
            found = []
            pol = self.get("integration", None, integration)
            if pol.enabled:
                found.append((integration_id(integration), pol))
            pol = self.get("agent_integration", agent, integration)
            if pol.enabled:
                found.append((agent_integration_id(agent, integration), pol))
            self._calls[key] = found
        return found

    def agent_breaker(self, agent: str) -> tuple[str, BreakerPolicy] | None:
        if agent not in self._agents:
            pol = self.get("agent", agent, None)
            self._agents[agent] = (agent_breaker_id(agent), pol) if pol.enabled else None
        return self._agents[agent]


class BreakerCounts:
    """Absolute (calls, failures, slow) per (source partition, breaker, second)."""

    def __init__(self, section: BreakersSection, partitions: int) -> None:
        self.policies = BreakerPolicies(section)
        self.spec = self.policies.spec()
        self._call_slot = {t: i for i, t in enumerate(self.spec.call_slow_ms)}
        self._task_slot = {t: i for i, t in enumerate(self.spec.task_slow_ms)}
        self.partitions = partitions
        # source partition -> (breaker id, second) -> [calls, failures, slow]
        self._sources: dict[int, dict[tuple[str, int], list[int]]] = {}
        self._dirty: set[tuple[int, str, int]] = set()
        self.cells_out = 0

    def assign(self, source: int) -> None:
        self._sources.setdefault(source, {})

    def revoke(self, source: int) -> None:
        self._sources.pop(source, None)
        self._dirty = {d for d in self._dirty if d[0] != source}

    def add(self, calls: list[CallGroup], tasks: list[TaskGroup], *, oldest_s: int = 0) -> None:
        """Count one batch's groups; seconds before ``oldest_s`` are too old to matter."""
        pols = self.policies
        for p, agent, integ, status, error_type, sec, n, slow in calls:
            if sec < oldest_s:
                continue
            for breaker_id, pol in pols.call_breakers(agent, integ):
                counted, failed = call_verdict(pol, status, error_type)
                if counted:
                    s = slow[self._call_slot[pol.slow_call_duration_ms]]
                    self._add(p, breaker_id, sec, n, n if failed else 0, s)
        for p, agent, outcome, sec, n, slow in tasks:
            found = pols.agent_breaker(agent)
            if found is None or sec < oldest_s or outcome in UNCOUNTED_OUTCOMES:
                continue
            breaker_id, pol = found
            s = slow[self._task_slot[pol.slow_call_duration_ms]]
            self._add(p, breaker_id, sec, n, n if outcome in FAILED_OUTCOMES else 0, s)

    def _add(self, p: int, breaker_id: str, sec: int, calls: int, failures: int, slow: int) -> None:
        table = self._sources.get(p)
        if table is None:
            return  # not (or no longer) this worker's partition
        cell = table.get((breaker_id, sec))
        if cell is None:
            table[(breaker_id, sec)] = [calls, failures, slow]
        else:
            cell[0] += calls
            cell[1] += failures
            cell[2] += slow
        self._dirty.add((p, breaker_id, sec))

    def take(self) -> list[tuple[int, bytes, bytes]]:
        """The changed cells as (owner partition, key, value) records, then forgets them."""
        by_dest: dict[tuple[int, int], list[list[object]]] = {}
        for p, breaker_id, sec in self._dirty:
            cell = self._sources.get(p, {}).get((breaker_id, sec))
            if cell is not None:
                dest = owner_partition(breaker_id, self.partitions)
                by_dest.setdefault((dest, p), []).append([breaker_id, sec, *cell])
        self._dirty.clear()
        out = []
        for (dest, src), cells in sorted(by_dest.items()):
            out.append((dest, str(src).encode(), orjson.dumps({"src": src, "cells": cells})))
            self.cells_out += len(cells)
        return out

    def evict(self, oldest_s: int) -> None:
        for table in self._sources.values():
            for key in [k for k in table if k[1] < oldest_s]:
                del table[key]
