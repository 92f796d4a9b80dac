"""The analysts' query endpoint of the embedded store: unqualified table names, only the
table functions an analyst needs, and a heavy query that runs beside ingestion and beside
other analysts' queries instead of in front of them. No broker needed."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from fleetpulse.contract.clock import ManualClock
from fleetpulse.contract.config import SinkSettings
from fleetpulse.sink.backend import ChdbBackend
from fleetpulse.sink.migrate import migrate
from fleetpulse.sink.query import QueryError, open_analyst, open_query_server

from .test_event_validity import NOW_US, TOPICS, RecordingSink, enc

pytestmark = pytest.mark.integration

HEAVY = "SELECT count() FROM numbers(1e12) WHERE cityHash64(number) % 7 = 0"


@pytest.fixture
def store(tmp_path: Path) -> Any:
    settings = SinkSettings(
        bootstrap_servers="127.0.0.1:9",
        topic_prefix=TOPICS.prefix,
        data_dir=tmp_path / "ch",
        query_max_execution_s=6,
        processors_max_future_s=300,
    )
    sink_backend = ChdbBackend(str(settings.store_dir))
    migrate(sink_backend)
    server = open_query_server(settings)
    try:
        yield settings, sink_backend
    finally:
        server.stop()
        sink_backend.close()


def test_analysts_name_tables_without_the_database(store: Any) -> None:
    settings, _ = store
    analyst = open_analyst(settings)
    assert analyst.table("SELECT count() AS n FROM task_events").rows == [[0]]
    assert analyst.table("SELECT toUInt8(sum(number)) FROM numbers(10)").rows == [[45]]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; DROP TABLE task_events",
        "SELECT 1; DROP TABLE fleetpulse.task_events",
        "SHOW TABLES; DROP TABLE task_events",
        "DROP TABLE task_events",
        "WITH 1 AS x SELECT x; DROP TABLE task_events",
    ],
)
def test_nothing_but_one_reading_statement_runs(store: Any, sql: str) -> None:
    settings, sink_backend = store
    with pytest.raises(QueryError):
        open_analyst(settings).table(sql)
    assert sink_backend.rows("EXISTS TABLE fleetpulse.task_events") == [{"result": 1}]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM Python(block)",
        "SELECT * FROM python(block)",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:1/x', 'CSV')",
        "SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV')",
        "SELECT * FROM remote('127.0.0.1', system.one)",
        "SELECT * FROM executable('ls', 'TSV', 'x String')",
        "SELECT * FROM task_events WHERE agent_id IN (SELECT * FROM file('x', 'CSV'))",
        "WITH t AS (SELECT * FROM mysql('h:1', 'd', 't', 'u', 'p')) SELECT * FROM t",
        "DESCRIBE TABLE url('http://127.0.0.1:1/x', 'CSV')",
    ],
)
def test_table_functions_reaching_outside_are_refused(store: Any, sql: str) -> None:
    settings, _ = store
    with pytest.raises(QueryError, match="is not allowed"):
        open_analyst(settings).table(sql)


def test_a_heavy_query_runs_beside_ingestion_and_other_queries(store: Any) -> None:
    """While one analyst's query takes its whole time limit, the sink inserts batches at its
    usual pace and they are queryable at once, and another analyst's query answers."""
    settings, sink_backend = store
    sink = RecordingSink(settings, sink_backend, clock=ManualClock(start_us=NOW_US))
    sink.dead = {}
    outcome: dict[str, Any] = {}

    def heavy() -> None:
        t0 = time.monotonic()
        try:
            open_analyst(settings).table(HEAVY)
        except QueryError as exc:
            outcome["error"] = str(exc)
        outcome["s"] = time.monotonic() - t0

    batches = [
        [
            Message(topic=TOPICS.task_events, partition=0, offset=o, value=enc(o))
            for o in range(b * 1000, (b + 1) * 1000)
        ]
        for b in range(5)
    ]
    thread = threading.Thread(target=heavy)
    thread.start()
    time.sleep(0.5)  # let it start: it holds its 1 thread for its 6 s limit
    for batch in batches:
        sink._write(batch)
    seen = open_analyst(settings).table("SELECT count() FROM task_events").rows
    still_running = thread.is_alive()
    thread.join(30)
    assert seen == [[5000]] and not sink.dead
    # 5,000 events went in and were queryable, and another query answered, while the heavy
    # query was still running; it then ran to its limit
    assert still_running
    assert outcome.get("s", 0) >= 5, outcome
    assert "TIMEOUT" in outcome.get("error", "").upper(), outcome
