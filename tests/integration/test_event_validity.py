"""One definition of a valid TaskEvent: the same bad and borderline records, fed to what the
processors run (their ingest pass, natively and by the Python reference) and to the sink
(``SinkRunner._write`` on embedded ClickHouse, fast path and Python path), get the same
verdicts and the same reasons. No broker: the sink is handed its records directly."""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from fleetpulse.contract.clock import ManualClock
from fleetpulse.contract.config import SinkSettings
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.topics import Topics
from fleetpulse.processors.ingest import IngestParams, NativeIngest, reference_partials
from fleetpulse.processors.ingest.params import Where
from fleetpulse.sink.avro_batch import INVALID, AvroBatch, guard, task_events_select
from fleetpulse.sink.backend import BackendError, ChdbBackend
from fleetpulse.sink.migrate import migrate
from fleetpulse.sink.runner import SinkRunner

pytestmark = pytest.mark.integration

NOW_US = 1_780_000_000_000_000
MAX_FUTURE_S = 300
TOPICS = Topics("validity.")
CODEC = AvroCodec(logical_types=False)
HEADER = b"\xc3\x01" + CODEC.store.latest("TaskEvent").fingerprint


def event(i: int, **changes: Any) -> dict[str, Any]:
    ev = {
        "event_id": f"ev-{i}",
        "agent_id": "triage",
        "agent_version": "3",
        "agent_role": "support",
        "task_id": f"t-{i}",
        "task_type": "triage",
        "trace_id": f"tr-{i}",
        "parent_task_id": None,
        "upstream_agent_id": None,
        "input_hash": "h",
        "outcome": "success",
        "error_type": None,
        "started_at": NOW_US - 2_000_000,
        "ended_at": NOW_US - 1_000_000,
        "duration_ms": 1000.0,
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_tokens": 0,
        "cost_micros": 7,
        "price_table_version": "1",
        "tool_calls": [
            {
                "call_id": "c1",
                "integration": "zendesk",
                "operation": "get",
                "access": "read",
                "target": None,
                "status": "ok",
                "error_type": None,
                "started_at": NOW_US - 1_500_000,
                "latency_ms": 12.5,
                "cost_micros": 0,
            }
        ],
        "attributes": {},
    }
    call_changes = changes.pop("call", {})
    ev.update(changes)
    ev["tool_calls"][0].update(call_changes)
    return ev


def enc(i: int, **changes: Any) -> bytes:
    return CODEC.encode("TaskEvent", event(i, **changes))


RECORDS: dict[str, bytes] = {
    "valid": enc(0),
    "zero duration (borderline)": enc(1, duration_ms=0.0),
    "ended exactly at the future limit (borderline)": enc(
        2, ended_at=NOW_US + MAX_FUTURE_S * 10**6
    ),
    "negative duration": enc(3, duration_ms=-104.0),
    "NaN duration": enc(4, duration_ms=math.nan),
    "infinite duration": enc(5, duration_ms=math.inf),
    "negative latency": enc(6, call={"latency_ms": -1.0}),
    "NaN latency": enc(7, call={"latency_ms": math.nan}),
    "empty agent_id": enc(8, agent_id=""),
    "empty integration": enc(9, call={"integration": ""}),
    "negative tokens": enc(10, input_tokens=-1),
    "negative call cost": enc(11, call={"cost_micros": -5}),
    "far future": enc(12, ended_at=NOW_US + MAX_FUTURE_S * 10**6 + 1),
    "one trailing byte": enc(13) + b"\x00",
    "trailing junk": enc(14) + b"junk after a valid body",
    "truncated body": enc(15)[:-3],
    "unknown fingerprint": b"\xc3\x01" + b"\x01" * 8 + enc(16)[10:],
    "empty": b"",
    "not avro": b"hello",
    "oversized": enc(17, attributes={"blob": "x" * (1 << 20)}),
    "an Alert on the task topic": b"\xc3\x01"
    + CODEC.store.latest("Alert").fingerprint
    + b"\x00" * 40,
}
VALID = {"valid", "zero duration (borderline)", "ended exactly at the future limit (borderline)"}


def _ingest_verdicts(values: list[bytes]) -> tuple[list[str | None], list[str | None]]:
    """Per record, why the processors' ingest pass refuses it (None: counted): natively and
    by the Python reference. Runs in a child process: chDB allows one store per process, and
    the sink fixture holds one."""
    params = IngestParams(now_us=NOW_US, max_future_us=MAX_FUTURE_S * 10**6)
    parts = [0] * len(values)
    where = Where(TOPICS.task_events, list(range(len(values))))
    native = NativeIngest(native_min=0)
    try:
        passes = (
            native.run(parts, values, params, where=where),
            reference_partials(parts, values, params, where=where),
        )
    finally:
        native.close()
    out = []
    for p in passes:
        reasons = dict(p.rejected)
        out.append([reasons.get(i) for i in range(len(values))])
    return out[0], out[1]


@pytest.fixture(scope="module")
def processors_verdicts() -> list[str | None]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        native, reference = pool.apply(_ingest_verdicts, (list(RECORDS.values()),))
    assert native == reference  # the native pass and its reference agree, record by record
    return native


class RecordingSink(SinkRunner):
    """The real sink, its dead letters recorded instead of produced (there is no broker)."""

    dead: dict[int, str]

    def _dead_letter(self, m: Message, reason: str) -> None:
        self.dead[m.offset() or 0] = reason

    def _commit(self, batch: list[Message]) -> None:
        pass  # no group to commit to


@pytest.fixture
def sink(tmp_path: Path) -> Any:
    backend = ChdbBackend(str(tmp_path / "ch"))
    migrate(backend)
    settings = SinkSettings(
        bootstrap_servers="127.0.0.1:9",  # never reached: _write is called directly
        topic_prefix=TOPICS.prefix,
        data_dir=tmp_path / "ch",
        processors_max_future_s=MAX_FUTURE_S,
    )
    runner = RecordingSink(settings, backend, clock=ManualClock(start_us=NOW_US))
    runner.dead = {}
    yield runner
    backend.close()


def stored_offsets(sink: RecordingSink) -> set[int]:
    rows = sink.backend.rows("SELECT _offset AS o FROM fleetpulse.task_events")
    return {int(r["o"]) for r in rows}


def test_the_definition_is_what_the_records_say(processors_verdicts: list[str | None]) -> None:
    verdicts = dict(zip(RECORDS, processors_verdicts, strict=True))
    assert {n for n, v in verdicts.items() if v is None} == VALID
    assert "trailing bytes" in str(verdicts["one trailing byte"])
    assert "-104.0" in str(verdicts["negative duration"])
    assert "at most" in str(verdicts["oversized"])


@pytest.mark.parametrize("batching", ["one batch", "one batch per record"])
def test_sink_and_processors_give_the_same_verdicts_and_reasons(
    sink: RecordingSink, batching: str, processors_verdicts: list[str | None]
) -> None:
    msgs = [
        Message(topic=TOPICS.task_events, partition=0, offset=i, key=b"k", value=v)
        for i, v in enumerate(RECORDS.values())
    ]
    batches = [msgs] if batching == "one batch" else [[m] for m in msgs]
    for batch in batches:
        sink._write(batch)
    stored = stored_offsets(sink)
    for i, name in enumerate(RECORDS):
        expected = processors_verdicts[i]
        got = None if i in stored else sink.dead.get(i, "neither stored nor dead-lettered")
        assert got == expected, name
        assert not (i in stored and i in sink.dead), name


def _fast_insert(sink: RecordingSink, values: list[bytes], partition: int) -> bool:
    """The fast path's own check, no Python: True when ClickHouse inserted the batch."""
    batch = AvroBatch(CODEC)
    for offset, value in enumerate(values):
        batch.add(partition, offset, value)
    path = sink.avro_dir / f"validity-{partition}-{len(values)}.avro"
    path.write_bytes(batch.container())
    check = guard(batch.sentinel, NOW_US, MAX_FUTURE_S * 10**6)
    columns, select = task_events_select(TOPICS.task_events, {}, check)
    try:
        sink.backend.insert_from_file(  # type: ignore[attr-defined]
            "task_events", columns, select, str(path), "Avro", f"t{partition}"
        )
    except BackendError as exc:
        assert INVALID in str(exc) or "Avro" in str(exc) or "AVRO" in str(exc), exc
        return False
    finally:
        path.unlink()
    return True


def test_a_batch_of_valid_events_stays_on_the_fast_path(sink: RecordingSink) -> None:
    assert _fast_insert(sink, [enc(100 + i) for i in range(50)], partition=1)
    assert len(stored_offsets(sink)) == 50


@pytest.mark.parametrize("name", [n for n in RECORDS if AvroBatch(CODEC).accepts(RECORDS[n])])
def test_clickhouse_refuses_exactly_what_python_refuses(
    sink: RecordingSink, name: str, processors_verdicts: list[str | None]
) -> None:
    """The fast path's SQL check alone refuses a batch holding a record Python refuses, and
    writes nothing of it."""
    inserted = _fast_insert(sink, [enc(99), RECORDS[name]], partition=2)
    assert inserted == (processors_verdicts[list(RECORDS).index(name)] is None)
    assert len(stored_offsets(sink)) == (2 if inserted else 0)
