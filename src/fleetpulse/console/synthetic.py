"""Synthetic task history written straight into ClickHouse, for the console's tests, its
benchmark and its screenshots: millions of rows in seconds with ``INSERT ... SELECT FROM
numbers()``, computed by ClickHouse itself. The rollups fill through their materialized views
exactly as they do from the sink.

Row ``n`` (0 = the newest) ends at ``until - n * step``; its agent is ``agents[n % len]``.
The first agent fails ``hot_failure_pct`` % of its tasks, the others ``failure_pct`` %; the
newer half of the span runs version 2, the older half version 1. Every task makes
``calls_per_task`` tool calls (``crm.lookup`` read, then ``zendesk.update`` write on
``customer/<n % 50>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fleetpulse.contract.sql import quote
from fleetpulse.sink.backend import Backend


@dataclass(frozen=True)
class Seed:
    agents: tuple[str, ...]
    events: int
    until: datetime
    span_s: float
    failure_pct: int = 5
    hot_failure_pct: int = 60
    calls_per_task: int = 2  # 0 to 2
    call_every: int = 1  # tool calls for one task in this many


def seed(backend: Backend, s: Seed) -> None:
    """Insert the task events and tool calls ``s`` describes."""
    db = backend.database
    agents = "[" + ", ".join(quote(a) for a in s.agents) + "]"
    until_us = int(s.until.timestamp() * 1_000_000)
    step_us = max(int(s.span_s * 1_000_000 / max(s.events, 1)), 1)
    idx = f"(number % {len(s.agents)})"
    ended = f"fromUnixTimestamp64Micro(toInt64({until_us} - number * {step_us}), 'UTC')"
    dur = "(40 + cityHash64(number, 1) % 900)"
    fail = f"if({idx} = 0, {s.hot_failure_pct}, {s.failure_pct})"
    backend.command(f"""
        INSERT INTO {db}.task_events (event_id, agent_id, agent_version, agent_role, task_id,
            task_type, trace_id, input_hash, outcome, error_type, started_at, ended_at,
            duration_ms, model, provider, input_tokens, output_tokens, cost_micros,
            tool_call_count, attributes)
        SELECT concat('e', toString(number)), arrayElement({agents}, {idx} + 1),
               if(number < {s.events // 2}, '2', '1'), 'support', concat('t', toString(number)),
               'ticket', concat('tr', toString(number)), hex(cityHash64(number)),
               if(cityHash64(number) % 100 < {fail}, 'failure', 'success'),
               if(cityHash64(number) % 100 < {fail}, 'ToolError', ''),
               {ended} - toIntervalMillisecond({dur}), {ended}, {dur},
               arrayElement(['gpt-4o-mini', 'claude-haiku'], number % 2 + 1), 'openai',
               500 + number % 700, 100 + number % 300, 200 + cityHash64(number, 4) % 3000,
               if(number % {s.call_every} = 0, {s.calls_per_task}, 0),
               map('team', if({idx} % 2 = 0, 'support', 'billing'),
                   'customer', concat('c', toString(number % 7)))
        FROM numbers({s.events})""")
    if s.calls_per_task <= 0:
        return
    calls = f"(intDiv(number, {s.calls_per_task}) * {s.call_every})"
    first = f"(number % {s.calls_per_task} = 0)"
    t_ended = f"fromUnixTimestamp64Micro(toInt64({until_us} - {calls} * {step_us}), 'UTC')"
    backend.command(f"""
        INSERT INTO {db}.tool_calls (event_id, task_id, call_id, agent_id, agent_version,
            agent_role, integration, operation, access, target, status, error_type,
            started_at, latency_ms, cost_micros)
        SELECT concat('e', toString({calls})), concat('t', toString({calls})),
               concat('c', toString(number)),
               arrayElement({agents}, ({calls} % {len(s.agents)}) + 1),
               if({calls} < {s.events // 2}, '2', '1'), 'support',
               if({first}, 'crm', 'zendesk'), if({first}, 'lookup', 'update'),
               if({first}, 'read', 'write'), concat('customer/', toString({calls} % 50)),
               if(cityHash64(number, 2) % 100 < 8, 'error', 'ok'),
               if(cityHash64(number, 2) % 100 < 8, 'Timeout', ''),
               {t_ended} - toIntervalMillisecond(800) + toIntervalMillisecond(if({first}, 0, 300)),
               if({first}, 120, 260) + cityHash64(number, 3) % 100, 10
        FROM numbers({s.events // s.call_every * s.calls_per_task})""")
