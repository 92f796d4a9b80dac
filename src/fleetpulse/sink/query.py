"""Analysts' read-only SQL: ``fleetpulse sql`` and ``fleetpulse report``.

chDB allows one process per data directory. In embedded mode the process that owns the store
(``fleetpulse sink run``) serves read-only queries on a loopback HTTP endpoint; it writes the
endpoint's address and a random token to ``<data dir>/query-endpoint.json`` (mode 0600, so
only the same OS user can use it) and removes the file when it stops. When no sink owns the
store, the CLI opens it itself. In server mode the CLI goes to ClickHouse through
clickhouse-connect with the analyst's credentials, and the server's roles and settings profile
enforce what they may do.

Whatever the path, a statement is made read-only here before it runs (``readonly_sql``): one
statement, a reading verb, and ``readonly=1`` in its settings, which ClickHouse enforces on
the whole query (subqueries cannot lift it; table functions like ``file()`` are refused).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from fleetpulse.devstack.state import pid_alive
from fleetpulse.sink.backend import Backend, BackendError, as_records

logger = logging.getLogger(__name__)

ENDPOINT_FILE = "query-endpoint.json"
READ_VERBS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN")
MAX_EXECUTION_S = 60


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


def readonly_sql(sql: str) -> str:
    """The statement as it will run: read-only, one statement, bounded in time.

    Example:
        >>> readonly_sql("select 1;")
        'SELECT * FROM (select 1\\n) SETTINGS readonly = 1, max_execution_time = 60'
    """
    q = sql.strip().rstrip(";").strip()
    if not q:
        raise QueryError("empty query")
    verb = q.split(None, 1)[0].upper()
    if verb not in READ_VERBS:
        raise QueryError(
            f"{verb} is not allowed: analysts' SQL is read-only "
            f"(statements start with {', '.join(READ_VERBS)})"
        )
    settings = f"SETTINGS readonly = 1, max_execution_time = {MAX_EXECUTION_S}"
    if verb in ("SELECT", "WITH"):
        # as a subquery, a second statement or a FORMAT clause is a syntax error
        return f"SELECT * FROM ({q}\n) {settings}"
    if ";" in q:
        raise QueryError("one statement at a time")
    return f"{q} {settings}"


class ReadOnly:
    """Any backend, for analysts: every statement goes through ``readonly_sql``."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def table(self, sql: str) -> Table:
        try:
            columns, rows = self.backend.table(readonly_sql(sql))
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
    """Serves read-only queries on 127.0.0.1 from the process that owns the chDB store."""

    def __init__(self, backend: Backend, store_dir: Path) -> None:
        self.analyst = ReadOnly(backend)
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
                    result = server.analyst.table(str(body["sql"]))
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

    def __init__(self, url: str, token: str, timeout_s: float = MAX_EXECUTION_S + 5) -> None:
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
    from fleetpulse.sink.backend import ChdbBackend, StoreBusyError
    from fleetpulse.sink.runner import open_backend

    if settings.clickhouse_url:
        return ReadOnly(open_backend(settings))
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
            return ReadOnly(ChdbBackend(str(store), settings.clickhouse_database))
        except StoreBusyError as exc:
            if time.monotonic() >= deadline:
                raise QueryError(f"{exc}; and it serves no queries") from None
            time.sleep(0.2)
