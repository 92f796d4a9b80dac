from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from fastavro.utils import generate_many

from fleetpulse.contract.errors import EventValidationError
from fleetpulse.contract.events import RECORD_NAMES, SchemaStore, validator


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_generated_records_are_valid(name: str) -> None:
    check = validator(name)
    for record in generate_many(SchemaStore.default().latest(name).parsed, 20):
        check(record)


def _event() -> dict[str, Any]:
    rec = next(iter(generate_many(SchemaStore.default().latest("TaskEvent").parsed, 1)))
    rec["tool_calls"] = (
        [
            next(iter(generate_many(SchemaStore.default().latest("TaskEvent").parsed, 1)))[
                "tool_calls"
            ][0]
        ]
        * 2
        if rec["tool_calls"]
        else []
    )
    return rec


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda e: e.update(agent_id=5), "TaskEvent.agent_id"),
        (lambda e: e.update(outcome="great"), "TaskEvent.outcome"),
        (lambda e: e.update(input_tokens=True), "TaskEvent.input_tokens"),
        (lambda e: e.update(input_tokens=2**64), "TaskEvent.input_tokens"),
        (lambda e: e.update(duration_ms="1"), "TaskEvent.duration_ms"),
        (lambda e: e.update(started_at=datetime(2026, 1, 1)), "TaskEvent.started_at"),  # noqa: DTZ001
        (lambda e: e.update(parent_task_id=3), "TaskEvent.parent_task_id"),
        (lambda e: e.update(attributes={"k": 1}), "TaskEvent.attributes['k']"),
        (lambda e: e.pop("task_id"), "TaskEvent.task_id"),
        (
            lambda e: e.update(
                tool_calls=[
                    {
                        "call_id": "c",
                        "integration": "i",
                        "operation": "o",
                        "access": "delete",
                        "status": "ok",
                        "started_at": 0,
                        "latency_ms": 1.0,
                    }
                ]
            ),
            "TaskEvent.tool_calls[0].access",
        ),
    ],
)
def test_errors_name_the_field(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    event = _event()
    mutate(event)
    with pytest.raises(EventValidationError) as info:
        validator("TaskEvent")(event)
    assert info.value.field == field
