"""`make bench-all`: every benchmark, one after the other; results land in bench/results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = [
    "sdk_produce.py",
    "processors.py",
    "breakers.py",
    "alerts.py",
    "sink.py",
    "governance.py",
    "outage.py",
    "e2e.py",
    "console.py",
]

if __name__ == "__main__":
    here = Path(__file__).parent
    failed = [b for b in BENCHES if subprocess.run([sys.executable, str(here / b)]).returncode]
    sys.exit(1 if failed else 0)
