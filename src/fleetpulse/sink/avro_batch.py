"""The fast path for task events: ClickHouse decodes the Avro, not Python.

A TaskEvent in single-object encoding is a 10-byte header and the Avro body. An Avro record's
body is its fields' bodies one after the other, so ``zigzag(partition) + zigzag(offset) + body``
is a valid body of the same schema with two leading fields, ``_partition`` and ``_offset``.
A batch of those, framed as one Avro object container file (header, one block, sync marker),
is read by ClickHouse's own Avro format in C++: about 10x what fastavro decodes per core here.
Both tables are filled from it in SQL (``tool_calls`` with ARRAY JOIN).

Only records written with the schema this build ships as latest take this path; older
writer schemas and the Confluent framing (which need schema resolution) take the Python path,
and so does a whole batch if ClickHouse cannot parse it (so a corrupt body still reaches the
DLQ with its reason).

Validity (contract/events/task_event.py) holds here too. Each body is followed by an 8-byte
sentinel, random per batch, read as a trailing ``_end`` field: a body with junk after it puts
the junk where the sentinel should be. The task_events insert (the first of the two) carries
`guard`: ``throwIf`` on any row whose sentinel is wrong or that fails ``sql_accepts``, so one
invalid record fails the insert before anything is written (the batch is one insert block) and
the whole batch takes the Python path, which dead-letters exactly those records with
`check_task_event`'s reasons. The check costs no extra pass over the batch.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fleetpulse.contract.events.codec import HEADER_LEN, MAX_BYTES, SINGLE_OBJECT_MARKER, AvroCodec
from fleetpulse.contract.events.container import container, zigzag
from fleetpulse.contract.events.task_event import sql_accepts
from fleetpulse.contract.sql import quote
from fleetpulse.sink.rows import CALL_COLUMNS, TASK_COLUMNS


class AvroBatch:
    """Task events of the latest TaskEvent schema, collected as one Avro container file."""

    def __init__(self, codec: AvroCodec) -> None:
        latest = codec.store.latest("TaskEvent")
        self.prefix = SINGLE_OBJECT_MARKER + latest.fingerprint
        schema = json.loads(latest.raw) if isinstance(latest.raw, str) else dict(latest.raw)
        schema["name"] = "SinkTaskEvent"
        schema["fields"] = [
            {"name": "_partition", "type": "int"},
            {"name": "_offset", "type": "long"},
            *schema["fields"],
            {"name": "_end", "type": {"type": "fixed", "name": "SinkEnd", "size": 8}},
        ]
        self._schema_json = json.dumps(schema).encode()
        self.sentinel = os.urandom(8)
        self.bodies: list[bytes] = []

    def accepts(self, value: bytes) -> bool:
        """Written with the latest schema, and not over the size limit (which only Python
        checks: the container cannot tell)."""
        return value[:HEADER_LEN] == self.prefix and len(value) <= MAX_BYTES["TaskEvent"]

    def add(self, partition: int, offset: int, value: bytes) -> None:
        self.bodies.append(zigzag(partition) + zigzag(offset) + value[HEADER_LEN:] + self.sentinel)

    def __len__(self) -> int:
        return len(self.bodies)

    def container(self) -> bytes:
        """The batch as an Avro object container file (uncompressed, one block)."""
        return container(self._schema_json, self.bodies, os.urandom(16))


def _above(watermarks: dict[int, int]) -> str:
    """SQL: the row's offset is above its partition's watermark."""
    if not watermarks:
        return "1"
    cases = ", ".join(f"_partition = {p}, {o}" for p, o in sorted(watermarks.items()))
    return f"_offset > multiIf({cases}, -1)"


# How each column of task_events and tool_calls (rows.py's column lists) is read from the
# container; a column not named here is the field of the same name.
_TASK_EXPR = {
    "parent_task_id": "ifNull(parent_task_id, '')",
    "upstream_agent_id": "ifNull(upstream_agent_id, '')",
    "outcome": "toString(outcome)",
    "error_type": "ifNull(error_type, '')",
    "model": "ifNull(model, '')",
    "provider": "ifNull(provider, '')",
    "tool_call_count": "length(tool_calls)",
}
_CALL_EXPR = {
    "call_id": "c.call_id",
    "integration": "c.integration",
    "operation": "c.operation",
    "access": "toString(c.access)",
    "target": "ifNull(c.target, '')",
    "status": "toString(c.status)",
    "error_type": "ifNull(c.error_type, '')",
    "started_at": "c.started_at",
    "latency_ms": "c.latency_ms",
    "cost_micros": "c.cost_micros",
}


def _select(columns: list[str], exprs: dict[str, str], topic: str) -> str:
    return ", ".join(quote(topic) if c == "_topic" else exprs.get(c, c) for c in columns)


def task_events_select(
    topic: str, watermarks: dict[int, int], check: str = "1"
) -> tuple[list[str], str]:
    """Columns and SELECT (over ``{source}``) filling task_events from the container;
    ``check`` (`guard`) is evaluated on every row."""
    sql = (
        f"SELECT {_select(TASK_COLUMNS, _TASK_EXPR, topic)} FROM {{source}} "
        f"WHERE {check} AND {_above(watermarks)}"
    )
    return TASK_COLUMNS, sql


def tool_calls_select(
    topic: str, watermarks: dict[int, int], check: str = "1"
) -> tuple[list[str], str]:
    """Columns and SELECT (over ``{source}``) filling tool_calls: one row per call."""
    sql = (
        f"SELECT {_select(CALL_COLUMNS, _CALL_EXPR, topic)} FROM {{source}} "
        f"ARRAY JOIN tool_calls AS c WHERE {check} AND {_above(watermarks)}"
    )
    return CALL_COLUMNS, sql


INVALID = "invalid task event in the batch"


def guard(sentinel: bytes, now_us: int, max_future_us: int) -> str:
    """SQL condition that throws (`INVALID`) on a row the fast path must not insert: a body
    with trailing bytes (its sentinel is not where it belongs), or one `check_task_event`
    refuses."""
    ok = f"hex(_end) = '{sentinel.hex().upper()}' AND {sql_accepts(now_us, max_future_us)}"
    return f"throwIf(NOT ({ok}), '{INVALID}') = 0"


def selects(
    topic: str, marks: dict[str, dict[tuple[str, int], int]], check: str = "1", *, calls: bool
) -> dict[str, Any]:
    """Per table: (columns, select) for this topic's rows above that table's watermarks;
    task_events first, with ``check``; tool_calls with it too when ``calls`` (when the
    batch has no task_events rows to insert, only calls a crash left unwritten)."""

    def of(table: str) -> dict[int, int]:
        return {p: o for (t, p), o in marks[table].items() if t == topic}

    return {
        "task_events": task_events_select(topic, of("task_events"), check),
        "tool_calls": tool_calls_select(topic, of("tool_calls"), check if calls else "1"),
    }
