"""``fleetpulse processors run``: the metric workers, the breaker stage and the alert stage as
processes.

Each stage is its own process so that the breaker stage's latency never waits behind the
metric windows' CPU (one GIL per process). Children get SIGTERM when their parent dies, even by
SIGKILL (Linux's PR_SET_PDEATHSIG), so no orphan keeps consuming.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # not Linux: no prctl; the parent's signal handler still forwards SIGTERM
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    stage: str, *, runtime: str = "kafka", index: int = 0, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start one ``processors run --stage <stage>`` child of this process."""
    env = {**os.environ, "FLEETPULSE_PROCESSORS_WORKERS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "fleetpulse.cli", "processors", "run", "--stage", stage]
    cmd += ["--runtime", runtime, "--index", str(index)]
    return subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)


def spawn_side(side: tuple[str, ...], *, alerts_workers: int = 1) -> list[subprocess.Popen[bytes]]:
    """One process per ``side`` stage (breakers, alerts), and ``alerts_workers`` alert workers,
    each told its index (``FLEETPULSE_ALERTS_INDEX``; see ``processors/alerts/split.py``)."""
    procs = []
    for name in side:
        if name == "alerts":
            procs += [
                spawn(name, env={"FLEETPULSE_ALERTS_INDEX": str(i)}) for i in range(alerts_workers)
            ]
        else:
            procs.append(spawn(name))
    return procs


def run_workers(n: int, *, runtime: str, side: tuple[str, ...], alerts_workers: int = 1) -> int:
    """Start ``n`` metric workers and the ``side`` stages (``spawn_side``), forward
    SIGINT/SIGTERM to them, return the worst exit code."""
    procs = [spawn("metrics", runtime=runtime, index=i) for i in range(n)]
    procs += spawn_side(side, alerts_workers=alerts_workers)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(abs(p.wait()) for p in procs)
