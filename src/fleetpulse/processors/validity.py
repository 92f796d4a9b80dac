"""What makes a decoded TaskEvent countable: the one semantic check every processor applies
after Avro has checked the types (the native ingest pass flags the same rows in SQL)."""

from __future__ import annotations

import math
from typing import Any

US = 1_000_000


def check_task_event(ev: dict[str, Any], now_us: int, max_future_us: int) -> str | None:
    """Why a decoded TaskEvent cannot be counted, or None."""
    if not ev["agent_id"]:
        return "agent_id is empty"
    d = ev["duration_ms"]
    if not (math.isfinite(d) and d >= 0):
        return f"duration_ms is {d!r}; expected a finite number >= 0"
    if ev["ended_at"] > now_us + max_future_us:
        ahead = (ev["ended_at"] - now_us) / US
        return f"ended_at is {ahead:.0f}s ahead of the processor clock (clock skew?)"
    for i, call in enumerate(ev["tool_calls"]):
        lat = call["latency_ms"]
        if not (math.isfinite(lat) and lat >= 0):
            return f"tool_calls[{i}].latency_ms is {lat!r}; expected a finite number >= 0"
        if not call["integration"]:
            return f"tool_calls[{i}].integration is empty"
    return None
