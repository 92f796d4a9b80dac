"""`fleetpulse demo` as `make demo` runs it: starts its own devstack, loses nothing, stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetpulse.devstack import free_port

pytestmark = pytest.mark.integration


def test_demo_runs_a_fleet_and_reads_every_event_back(tmp_path: Path, kafka_jars: Path) -> None:
    env = {
        **os.environ,
        "FLEETPULSE_HOME": str(tmp_path / "home"),
        "FLEETPULSE_KAFKA_PORT": str(free_port()),
        "FLEETPULSE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "FLEETPULSE_KAFKA_HEAP": "384m",
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [sys.executable, "-m", "fleetpulse.cli", "demo", "--agents", "3", "--seconds", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert "nothing lost" in result.stdout
    for agent in ("triage-00", "billing-01", "outreach-02"):
        assert agent in result.stdout
    assert "devstack stopped" in result.stdout
    assert not (tmp_path / "home" / "devstack.json").exists()
