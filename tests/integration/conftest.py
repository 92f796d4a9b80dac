"""Fixtures of the integration tests (the broker's are in tests/conftest.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from .sink_support import Store


@pytest.fixture(params=["chdb", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each sink test on embedded chDB, then on a ClickHouse server when there is one."""
    if request.param == "chdb":
        return Store.embedded(tmp_path / "ch")
    server = request.getfixturevalue("clickhouse_server")
    return Store.server(server.url, server.user, server.password, f"fp_{uuid.uuid4().hex[:10]}")
