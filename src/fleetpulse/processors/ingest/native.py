"""Phase 1, natively: a batch of raw TaskEvents decoded in one pass by the embedded ClickHouse
engine (chDB) and grouped in columns, never record by record in Python.

How a batch goes through:

1. **Container.** A TaskEvent in single-object encoding is a 10-byte header (marker and
   schema fingerprint) and the Avro body, which is also the body of a schema with a leading
   ``fixed(10)`` field: so the records *as they are* are the bodies, and the batch framed as one
   Avro object container (header, one block, sync marker) is what ClickHouse's Avro reader
   decodes in C++, with no per-record copy. Records of an older schema or in Confluent framing
   are decoded and re-encoded with the latest schema first (rare: per record). A sentinel
   record with a header of its own closes the block, so that junk after any body shifts what
   follows and is caught by the header check below instead of being read as data.
2. **Decode once** into an Arrow table (``sql.py``): the columns the scopes need.
3. **Check and group** in numpy (``columns.py``): whether each row is countable
   (``events/task_event.py``'s checks), its latency sketch bins, its lateness against its
   partition's running watermark, then every scope's cells, the breakers' counts and the
   alert rules' groups.
4. **Check** that every row came back with the latest schema's header, in order, and the
   sentinel's last (a row's source partition and index come from its place). If not, or if the
   engine refused the container, each record is decoded strictly in Python to find the bad
   ones, which are rejected with their reason (the caller dead-letters them), and the rest is
   passed again.

One ``chdb`` session is kept open per process (a fresh engine per call costs ~45 ms). Even so
the decode costs ~10 ms of query analysis and planning whatever the batch's size (measured here
on 2 cores), while the reference aggregation costs ~70-110 us per event. So a batch smaller than
``native_min`` records (default 300, about where the two cost the same) is aggregated by
``reference.py`` (same figures, proven by the same test) and the native pass takes every batch
above it: light traffic costs little CPU, heavy traffic is never aggregated record by record.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from io import BytesIO
from itertools import repeat
from pathlib import Path
from typing import Any

from fastavro import schemaless_writer

from fleetpulse.contract.errors import CodecError
from fleetpulse.contract.events.codec import HEADER_LEN, MAX_BYTES, SINGLE_OBJECT_MARKER, AvroCodec
from fleetpulse.contract.events.container import container_parts, read_zigzag
from fleetpulse.contract.events.task_event import read_task_event
from fleetpulse.processors.ingest.cells import Partials
from fleetpulse.processors.ingest.columns import SENTINEL_HEAD, BatchError, aggregate
from fleetpulse.processors.ingest.params import IngestParams, Where
from fleetpulse.processors.ingest.reference import reference_partials
from fleetpulse.processors.ingest.sql import DECODE_BLOCK_ROWS, decode_sql

logger = logging.getLogger(__name__)


class NativeIngest:
    """Phase 1 over one open chDB session. Not thread-safe across batches: one caller at a
    time (a lock guards the session)."""

    def __init__(
        self,
        codec: AvroCodec | None = None,
        *,
        workdir: Path | None = None,
        native_min: int = 300,
    ) -> None:
        self.codec = codec or AvroCodec(logical_types=False)
        self.native_min = native_min
        latest = self.codec.store.latest("TaskEvent")
        self._prefix = SINGLE_OBJECT_MARKER + latest.fingerprint
        self._latest_plain = latest.plain
        schema = json.loads(latest.json) if isinstance(latest.json, str) else dict(latest.raw)
        schema["name"] = "IngestTaskEvent"
        schema["fields"] = [
            {"name": "_h", "type": {"type": "fixed", "name": "IngestHead", "size": HEADER_LEN}},
            *schema["fields"],
        ]
        self._schema_json = json.dumps(schema).encode()
        self._sync = os.urandom(16)
        self._sentinel = SENTINEL_HEAD + self._body_of(_SENTINEL)
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
                out = self._aggregate(bodies, partitions, params)
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
        prefix, limit = self._prefix, MAX_BYTES["TaskEvent"]
        out: list[bytes | None] = list(values)  # a record in the latest schema is its body
        if (
            all(map(bytes.startswith, values, repeat(prefix)))
            and max(map(len, values), default=0) <= limit
        ):
            return out  # every record is (the loops above run in C)
        for i, v in enumerate(values):
            if v.startswith(prefix) and len(v) <= limit:
                continue
            try:  # an older writer schema, the Confluent framing, oversized: decode (rare)
                ev = self.codec.decode(v, "TaskEvent", partition=partitions[i])
            except CodecError:
                rejected.append((i, ""))  # run() gives the reason, naming the record
                out[i] = None
                continue
            out[i] = prefix + self._body_of(ev)
        return out

    def _body_of(self, ev: dict[str, Any]) -> bytes:
        buf = BytesIO()
        schemaless_writer(buf, self._latest_plain, ev)
        return buf.getvalue()

    def _aggregate(
        self,
        bodies: list[bytes | None],
        partitions: Sequence[int],
        params: IngestParams,
    ) -> Partials:
        """One native pass over the records that have a body. Rows the semantic checks refuse
        come back in ``rejected`` without a reason yet (``run`` finds it)."""
        kept = [i for i, b in enumerate(bodies) if b is not None]
        out = Partials()
        if not kept:
            return out
        parts = container_parts(
            self._schema_json, [*(b for b in bodies if b is not None), self._sentinel], self._sync
        )
        with self._path.open("wb") as f:
            f.writelines(parts)
        del parts
        try:
            table = self._open().query(decode_sql(str(self._path)), "ArrowTable")
        except Exception as exc:  # chDB raises a bare error with the engine's message
            raise _Misread(f"the engine could not read the batch: {exc}") from None
        try:
            return aggregate(
                table, self._prefix, kept, partitions, params, ids=_probe_ids(bodies, kept)
            )
        except BatchError as exc:
            raise _Misread(str(exc)) from None

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
            return self._aggregate(bodies, partitions, params)
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

    def warm(self) -> None:
        """Load the engine now rather than on the first pass: a worker that cannot load it
        fails at start, its first pass is not ~1 s late, and its idle memory is what it
        needs to work (the engine's library is ~200 MB of it). Once: later calls return."""
        with self._lock:
            if self._session is None:
                self._open().query("SELECT 1", "CSV")

    def release(self) -> bool:
        """Give the engine's free memory back to the system (its allocator, jemalloc, keeps
        what a pass freed: ~160 MB after four queries of 3 million rows). Skipped, False, while
        a pass runs: the caller tries again later rather than wait for it (a pass that starts
        during the purge waits for it: ~10 ms)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._session is not None:
                self._session.query("SYSTEM JEMALLOC PURGE")
            return True
        finally:
            self._lock.release()

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


def _probe_ids(bodies: Sequence[bytes | None], kept: Sequence[int]) -> dict[int, bytes]:
    """The event id of the records the engine's rows at each block edge (and the last row)
    must hold, read from their bytes: every row has the same header, so this is what shows
    rows out of order. The event id is the body's first field, a string."""
    n, block = len(kept), DECODE_BLOCK_ROWS
    out = {}
    for j in sorted({0, n - 1, *range(block - 1, n, block), *range(block, n, block)}):
        if 0 <= j < n:
            body = bodies[kept[j]]
            assert body is not None
            size, at = read_zigzag(body, HEADER_LEN)
            out[j] = body[at : at + size]
    return out


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
