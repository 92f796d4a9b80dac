"""Analysts' read-only SQL: ``fleetpulse sql`` and ``fleetpulse report``.

chDB allows one process per data directory. In embedded mode the process that owns the store
(``fleetpulse sink run``) serves read-only queries on a loopback HTTP endpoint; it writes the
endpoint's address and a random token to ``<data dir>/query-endpoint.json`` (mode 0600, so
only the same OS user can use it) and removes the file when it stops. When no sink owns the
store, the CLI opens it itself. In server mode the CLI goes to ClickHouse through
clickhouse-connect with the analyst's credentials, and the server's roles and settings profile
enforce what they may do.

Whatever the path, a statement is checked and made read-only here before it runs:

* one statement, a reading verb (``readonly_sql``), and ``readonly=1`` in its settings, which
  ClickHouse enforces on the whole query (subqueries cannot lift it);
* table functions from an allow-list only (`TABLE_FUNCTIONS`: generators like ``numbers()``),
  found in the statement's syntax tree (``EXPLAIN AST``): nothing that reaches outside the
  database (``file``, ``url``, ``s3``, ``remote``, ``executable``, chDB's ``Python`` ...);
* bounded: `QueryLimits` caps threads, memory and time;
* unqualified table names mean the fleetpulse database.

In embedded mode analysts' queries run on a chDB session of their own, beside the sink's
(each session has its own lock), so a heavy query does not hold up ingestion.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import queue
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from fleetpulse.contract.stack_state import pid_alive
from fleetpulse.sink.backend import (
    Backend,
    BackendError,
    ChdbBackend,
    StoreBusyError,
    as_records,
)
from fleetpulse.sink.runner import open_backend

logger = logging.getLogger(__name__)

ENDPOINT_FILE = "query-endpoint.json"
READ_VERBS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN")
MAX_EXECUTION_S = 60
# table functions that read nothing but what the query itself generates
TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries", "values"}
)


@dataclass(frozen=True)
class QueryLimits:
    """What one analyst query may use (``FLEETPULSE_QUERY_*``)."""

    max_threads: int = 1
    max_memory_bytes: int = 1 << 30
    max_execution_s: float = MAX_EXECUTION_S

    @classmethod
    def of(cls, settings: Any) -> QueryLimits:
        return cls(
            settings.query_max_threads,
            settings.query_max_memory_mb << 20,
            settings.query_max_execution_s,
        )

    def sql(self) -> str:
        return (
            f"SETTINGS readonly = 1, max_execution_time = {self.max_execution_s:g}, "
            f"max_threads = {self.max_threads}, max_memory_usage = {self.max_memory_bytes}"
        )


class QueryError(ValueError):
    """A statement an analyst may not run, or one ClickHouse rejected (with its message)."""


@dataclass
class Table:
    """A query's result: column names and rows, in order."""

    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        return as_records(self.columns, self.rows)


class Analyst(Protocol):
    def table(self, sql: str) -> Table: ...
    def close(self) -> None: ...


def readonly_sql(sql: str, limits: QueryLimits | None = None) -> str:
    """The statement as it will run: read-only, one statement, bounded in time and resources.

    Example:
        >>> readonly_sql("select 1;")
        'SELECT * FROM (select 1\\n) SETTINGS readonly = 1, max_execution_time = 60, max_threads = 1, max_memory_usage = 1073741824'
    """  # noqa: E501
    q = statement(sql)
    verb = q.split(None, 1)[0].upper()
    settings = (limits or QueryLimits()).sql()
    if verb in ("SELECT", "WITH"):
        # as a subquery, a second statement or a FORMAT clause is a syntax error
        return f"SELECT * FROM ({q}\n) {settings}"
    if ";" in q:
        raise QueryError("one statement at a time")
    return f"{q} {settings}"


def statement(sql: str) -> str:
    """The analyst's statement without its trailing ``;``, if its verb only reads."""
    q = sql.strip().rstrip(";").strip()
    if not q:
        raise QueryError("empty query")
    verb = q.split(None, 1)[0].upper()
    if verb not in READ_VERBS:
        raise QueryError(
            f"{verb} is not allowed: analysts' SQL is read-only "
            f"(statements start with {', '.join(READ_VERBS)})"
        )
    return q


def table_functions(ast_lines: list[str]) -> list[str]:
    """The table functions in an ``EXPLAIN AST`` listing: a ``Function`` node right under a
    ``TableExpression`` node, wherever it is (joins, subqueries, CTEs, DESCRIBE)."""
    found = []
    tables: list[int] = []  # depths of the TableExpression nodes above this line
    for line in ast_lines:
        depth = len(line) - len(line.lstrip(" "))
        node = line.strip()
        while tables and depth <= tables[-1]:
            tables.pop()
        if node.startswith("Function ") and tables and depth == tables[-1] + 1:
            found.append(node.split()[1])
        if node.startswith("TableExpression"):
            tables.append(depth)
    return found


def check_table_functions(ast_lines: list[str]) -> None:
    refused = sorted({f for f in table_functions(ast_lines) if f.lower() not in TABLE_FUNCTIONS})
    if refused:
        raise QueryError(
            f"table function {', '.join(refused)} is not allowed: analysts read the fleetpulse "
            f"tables (and generators: {', '.join(sorted(TABLE_FUNCTIONS))})"
        )


class ReadOnly:
    """Any backend, for analysts: every statement is checked (`check_table_functions`) and
    made read-only and bounded (``readonly_sql``); unqualified names mean the database."""

    def __init__(self, backend: Backend, limits: QueryLimits | None = None) -> None:
        self.backend = backend
        self.limits = limits or QueryLimits()
        use = getattr(backend, "use_database", None)
        if use is not None:
            try:
                use()
            except BackendError:  # no database yet: qualified names still work
                logger.info("database %s does not exist yet", backend.database)

    def table(self, sql: str) -> Table:
        # the statement as it will run, before anything reaches ClickHouse: wrapped, a second
        # statement is a syntax error (chDB runs every statement of a multi-statement query)
        final = readonly_sql(sql, self.limits)
        try:
            _cols, ast = self.backend.table(f"EXPLAIN AST {final}")
            check_table_functions([str(row[0]) for row in ast])
            columns, rows = self.backend.table(final)
        except BackendError as exc:
            raise QueryError(_first_line(str(exc))) from None
        return Table(columns, rows)

    def close(self) -> None:
        self.backend.close()


def _first_line(message: str) -> str:
    """ClickHouse's message without the stack trace it sometimes carries."""
    first = message.strip().split("\n", 1)[0]
    for cut in (". Stack trace", ". Expected one of"):
        first = first.split(cut, 1)[0]
    return first


# -- the store owner's endpoint -------------------------------------------------------------


class QueryServer:
    """Serves read-only queries on 127.0.0.1 from the process that owns the chDB store.

    ``open_session`` opens an analysts' session on the store, not the sink's: a query never
    waits for an insert, nor an insert for a query. Up to ``sessions`` queries run at once,
    each on its own session (see `open_query_server`); more wait for one to be free.
    """

    def __init__(
        self,
        open_session: Callable[[], Backend],
        store_dir: Path,
        limits: QueryLimits | None = None,
        *,
        sessions: int = 4,
    ):
        self._open_session, self._limits = open_session, limits
        self._free: queue.LifoQueue[ReadOnly] = queue.LifoQueue()
        self._slots = threading.Semaphore(sessions)
        self._all: list[ReadOnly] = []
        self.path = store_dir / ENDPOINT_FILE
        self.token = secrets.token_urlsafe(24)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fleetpulse-query", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> QueryServer:
        self._thread.start()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": self.url, "token": self.token, "pid": os.getpid()}, f)
        logger.info("serving read-only queries on %s", self.url)
        return self

    def stop(self) -> None:
        self.path.unlink(missing_ok=True)
        self._httpd.shutdown()
        self._httpd.server_close()
        for analyst in self._all:
            analyst.close()

    def query(self, sql: str) -> Table:
        """Run one analyst statement on a free session (opening one if fewer are open)."""
        with self._slots:
            try:
                analyst = self._free.get_nowait()
            except queue.Empty:
                analyst = ReadOnly(self._open_session(), self._limits)
                self._all.append(analyst)
            try:
                return analyst.table(sql)
            finally:
                self._free.put(analyst)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                given = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if self.path != "/query" or not hmac.compare_digest(given, server.token):
                    self._reply(403, {"error": "forbidden"})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    result = server.query(str(body["sql"]))
                except QueryError as exc:
                    self._reply(400, {"error": str(exc)})
                    return
                except (ValueError, KeyError, TypeError):
                    self._reply(400, {"error": 'expected a JSON body {"sql": "..."}'})
                    return
                self._reply(200, {"columns": result.columns, "rows": result.rows})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # queries are the analysts' business; errors are returned, not logged

        return Handler


class RemoteStore:
    """The CLI's side of ``QueryServer``."""

    def __init__(self, url: str, token: str, timeout_s: float = 3600) -> None:
        self.url, self.token, self.timeout_s = url, token, timeout_s

    def table(self, sql: str) -> Table:
        req = urllib.request.Request(
            f"{self.url}/query",
            data=json.dumps({"sql": sql}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise QueryError(json.loads(exc.read() or b"{}").get("error", str(exc))) from None
        return Table(body["columns"], body["rows"])

    def close(self) -> None:
        pass


def endpoint(store_dir: Path) -> dict[str, Any] | None:
    """The running store owner's endpoint, if there is one."""
    try:
        info: dict[str, Any] = json.loads((store_dir / ENDPOINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if pid_alive(info.get("pid")) else None


def open_analyst(settings: Any, *, wait_s: float = 30.0) -> Analyst:
    """A read-only connection for ``fleetpulse sql`` and ``fleetpulse report``: the server,
    the process that owns the embedded store, or the embedded store itself when nobody does."""
    limits = QueryLimits.of(settings)
    if settings.clickhouse_url:
        return ReadOnly(open_backend(settings), limits)
    store: Path = settings.store_dir
    if not store.exists():
        raise QueryError(
            f"no ClickHouse data at {store}: run `fleetpulse sink run` first "
            "(or set FLEETPULSE_DATA_DIR / FLEETPULSE_CLICKHOUSE_URL)"
        )
    deadline = time.monotonic() + wait_s
    while True:
        info = endpoint(store)
        if info is not None:
            return RemoteStore(info["url"], info["token"])
        try:  # nobody serves it: open it here, unless a sink is starting (then ask it)
            return ReadOnly(ChdbBackend(str(store), settings.clickhouse_database), limits)
        except StoreBusyError as exc:
            if time.monotonic() >= deadline:
                raise QueryError(f"{exc}; and it serves no queries") from None
            time.sleep(0.2)


def running_analyst(settings: Any) -> Analyst | None:
    """The analysts' path when ClickHouse answers (a server, or the embedded store's owner is
    up: the sink), else None; the caller closes it."""
    if settings.clickhouse_url or endpoint(settings.store_dir) is not None:
        return open_analyst(settings)
    return None


def open_query_server(settings: Any) -> QueryServer:
    """The embedded store's query endpoint, on a chDB session of its own (the sink process
    has opened the store already, so this one shares it)."""

    def open_session() -> Backend:
        return ChdbBackend(str(settings.store_dir), settings.clickhouse_database)

    return QueryServer(open_session, settings.store_dir, QueryLimits.of(settings)).start()
