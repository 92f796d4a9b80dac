"""``fleetpulse processors run --workers N``: N worker processes in one consumer group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType


def run_workers(n: int, *, runtime: str) -> int:
    """Start ``n`` workers, forward SIGINT/SIGTERM to them, return the worst exit code."""
    env = {**os.environ, "FLEETPULSE_PROCESSORS_WORKERS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetpulse.cli",
                "processors",
                "run",
                "--runtime",
                runtime,
                "--index",
                str(i),
            ],
            env=env,
        )
        for i in range(n)
    ]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(abs(p.wait()) for p in procs)
