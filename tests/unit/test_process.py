"""Process-wide settings of the server processes (contract/process.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_malloc_arenas_are_capped_in_a_fresh_process():
    code = (
        "from fleetpulse.contract.process import limit_malloc_arenas; print(limit_malloc_arenas())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
