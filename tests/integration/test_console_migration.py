"""Migration 0004 on a store made before it (its own module: chDB opens one data directory
per process, and test_console.py keeps its seeded store open for the whole module)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_an_older_store_gets_the_time_ordered_rollup_filled_from_its_history(tmp_path) -> None:
    """Upgrading a store made before migration 0004: fleet_minute starts with every minute
    agent_minute already held, then follows new inserts."""
    from datetime import UTC, datetime

    from fleetpulse.console.synthetic import Seed, seed
    from fleetpulse.sink.backend import ChdbBackend
    from fleetpulse.sink.migrate import migrate, migrations, statements

    backend = ChdbBackend(str(tmp_path / "ch"))
    try:
        db = backend.database
        backend.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        for m in migrations():
            if m.version < 4:  # the store as it was before
                for stmt in statements(m.sql):
                    backend.command(stmt.format(db=db, ttl_days=400))
        now = datetime.now(UTC)
        seed(backend, Seed(("a", "b"), 1000, now, 3600, calls_per_task=0))
        assert [m.version for m in migrate(backend) if m.version >= 4] == [4, 5]
        seed(backend, Seed(("c",), 10, now, 60, calls_per_task=0))
        for table in ("fleet_minute", "fleet_total_minute"):
            rows = backend.rows(f"SELECT countMerge(tasks) AS n FROM {db}.{table}")
            assert rows == [{"n": 1010}], table
    finally:
        backend.close()
