"""Two ways to reach ClickHouse behind one interface: chDB in-process (the embedded default)
and a server through clickhouse-connect (``FLEETPULSE_CLICKHOUSE_URL``).

Inserts are columnar: the sink hands over one dict of column lists per table and batch. Both
backends pass ``insert_deduplication_token`` so a retried insert of the same block is dropped
by ClickHouse itself, and ``deduplicate_blocks_in_dependent_materialized_views`` so that the
rollups' views deduplicate the retry by themselves (a view that missed the first attempt gets
it; migration 0005).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

Columns = dict[str, list[Any]]

# the settings of every deduplicated insert besides its token
DEDUP = {"deduplicate_blocks_in_dependent_materialized_views": 1}


def _dedup_sql(token: str) -> str:
    """The SETTINGS of a deduplicated insert, as SQL."""
    return ", ".join([f"insert_deduplication_token='{token}'",
                      *(f"{k} = {v}" for k, v in DEDUP.items())])  # fmt: skip


# Columns that hold epoch microseconds in the batch and DateTime64 in ClickHouse.
_TIME_NAMES = frozenset({"since", "window_start", "window_end", "at"})


def is_time(column: str) -> bool:
    """``*_at`` columns and the few timestamp fields named otherwise in the Avro schemas."""
    return column.endswith("_at") or column in _TIME_NAMES


class BackendError(Exception):
    """ClickHouse refused or could not be reached; the sink retries with backoff."""


class StoreBusyError(BackendError):
    """The embedded store is open in another process."""


def open_chdb(path: str, database: str = "fleetpulse", *, wait_s: float = 30.0) -> ChdbBackend:
    """Open the embedded store, waiting up to ``wait_s`` for another process to let it go
    (``fleetpulse sql`` holds it for the length of one query when no sink runs)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return ChdbBackend(path, database)
        except StoreBusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


class Backend(Protocol):
    database: str

    def command(self, sql: str) -> None: ...
    def insert(self, table: str, columns: Columns, *, dedup_token: str | None = None) -> None: ...
    def rows(self, sql: str) -> list[dict[str, Any]]: ...
    def table(self, sql: str) -> tuple[list[str], list[list[Any]]]: ...
    def close(self) -> None: ...


class ChdbBackend:
    """The ClickHouse engine in this process (chDB), data under ``path``.

    chDB allows one process per data directory: the sink owns it, and serves analysts'
    read-only queries from the same process.
    """

    def __init__(self, path: str, database: str = "fleetpulse") -> None:
        from chdb import session  # noqa: PLC0415  (lazy on purpose: the `sink` extra)

        self.database = database
        try:
            self._session = session.Session(path)
        except Exception as exc:  # chDB says only "Error initializing EmbeddedServer"
            raise StoreBusyError(
                f"cannot open the embedded ClickHouse store at {path}: another process has it "
                f"open (chDB allows one process per data directory) ({exc})"
            ) from None
        self._lock = threading.Lock()  # one statement at a time on the session

    def _query(self, sql: str, fmt: str = "CSV", *, failed: str = "") -> str:
        """One statement on the session, its output as text; chDB's error as BackendError."""
        with self._lock:
            try:
                out = self._session.query(sql, fmt)
            except Exception as exc:  # chdb raises a bare RuntimeError with the server message
                raise BackendError(f"{failed}{exc}") from exc
        return out.bytes().decode() if hasattr(out, "bytes") else str(out)

    def command(self, sql: str) -> None:
        self._query(sql)

    def insert(self, table: str, columns: Columns, *, dedup_token: str | None = None) -> None:
        block = _arrow(columns)  # noqa: F841 (chDB's Python() reads it by name)
        names = ", ".join(columns)
        select = ", ".join(
            f"fromUnixTimestamp64Micro({c}, 'UTC')" if is_time(c) else c for c in columns
        )
        settings = f" SETTINGS {_dedup_sql(dedup_token)}" if dedup_token else ""
        self._query(
            f"INSERT INTO {self.database}.{table} ({names}){settings} "
            f"SELECT {select} FROM Python(block)",
            failed=f"insert into {table} failed: ",
        )

    def insert_from_file(
        self, table: str, columns: list[str], select: str, path: str, fmt: str, dedup_token: str
    ) -> None:
        """``INSERT INTO table (columns) SELECT ...`` over a local file ClickHouse parses itself
        (``select`` names it as ``{source}``)."""
        source = f"file('{path}', '{fmt}')"
        self._query(
            f"INSERT INTO {self.database}.{table} ({', '.join(columns)}) "
            f"SETTINGS {_dedup_sql(dedup_token)} " + select.format(source=source),
            failed=f"insert into {table} failed: ",
        )

    def use_database(self) -> None:
        """Unqualified table names mean this backend's database (for analysts)."""
        self._query(f"USE {self.database}")

    def rows_from_file(self, select: str, path: str, fmt: str) -> list[dict[str, Any]]:
        """The rows of ``select`` over a local file (``select`` names it as ``{source}``)."""
        return self.rows(select.format(source=f"file('{path}', '{fmt}')"))

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return as_records(*self.table(sql))

    def table(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        """Column names and rows (also for a result with no rows)."""
        text = self._query(sql, "JSONCompact")
        if not text.strip():  # a statement without a result
            return [], []
        # After a query that failed mid-result, chDB leaves that result's start in front of
        # the next one's: the answer is the last document.
        decoder, at, body = json.JSONDecoder(), 0, None
        try:
            while at < len(text):
                body, at = decoder.raw_decode(text, at)
                while at < len(text) and text[at].isspace():
                    at += 1
        except ValueError:
            raise BackendError(f"unreadable result: {text[-300:].strip()}") from None
        if body is None:
            return [], []
        return [m["name"] for m in body["meta"]], body["data"]

    def close(self) -> None:
        with self._lock:
            self._session.close()


def as_records(columns: list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, r, strict=True)) for r in rows]


def _arrow(columns: Columns) -> Any:
    """An Arrow table of the columns; dict columns become maps of strings to strings, or to
    doubles when their values are numbers (``measurements``)."""
    import pyarrow as pa  # noqa: PLC0415  (lazy on purpose: the `sink` extra)

    arrays = {}
    for name, values in columns.items():
        if values and isinstance(values[0], dict):
            sample = next((v for d in values for v in d.values()), "")
            kind = pa.float64() if isinstance(sample, int | float) else pa.string()
            arrays[name] = pa.array(
                [list(v.items()) for v in values], type=pa.map_(pa.string(), kind)
            )
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def _datetimes(columns: Columns) -> Columns:
    """Epoch-micros time columns as aware datetimes, for clickhouse-connect."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return {
        k: [epoch + timedelta(microseconds=v) for v in vals] if is_time(k) else vals
        for k, vals in columns.items()
    }


class ServerBackend:
    """A ClickHouse server through clickhouse-connect (HTTP)."""

    def __init__(self, url: str, *, user: str, password: str, database: str = "fleetpulse"):
        import clickhouse_connect  # noqa: PLC0415  (lazy on purpose: the `sink` extra)

        self.database = database
        try:
            self._client = clickhouse_connect.get_client(dsn=url, username=user, password=password)
        except Exception as exc:
            raise BackendError(f"cannot reach ClickHouse at {url}: {exc}") from exc

    def use_database(self) -> None:
        """Unqualified table names mean this backend's database (for analysts)."""
        self._client.database = self.database

    def command(self, sql: str) -> None:
        try:
            self._client.command(sql)
        except Exception as exc:
            raise BackendError(str(exc)) from exc

    def insert(self, table: str, columns: Columns, *, dedup_token: str | None = None) -> None:
        settings = {**DEDUP, "insert_deduplication_token": dedup_token} if dedup_token else {}
        try:
            columns = _datetimes(columns)
            self._client.insert(
                f"{self.database}.{table}",
                list(columns.values()),
                column_names=list(columns),
                column_oriented=True,
                settings=settings,
            )
        except Exception as exc:
            raise BackendError(f"insert into {table} failed: {exc}") from exc

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return as_records(*self.table(sql))

    def table(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        try:
            result = self._client.query(sql)
        except Exception as exc:
            raise BackendError(str(exc)) from exc
        return list(result.column_names), [list(r) for r in result.result_rows]

    def close(self) -> None:
        self._client.close()
