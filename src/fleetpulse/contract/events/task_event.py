"""What a valid TaskEvent is: one definition for every consumer.

The processors and the sink accept and reject exactly the same records, each dead-lettering
with the same reason, because both ask this module:

1. *Strict decoding* (`AvroCodec.decode`): a known writer schema, a body that is a TaskEvent
   and nothing after it (trailing bytes are an error), at most `MAX_TASK_EVENT_BYTES`.
2. *Meaning* (`check_task_event`): what Avro's types cannot say. A non-empty agent id,
   durations and latencies that are finite and not negative, token counts and costs that are
   not negative, an ``ended_at`` not further ahead of the consumer's clock than
   ``max_future_us`` (``FLEETPULSE_PROCESSORS_MAX_FUTURE_S``, the processors and the sink
   alike), non-empty integration names.

`sql_accepts` states the same checks as a ClickHouse predicate for the sink's fast path, where
ClickHouse decodes the Avro itself; a record it flags is decoded here to get its reason, so
the reasons always come from `check_task_event`. A test holds the two to the same verdicts.

Example:
    >>> ev, reason = read_task_event(codec, value, now_us=now, max_future_us=300_000_000)
    >>> reason   # None, or why the record goes to the DLQ      # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

from fleetpulse.contract.errors import CodecError
from fleetpulse.contract.events.codec import MAX_BYTES, AvroCodec

MAX_TASK_EVENT_BYTES = MAX_BYTES["TaskEvent"]  # Kafka's default message size
_US = 1_000_000


def check_task_event(ev: dict[str, Any], now_us: int, max_future_us: int) -> str | None:
    """Why a decoded TaskEvent (timestamps as epoch micros) cannot be counted, or None."""
    if not ev["agent_id"]:
        return "agent_id is empty"
    d = ev["duration_ms"]
    if not (math.isfinite(d) and d >= 0):
        return f"duration_ms is {d!r}; expected a finite number >= 0"
    for name in ("input_tokens", "output_tokens", "cached_tokens", "cost_micros"):
        if ev[name] < 0:
            return f"{name} is {ev[name]}; expected >= 0"
    if ev["ended_at"] > now_us + max_future_us:
        ahead = (ev["ended_at"] - now_us) / _US
        return f"ended_at is {ahead:.0f}s ahead of the consumer's clock (clock skew?)"
    for i, call in enumerate(ev["tool_calls"]):
        lat = call["latency_ms"]
        if not (math.isfinite(lat) and lat >= 0):
            return f"tool_calls[{i}].latency_ms is {lat!r}; expected a finite number >= 0"
        if not call["integration"]:
            return f"tool_calls[{i}].integration is empty"
        if call["cost_micros"] < 0:
            return f"tool_calls[{i}].cost_micros is {call['cost_micros']}; expected >= 0"
    return None


def read_task_event(
    codec: AvroCodec,
    value: bytes | None,
    *,
    now_us: int,
    max_future_us: int,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """``(event, None)`` for a valid TaskEvent, ``(None, reason)`` for one to dead-letter."""
    try:
        ev = codec.decode(
            value or b"", "TaskEvent", topic=topic, partition=partition, offset=offset
        )
    except CodecError as exc:
        return None, str(exc)
    reason = check_task_event(ev, now_us, max_future_us)
    return (None, reason) if reason else (ev, None)


def sql_accepts(now_us: int, max_future_us: int) -> str:
    """`check_task_event` as a ClickHouse boolean over a TaskEvent row read from Avro
    (``ended_at`` a DateTime64(6), ``tool_calls`` an array of named tuples)."""
    limit = now_us + max_future_us
    call_ok = (
        "c -> isFinite(c.latency_ms) AND c.latency_ms >= 0 AND c.integration != '' "
        "AND c.cost_micros >= 0"
    )
    return (
        "(agent_id != '' AND isFinite(duration_ms) AND duration_ms >= 0 "
        "AND input_tokens >= 0 AND output_tokens >= 0 AND cached_tokens >= 0 "
        f"AND cost_micros >= 0 AND toUnixTimestamp64Micro(ended_at) <= {limit} "
        f"AND arrayAll({call_ok}, tool_calls))"
    )
