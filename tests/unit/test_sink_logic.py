"""The sink's pure parts: migration files, statement splitting, records to columns."""

from __future__ import annotations

from fleetpulse.contract.clock import ManualClock
from fleetpulse.contract.events import AvroCodec
from fleetpulse.sink.migrate import migrations, statements
from fleetpulse.sink.rows import CALL_COLUMNS, TASK_COLUMNS, add_task_event, empty
from fleetpulse.testing import memory_fleet


def test_migrations_are_numbered_in_order_and_split_into_statements() -> None:
    found = migrations()
    assert [m.version for m in found] == sorted({m.version for m in found})
    assert found[0].version == 1
    for m in found:
        for stmt in statements(m.sql):
            # a half-applied migration can run again: creations are IF NOT EXISTS, alterations
            # set a value (setting it twice changes nothing)
            assert "IF NOT EXISTS" in stmt or " MODIFY SETTING " in stmt
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


def test_every_route_fills_every_column_of_its_tables() -> None:
    from fleetpulse.sink.rows import COLUMNS, ROUTES, TABLES

    records = {
        "Alert": {f: None for f in COLUMNS["alerts"]},
        "ControlMessage": {f: None for f in COLUMNS["breaker_transitions"]},
        "GovernanceEvent": {f: None for f in COLUMNS["governance"]},
        "MetricSnapshot": {f: None for f in COLUMNS["metric_snapshots"]},
    }
    for route in ROUTES:
        if route.record not in records:
            continue
        cols = {t: empty(COLUMNS[t]) for t in TABLES}
        route.add(cols, records[route.record], "t", 1, 7)
        (table,) = route.tables
        assert {len(v) for v in cols[table].values()} == {1}, table
        assert cols[table]["_offset"] == [7]
        # nullable Avro fields: 0 for numbers and times, '' for strings
        for f in ("ended_at", "retry_at", "version"):
            if f in cols[table]:
                assert cols[table][f] == [0]
        assert all(v == [""] for k, v in cols[table].items() if k in ("root_cause", "agent_id"))
    assert len(TABLES) == len(set(TABLES)) == 6


def test_analysts_sql_is_made_read_only() -> None:
    import pytest

    from fleetpulse.sink.query import QueryError, readonly_sql

    limits = "SETTINGS readonly = 1, max_execution_time = 60, max_threads = 1, "
    limits += "max_memory_usage = 1073741824"
    assert readonly_sql(" select 1 ;") == f"SELECT * FROM (select 1\n) {limits}"
    # a trailing comment cannot swallow the closing parenthesis
    assert readonly_sql("SELECT 1 -- note").startswith("SELECT * FROM (SELECT 1 -- note\n)")
    assert readonly_sql("SHOW TABLES").endswith(limits)
    for bad, why in (
        ("", "empty"),
        ("DROP TABLE x", "read-only"),
        ("insert into x values (1)", "read-only"),
        ("SHOW TABLES; DROP TABLE x", "one statement"),
    ):
        with pytest.raises(QueryError, match=why):
            readonly_sql(bad)


# EXPLAIN AST of: SELECT count() FROM numbers(10) AS n JOIN file('x.csv') AS f ON 1
#                 WHERE x IN (SELECT * FROM Python(df))
_AST = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 3)
   ExpressionList (children 1)
    Function count (children 1)
     ExpressionList
   TablesInSelectQuery (children 2)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function numbers (alias n) (children 1)
       ExpressionList (children 1)
        Literal UInt64_10
    TablesInSelectQueryElement (children 2)
     TableExpression (children 1)
      Function file (alias f) (children 1)
       ExpressionList (children 1)
        Literal 'x.csv'
     TableJoin (children 1)
      Literal UInt64_1
   Function in (children 1)
    ExpressionList (children 2)
     Identifier x
     Subquery (children 1)
      SelectWithUnionQuery (children 1)
       ExpressionList (children 1)
        SelectQuery (children 2)
         ExpressionList (children 1)
          Asterisk
         TablesInSelectQuery (children 1)
          TablesInSelectQueryElement (children 1)
           TableExpression (children 1)
            Function Python (children 1)
             ExpressionList (children 1)
              Identifier df"""


def test_table_functions_are_found_anywhere_and_only_generators_pass() -> None:
    import pytest

    from fleetpulse.sink.query import QueryError, check_table_functions, table_functions

    lines = _AST.splitlines()
    assert table_functions(lines) == ["numbers", "file", "Python"]
    with pytest.raises(QueryError, match="table function Python, file is not allowed"):
        check_table_functions(lines)
    check_table_functions(lines[:13])  # up to numbers(10): allowed


def test_report_literals_are_quoted() -> None:
    from fleetpulse.contract.sql import quote

    assert quote("customer/42") == "'customer/42'"
    assert quote("x' OR 1=1 --") == "'x\\' OR 1=1 --'"
    assert quote("back\\slash") == "'back\\\\slash'"


def test_roles_are_least_privilege_and_users_come_from_the_environment() -> None:
    from fleetpulse.sink.roles import role_statements, user_statements

    stmts = role_statements("fp")
    writer = [s for s in stmts if s.endswith("TO fleetpulse_writer")]
    assert "GRANT INSERT ON fp.* TO fleetpulse_writer" in writer
    assert all("SELECT ON fp.*" not in s for s in writer)  # reads only its watermark columns
    assert (
        "GRANT SELECT(_topic, _partition, _offset) ON fp.tool_calls TO fleetpulse_writer" in stmts
    )
    auditor = {s.split(" ON ")[1].split(" TO")[0] for s in stmts if s.endswith("fleetpulse_auditor")
               and s.startswith("GRANT")}  # fmt: skip
    assert "fp.governance" in auditor and "fp.metric_snapshots" not in auditor
    first = {
        s.split(" IF NOT EXISTS ")[-1].split()[0]: i for i, s in reversed(list(enumerate(stmts)))
    }
    assert first["fleetpulse_auditor"] < first["fleetpulse_analyst_quota"]  # the quota names it
    users = user_statements({"FLEETPULSE_CLICKHOUSE_ANALYST_PASSWORD": "s3'cret"})
    assert [r for r, _ in users] == ["analyst", "analyst"]
    assert "BY 's3\\'cret'" in users[0][1] and "DEFAULT ROLE fleetpulse_analyst" in users[0][1]
    assert user_statements({}) == []


def test_the_fast_path_container_is_valid_avro_with_offsets_in_front() -> None:
    """Any Avro reader (fastavro here) reads the container as the events plus their place."""
    import io

    import fastavro

    from fleetpulse.sink.avro_batch import AvroBatch

    fleet, sink = memory_fleet("a1", clock=ManualClock())
    for i in range(3):
        with fleet.task("triage", attributes={"i": str(i)}) as task:
            with task.tool("crm", "get", target=f"account/{i}"):
                pass
    codec = AvroCodec(logical_types=False)
    batch = AvroBatch(codec)
    for off, (_topic, _key, value) in enumerate(sink.records, start=2**40):
        assert batch.accepts(value)
        batch.add(5, off, value)
    assert not batch.accepts(b"\x00" + sink.records[0][2][1:])
    got = list(fastavro.reader(io.BytesIO(batch.container())))
    assert [(r["_partition"], r["_offset"]) for r in got] == [(5, 2**40 + i) for i in range(3)]
    for r, (_t, _k, value) in zip(got, sink.records, strict=True):
        want = AvroCodec().decode(value, "TaskEvent")
        assert {k: v for k, v in r.items() if not k.startswith("_")} == want
