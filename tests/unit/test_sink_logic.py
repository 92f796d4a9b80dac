"""The sink's pure parts: migration files, statement splitting, records to columns."""

from __future__ import annotations

from fleetpulse.clock import ManualClock
from fleetpulse.events import AvroCodec
from fleetpulse.sink.migrate import migrations, statements
from fleetpulse.sink.rows import CALL_COLUMNS, TASK_COLUMNS, add_task_event, empty
from fleetpulse.testing import memory_fleet


def test_migrations_are_numbered_in_order_and_split_into_statements() -> None:
    found = migrations()
    assert [m.version for m in found] == sorted({m.version for m in found})
    assert found[0].version == 1
    for m in found:
        for stmt in statements(m.sql):
            assert "IF NOT EXISTS" in stmt  # a half-applied migration can run again
            assert not stmt.rstrip().endswith(";")


def test_statements_drop_comments_and_empty_chunks() -> None:
    sql = (
        "-- a comment;\nCREATE TABLE a (x UInt8);\n\n-- only a comment\n;\n"
        "CREATE VIEW b AS SELECT 1;\n"
    )
    assert statements(sql) == ["CREATE TABLE a (x UInt8)", "CREATE VIEW b AS SELECT 1"]


def test_a_task_event_becomes_one_task_row_and_one_row_per_call() -> None:
    fleet, sink = memory_fleet("a1", clock=ManualClock(), agent_version="v2")
    with fleet.task("triage", attributes={"team": "x"}) as task:
        with task.tool("crm", "get", target="account/1"):
            pass
        with task.tool("mail", "send", access="write"):
            pass
    ev = AvroCodec(logical_types=False).decode(sink.records[0][2], "TaskEvent")
    tasks, calls = empty(TASK_COLUMNS), empty(CALL_COLUMNS)
    add_task_event(tasks, calls, ev, "topic", 3, 42)
    assert {len(v) for v in tasks.values()} == {1}
    assert {len(v) for v in calls.values()} == {2}
    assert tasks["tool_call_count"] == [2] and tasks["attributes"] == [{"team": "x"}]
    assert tasks["parent_task_id"] == [""]  # no Nullable: '' stands for none
    assert calls["target"] == ["account/1", ""] and calls["access"] == ["read", "write"]
    assert calls["task_id"] == [ev["task_id"]] * 2 and calls["_offset"] == [42, 42]
    assert tasks["started_at"] == [ev["started_at"]]  # epoch micros, converted at insert
