"""Versioned migrations: the SQL files in ``sink/migrations`` applied in order, each once,
recorded in ``<db>.schema_migrations`` with its checksum. Every statement is idempotent
(``IF NOT EXISTS``), so a migration interrupted half-way is simply applied again."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from fleetpulse.sink.backend import Backend, BackendError

logger = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def migrations(directory: Path = MIGRATIONS) -> list[Migration]:
    found = []
    for f in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        found.append(Migration(int(f.name[:4]), f.stem[5:], f.read_text()))
    return found


def statements(sql: str) -> list[str]:
    """Split a migration file on ';' at line ends, dropping comment-only chunks."""
    out = []
    for chunk in sql.split(";\n"):
        body = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--"))
        if body.strip().rstrip(";"):
            out.append(body.strip().rstrip(";"))
    return out


def migrate(backend: Backend, *, ttl_days: int = 400) -> list[Migration]:
    """Apply what is missing; return what was applied now. When nothing is missing no DDL
    runs, so the sink can start under the writer role (INSERT only)."""
    db = backend.database
    try:
        done = _applied(backend)
    except BackendError:  # a new database
        done = set()
    if all(m.version in done for m in migrations()):
        return []
    backend.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    backend.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
        "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = _applied(backend)
    applied = []
    for m in migrations():
        if m.version in done:
            continue
        for stmt in statements(m.sql):
            backend.command(stmt.format(db=db, ttl_days=ttl_days))
        backend.insert(
            "schema_migrations",
            {"version": [m.version], "name": [m.name], "checksum": [m.checksum]},
        )
        logger.info("applied migration %04d_%s", m.version, m.name)
        applied.append(m)
    return applied


def _applied(backend: Backend) -> set[int]:
    rows = backend.rows(f"SELECT version FROM {backend.database}.schema_migrations")
    return {int(r["version"]) for r in rows}
