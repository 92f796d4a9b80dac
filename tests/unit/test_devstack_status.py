"""`dev status` after the broker died without `dev down`: it says what brings it back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from fleetpulse.cli import app
from fleetpulse.contract.stack_state import write_state


def test_status_after_a_crash_says_dev_up(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(gone.stdout)
    write_state(tmp_path, {"kafka": {"pid": pid, "bootstrap_servers": "127.0.0.1:1"}})
    r = CliRunner().invoke(
        app, ["dev", "status"], env={"FLEETPULSE_HOME": str(tmp_path), "COLUMNS": "200"}
    )
    assert r.exit_code == 1
    assert "not running" in r.output
    assert "fleetpulse dev up" in r.output and "crashed" in r.output
