"""Phase 1, natively: a batch of raw TaskEvents decoded and grouped in one columnar pass by the
embedded ClickHouse engine (chDB), never record by record in Python.

How a batch goes through:

1. **Container.** A TaskEvent in single-object encoding is a 10-byte header and the Avro body;
   ``zigzag(partition) + zigzag(row) + body`` is a body of the same schema with two leading
   fields. The batch's bodies, framed as one Avro object container (header, one block, sync
   marker), are what ClickHouse's Avro reader decodes in C++. Records of an older schema or in
   Confluent framing are decoded and re-encoded with the latest schema first (rare: per record).
   A sentinel record closes the block, so that junk after any body shifts what follows and is
   caught by the row check below instead of being read as data.
2. **Decode once** into an in-memory table: the columns the windows need, whether the row is
   countable (``events/task_event.py``'s checks, as SQL), its partition's running watermark
   (window function over earlier rows) and so whether it is late.
3. **Group** with one ``UNION ALL`` per scope type (task scopes per event, integration scopes
   per call with ``ARRAY JOIN``), latency sketch bins as ``sumMap`` of
   ``ceil(log(v) / log(2) * multiplier) + offset`` (bit-identical to ``sketch.bin_key``).
4. **Check** that every row came back exactly once, with the sentinel last. If not, or if the
   engine refused the container, each record is decoded strictly in Python to find the bad
   ones, which are rejected with their reason (the caller dead-letters them), and the rest is
   passed again.

One ``chdb`` session is kept open per process (a fresh engine per call costs ~45 ms). Even so a
pass costs 50 to 100 ms of query analysis and planning whatever its size (measured here on 2
cores: ~20 ms for the decode, ~35 ms for each grouping query on 1,000 events), while the
reference aggregation costs ~25 us per event. So a batch smaller than ``native_min`` records
(default 2,000) is aggregated by ``reference.py`` (same figures, proven by the same test) and
the native pass takes every batch above it: light traffic costs little CPU, heavy traffic is
never aggregated record by record.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import pyarrow as pa
from fastavro import schemaless_writer

from fleetpulse.contract.errors import CodecError
from fleetpulse.contract.events.codec import HEADER_LEN, MAX_BYTES, SINGLE_OBJECT_MARKER, AvroCodec
from fleetpulse.contract.events.container import container, zigzag
from fleetpulse.contract.events.task_event import read_task_event
from fleetpulse.processors.figures.aggregate import COUNTERS
from fleetpulse.processors.ingest.cells import (
    AlertGroups,
    Cell,
    Partials,
    PartitionProgress,
)
from fleetpulse.processors.ingest.params import AlertSpec, IngestParams, Where
from fleetpulse.processors.ingest.reference import reference_partials
from fleetpulse.processors.ingest.sql import (
    ALERT_VERSIONS_SQL,
    BOUNDS_SQL,
    META_SQL,
    ON_TIME_SOURCE,
    alert_calls_sql,
    alert_runs_sql,
    alert_tasks_sql,
    breaker_calls_sql,
    breaker_tasks_sql,
    call_cells_sql,
    late_bounds_sql,
    late_source,
    raw_sql,
    task_cells_sql,
)

logger = logging.getLogger(__name__)


class NativeIngest:
    """Phase 1 over one open chDB session. Not thread-safe across batches: one caller at a
    time (a lock guards the session)."""

    def __init__(
        self,
        codec: AvroCodec | None = None,
        *,
        workdir: Path | None = None,
        native_min: int = 2000,
    ) -> None:
        self.codec = codec or AvroCodec(logical_types=False)
        self.native_min = native_min
        latest = self.codec.store.latest("TaskEvent")
        self._prefix = SINGLE_OBJECT_MARKER + latest.fingerprint
        self._latest_plain = latest.plain
        schema = json.loads(latest.json) if isinstance(latest.json, str) else dict(latest.raw)
        schema["name"] = "IngestTaskEvent"
        schema["fields"] = [
            {"name": "_p", "type": "int"},
            {"name": "_row", "type": "long"},
            *schema["fields"],
        ]
        self._schema_json = json.dumps(schema).encode()
        self._sync = os.urandom(16)
        self._rows: list[bytes] = []
        self._parts: list[bytes] = []
        self._sentinel = zigzag(-1) + self._body_of(_SENTINEL)
        folder = Path(workdir or _shm() or tempfile.gettempdir())
        _remove_stale(folder)
        fd, name = tempfile.mkstemp(prefix=f"fleetpulse-ingest-{os.getpid()}-", dir=folder)
        os.close(fd)
        self._path = Path(name)
        self._session: Any = None
        self._lock = threading.Lock()
        self.fallbacks = 0  # batches that needed the per-record search for bad records

    # -- the pass -------------------------------------------------------------------------

    def run(
        self,
        partitions: Sequence[int],
        values: Sequence[bytes],
        params: IngestParams,
        *,
        where: Where | None = None,
    ) -> Partials:
        """Aggregate one batch (records in offset order per partition). Rejected records come
        back in ``Partials.rejected`` with the reason, by their index in the batch; ``where``
        (topic, offsets) lets the reasons name the record as every consumer does."""
        if len(values) < self.native_min:
            return reference_partials(partitions, values, params, self.codec, where=where)
        rejected: list[tuple[int, str]] = []
        bodies = self._bodies(partitions, values, rejected)
        with self._lock:
            try:
                out = self._aggregate(bodies, len(values), params)
            except _Misread as exc:
                self.fallbacks += 1
                logger.info("ingest: %s; finding the bad records one by one", exc)
                out = self._search(partitions, values, bodies, params, rejected, where)
        out.rejected = sorted(
            (i, reason or self._reason(values[i], partitions[i], params, where, i))
            for i, reason in rejected + out.rejected
        )
        return out

    def _bodies(
        self, partitions: Sequence[int], values: Sequence[bytes], rejected: list[tuple[int, str]]
    ) -> list[bytes | None]:
        """Per record: its container body, or None (rejected: empty, unknown framing...)."""
        rows = self._row_prefixes(len(values))
        parts = self._part_prefixes(max(partitions, default=0) + 1)
        prefix, n, limit = self._prefix, HEADER_LEN, MAX_BYTES["TaskEvent"]
        out: list[bytes | None] = []
        for i, (p, v) in enumerate(zip(partitions, values, strict=True)):
            if v[:n] == prefix and len(v) <= limit:
                out.append(parts[p] + rows[i] + v[n:])
                continue
            try:  # an older writer schema, the Confluent framing, oversized: decode (rare)
                ev = self.codec.decode(v, "TaskEvent", partition=p)
            except CodecError:
                rejected.append((i, ""))  # run() gives the reason, naming the record
                out.append(None)
                continue
            out.append(parts[p] + rows[i] + self._body_of(ev))
        return out

    def _part_prefixes(self, n: int) -> list[bytes]:
        parts = self._parts
        if len(parts) < n:
            parts.extend(zigzag(i) for i in range(len(parts), n))
        return parts

    def _row_prefixes(self, n: int) -> list[bytes]:
        rows = self._rows
        if len(rows) < n:
            rows.extend(zigzag(i) for i in range(len(rows), n))
        return rows

    def _body_of(self, ev: dict[str, Any]) -> bytes:
        buf = BytesIO()
        schemaless_writer(buf, self._latest_plain, ev)
        return buf.getvalue()

    def _aggregate(self, bodies: list[bytes | None], n: int, params: IngestParams) -> Partials:
        """One native pass over the records that have a body. Rows the semantic checks refuse
        come back in ``rejected`` without a reason yet (``run`` finds it)."""
        kept = [i for i, b in enumerate(bodies) if b is not None]
        out = Partials()
        if not kept:
            return out
        blob = container(
            self._schema_json,
            [*(b for b in bodies if b is not None), self._sentinel_at(n)],
            self._sync,
        )
        self._path.write_bytes(blob)
        s = self._open()
        try:
            s.query(raw_sql(str(self._path), params), "CSV")
            meta = s.query(META_SQL, "ArrowTable").to_pylist()[0]
            if (
                meta["rows"] != len(kept) + 1
                or meta["row_sum"] != sum(kept) + n
                or meta["last_p"] != -1
            ):
                raise _Misread(
                    f"{meta['rows']} rows came back for {len(kept)} records and the sentinel"
                )
            bounds = s.query(BOUNDS_SQL, "ArrowTable").to_pylist()
            source = ON_TIME_SOURCE
            if any(_may_be_late(b, params) for b in bounds):
                source = late_source(params)
                bounds = s.query(late_bounds_sql(source), "ArrowTable").to_pylist()
            tasks = s.query(task_cells_sql(source, params.bucket_us), "ArrowTable")
            calls = s.query(call_cells_sql(source, params.bucket_us), "ArrowTable")
            spec = params.breakers
            if spec is not None and spec.call_slow_ms:
                out.breaker_calls = _rows(
                    s.query(breaker_calls_sql(spec.call_slow_ms), "ArrowTable"), _CALL_GROUP
                )
            if spec is not None and spec.task_slow_ms:
                out.breaker_tasks = _rows(
                    s.query(breaker_tasks_sql(spec.task_slow_ms), "ArrowTable"), _TASK_GROUP
                )
            if params.alerts is not None:
                out.alerts = _alert_groups(s, params.alerts)
        except _Misread:
            raise
        except Exception as exc:  # chDB raises a bare error with the engine's message
            raise _Misread(f"the engine could not read the batch: {exc}") from None
        out.progress = _progress(bounds, params)
        out.rejected = [(r, "") for r in meta["bad_rows"]]
        out.cells = _cells(tasks) + _cells(calls)
        return out

    def _sentinel_at(self, n: int) -> bytes:
        return self._sentinel[:1] + zigzag(n) + self._sentinel[1:]

    def _reason(
        self, value: bytes, partition: int, params: IngestParams, where: Where | None, i: int
    ) -> str:
        """Why one record cannot be counted, decoded strictly in Python ("" if it can)."""
        _, reason = read_task_event(
            self.codec,
            value,
            now_us=params.now_us,
            max_future_us=params.max_future_us,
            topic=where.topic if where else None,
            partition=partition,
            offset=where.offsets[i] if where else None,
        )
        return reason or ""

    def _search(
        self,
        partitions: Sequence[int],
        values: Sequence[bytes],
        bodies: list[bytes | None],
        params: IngestParams,
        rejected: list[tuple[int, str]],
        where: Where | None,
    ) -> Partials:
        """The engine misread the batch: reject what a strict decode refuses, pass the rest."""
        for i, body in enumerate(bodies):
            if body is None:
                continue
            reason = self._reason(values[i], partitions[i], params, where, i)
            if reason:
                rejected.append((i, reason))
                bodies[i] = None
        try:
            return self._aggregate(bodies, len(values), params)
        except _Misread as exc:  # the engine fails on good records: lose nothing, go slow
            logger.error("ingest: %s after removing the bad records; aggregating in Python", exc)
            good = [i for i, b in enumerate(bodies) if b is not None]
            out = reference_partials(
                [partitions[i] for i in good],
                [values[i] for i in good],
                params,
                self.codec,
                where=Where(where.topic, [where.offsets[i] for i in good]) if where else None,
            )
            out.rejected = [(good[i], reason) for i, reason in out.rejected]
            return out

    def _open(self) -> Any:
        if self._session is None:
            from chdb import session

            self._session = session.Session()
        return self._session

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None
        self._path.unlink(missing_ok=True)


class _Misread(Exception):
    """The engine refused the batch or read it differently from what was sent."""


def _remove_stale(folder: Path) -> None:
    """Batch files left by processes that died (kill -9 leaves them behind)."""
    for f in folder.glob("fleetpulse-ingest-*"):
        try:
            pid = int(f.name.split("-")[2])
            os.kill(pid, 0)
        except ProcessLookupError:
            f.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError):
            continue


def _shm() -> str | None:
    """A memory-backed folder for the batch file when the machine has one."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def _may_be_late(b: dict[str, Any], params: IngestParams) -> bool:
    """Whether some row of a partition could be late: its oldest row is behind the newest
    watermark the partition can have had before any of its rows."""
    before = params.watermarks.get(b["p"], 0)
    return bool(b["oldest"] < max(before, b["newest"]) - params.lateness_us)


def _progress(bounds: list[dict[str, Any]], params: IngestParams) -> dict[int, PartitionProgress]:
    out = {}
    for b in bounds:
        before = params.watermarks.get(b["p"])
        newest = b["newest"] if b["events"] > b.get("late_events", 0) else None
        wm = newest if newest is not None and (before is None or newest > before) else before
        out[b["p"]] = PartitionProgress(
            watermark_us=wm, events=b["events"], late=b.get("late_events", 0)
        )
    return out


class _Columns:
    """A result table's columns as Python lists. Numbers go through numpy (Arrow's own
    ``to_pylist`` costs 10x more here) and each list column is split by its offsets."""

    def __init__(self, t: pa.Table) -> None:
        self.t = t.combine_chunks()

    def ints(self, name: str) -> list[int]:
        return list(self.t.column(name).chunk(0).to_numpy(zero_copy_only=False).tolist())

    def lists(self, name: str) -> list[list[int]]:
        arr = self.t.column(name).chunk(0)
        offsets = arr.offsets.to_numpy().tolist()
        values = arr.values.to_numpy(zero_copy_only=False).tolist()
        return [values[a:b] for a, b in itertools.pairwise(offsets)]

    def strings(self, name: str) -> list[Any]:
        return list(self.t.column(name).to_pylist())

    def string_lists(self, name: str) -> list[list[str]]:
        arr = self.t.column(name).chunk(0)
        offsets = arr.offsets.to_numpy().tolist()
        values = arr.values.to_pylist()
        return [values[a:b] for a, b in itertools.pairwise(offsets)]

    def read(self, name: str, kind: str) -> Iterable[Any]:
        """One column as ``kind``: int, str, bool, ints (lists), strs (lists), tuple (of ints)."""
        if kind == "int":
            return self.ints(name)
        if kind == "str":
            return self.strings(name)
        if kind == "bool":
            return map(bool, self.ints(name))
        if kind == "strs":
            return self.string_lists(name)
        lists = self.lists(name)
        return map(tuple, lists) if kind == "tuple" else lists


def _rows(t: pa.Table, layout: Sequence[tuple[str, str]]) -> list[Any]:
    """A result table as tuples of its columns ``layout`` (name, kind) in that order."""
    if t.num_rows == 0:
        return []
    c = _Columns(t)
    return list(zip(*(c.read(name, kind) for name, kind in layout), strict=True))


def _layout(spec: str) -> tuple[tuple[str, str], ...]:
    """``"p:int agent:str"`` -> (("p", "int"), ("agent", "str"))."""
    return tuple((n, k) for n, _, k in (f.partition(":") for f in spec.split()))


# the column layouts of the groups (cells.CallGroup, TaskGroup, AlertTaskRow, AlertCallRow)
_CALL_GROUP = _layout("p:int agent:str integ:str st:str et:str sec:int n:int slow:tuple")
_TASK_GROUP = _layout("p:int agent:str outcome:str sec:int n:int slow:tuple")
_ALERT_TASK = _layout(
    "scope:str d1:str d2:str sec:int tasks:int failures:int cost:int zero:int bin_keys:ints "
    "bin_counts:ints via_keys:strs via_counts:ints after_keys:strs after_counts:ints"
)
_ALERT_CALL = _layout(
    "agent:str integ:str role:str op:str acc:str appr:bool sec:int tasks:int attempted:int "
    "errors:int denied:int calls:int"
)


def _alert_groups(s: Any, spec: AlertSpec) -> AlertGroups:
    """The alert rules' groups of the batch in ``fp_ingest.raw``."""
    out = AlertGroups(
        tasks=_rows(s.query(alert_tasks_sql(), "ArrowTable"), _ALERT_TASK),
        calls=_rows(s.query(alert_calls_sql(), "ArrowTable"), _ALERT_CALL),
        versions=_rows(s.query(ALERT_VERSIONS_SQL, "ArrowTable"), _layout("agent:str version:str")),
    )
    if spec.run_gap_us is not None:
        out.runs = _rows(
            s.query(alert_runs_sql(spec.run_gap_us), "ArrowTable"), _layout("agent:str runs:ints")
        )
    return out


def _cells(t: pa.Table) -> list[Cell]:
    """The cells of one result table as Python tuples."""
    if t.num_rows == 0:
        return []
    c = _Columns(t)
    ints, lists = c.ints, c.lists
    scope, d1, d2 = (c.strings(name) for name in ("scope", "d1", "d2"))
    counters = list(zip(*(ints(name) for name in COUNTERS), strict=True))
    return [
        ((s, a, b, p, w), c, z, k, n)
        for s, a, b, p, w, c, z, k, n in zip(
            scope,
            d1,
            d2,
            ints("p"),
            ints("bucket"),
            counters,
            ints("zero"),
            lists("bin_keys"),
            lists("bin_counts"),
            strict=True,
        )
    ]


# a valid TaskEvent whose only job is to close the block (see the module docstring)
_SENTINEL: dict[str, Any] = {
    "event_id": "",
    "agent_id": "",
    "agent_version": "",
    "agent_role": "",
    "task_id": "",
    "task_type": "",
    "trace_id": "",
    "parent_task_id": None,
    "upstream_agent_id": None,
    "input_hash": "",
    "outcome": "success",
    "error_type": None,
    "started_at": 0,
    "ended_at": 0,
    "duration_ms": 0.0,
    "model": None,
    "provider": None,
    "input_tokens": 0,
    "output_tokens": 0,
    "cached_tokens": 0,
    "cost_micros": 0,
    "price_table_version": "",
    "tool_calls": [],
    "attributes": {},
}
