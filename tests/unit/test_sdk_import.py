"""`from fleetpulse import Fleet` loads the SDK and what it stands on, nothing of the servers:
the light install (`pip install fleetpulse`) depends on it, and so does the import time."""

from __future__ import annotations

import json
import subprocess
import sys

# never loaded by the SDK: the servers' packages, the CLI's, and what the SDK loads only when
# it needs it (settings on connect, YAML with a file, cron with a schedule)
SERVER_SIDE = (
    "chdb",
    "pyarrow",
    "faust",
    "aiokafka",
    "fastapi",
    "uvicorn",
    "jinja2",
    "clickhouse_connect",
    "ddsketch",
    "prometheus_client",
    "httpx",
    "typer",
    "rich",
    "pydantic_settings",
    "yaml",
    "croniter",
    "fleetpulse.contract.config",
    "fleetpulse.control.plane",
    "fleetpulse.control.service",
    "fleetpulse.control.api",
    "fleetpulse.control.gateway",
    "fleetpulse.processors.breakers",
    "fleetpulse.processors.ingest",
    "fleetpulse.sink",
    "fleetpulse.paging",
    "fleetpulse.devstack",
)


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout))


def test_from_fleetpulse_import_fleet_loads_no_server_module() -> None:
    loaded = loaded_after("from fleetpulse import Fleet")
    assert "fleetpulse.sdk.fleet" in loaded
    assert [m for m in SERVER_SIDE if m in loaded] == []


def test_import_fleetpulse_loads_only_the_errors() -> None:
    loaded = loaded_after("import fleetpulse")
    assert {m for m in loaded if m.startswith("fleetpulse")} == {
        "fleetpulse",
        "fleetpulse.contract",
        "fleetpulse.contract.errors",
    }
    assert "pydantic" not in loaded and "confluent_kafka" not in loaded


def test_the_fleet_is_still_there_lazily() -> None:
    loaded = loaded_after(
        "import fleetpulse\nfrom fleetpulse.sdk.fleet import Fleet\n"
        "assert fleetpulse.Fleet is Fleet"
    )
    assert "fleetpulse.sdk.fleet" in loaded
