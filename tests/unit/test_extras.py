"""A CLI verb whose optional extra is missing says which extra to install, in one line, exit 1."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from fleetpulse.extras import VERB_EXTRA, extra_for, missing_extra_line


def run_cli(args: list[str], absent: tuple[str, ...], entry: str = "fleetpulse.__main__") -> Any:
    """The console script (or ``python -m fleetpulse.cli``) with ``absent`` not importable."""
    code = (
        "import sys\n"
        f"for m in {absent!r}: sys.modules[m] = None  # import fails, find_spec says absent\n"
        f"sys.argv = ['fleetpulse', *{args!r}]\n"
        f"from {entry} import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("args", "absent", "line"),
    [
        (
            ["processors", "run"],
            ("chdb",),
            "fleetpulse processors needs the processors extra: pip install 'fleetpulse[processors]'",
        ),
        (
            ["sink", "run"],
            ("clickhouse_connect",),
            "fleetpulse sink needs the sink extra: pip install 'fleetpulse[sink]'",
        ),
        (
            ["sql", "SELECT 1"],
            ("pyarrow",),
            "fleetpulse sql needs the sink extra: pip install 'fleetpulse[sink]'",
        ),
        (
            ["api", "run"],
            ("fastapi",),
            "fleetpulse api needs the api extra: pip install 'fleetpulse[api]'",
        ),
        (
            ["demo"],
            ("faust",),
            "fleetpulse demo needs the all extra: pip install 'fleetpulse[all]'",
        ),
        (
            ["agents", "list"],
            ("typer", "rich"),
            "fleetpulse agents needs the cli extra: pip install 'fleetpulse[cli]'",
        ),
        ([], ("typer",), "fleetpulse needs the cli extra: pip install 'fleetpulse[cli]'"),
    ],
)
def test_console_script_names_the_missing_extra(
    args: list[str], absent: tuple[str, ...], line: str
) -> None:
    r = run_cli(args, absent)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == line
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_python_m_cli_names_the_missing_extra_too() -> None:
    r = run_cli(["processors", "run"], ("chdb",), entry="fleetpulse.cli")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "fleetpulse processors needs the processors extra: pip install 'fleetpulse[processors]'"
    )


def test_a_missing_fleetpulse_module_is_a_bug_not_an_extra() -> None:
    assert missing_extra_line(["processors", "run"], "fleetpulse.processors.gone") is None
    assert missing_extra_line(["processors", "run"], None) is None


def test_a_module_of_another_extra_names_that_extra() -> None:
    # `audit` is a cli verb, but on a ClickHouse server it needs the sink's client
    assert missing_extra_line(["audit"], "clickhouse_connect") == (
        "fleetpulse audit needs the sink extra: pip install 'fleetpulse[sink]'"
    )
    assert missing_extra_line(["agents", "list"], "somethingelse") == (
        "fleetpulse agents needs the all extra: pip install 'fleetpulse[all]'"
    )


def test_every_verb_maps_to_a_declared_extra() -> None:
    assert extra_for(["--json", "processors"]) == "processors"
    assert extra_for(["breakers", "list"]) == "cli"
    assert set(VERB_EXTRA.values()) <= {"processors", "sink", "api", "all"}
