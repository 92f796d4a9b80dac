"""Process-wide settings of the server processes (contract/process.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = "from fleetpulse.contract.process import limit_malloc_arenas; print(limit_malloc_arenas())"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas")
@pytest.mark.parametrize(("env", "capped"), [({}, "True"), ({"MALLOC_ARENA_MAX": "4"}, "False")])
def test_malloc_arenas_are_capped_unless_the_environment_says(env, capped):
    clean = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, env=clean | env
    )
    assert out.stdout.strip() == capped
