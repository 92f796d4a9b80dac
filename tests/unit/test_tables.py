"""Report and demo tables in an 80-column terminal: every column name whole, timestamps on
one line, values as people read them."""

from __future__ import annotations

from rich.console import Console

from fleetpulse.tables import cell, print_table

DAILY = ["agent_id", "versions", "tasks", "success", "failed", "cancelled", "denied",
         "failure_rate", "cost_usd", "p50_ms", "p99_ms", "tool_calls"]  # fmt: skip
ROWS = [
    ["triage-07", ["3", "4"], 1204, 1100, 90, 4, 10, 0.0748, 12.345678, 812.5, 4012.1, 2950],
    ["billing", ["1"], 3, 3, 0, 0, 0, 0.0, 0.0012, 10.0, 11.0, 0],
]


def _render(columns: list[str], rows: list[list[object]], width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None)
    print_table(console, "agents on 2026-11-24 (UTC)", columns, rows)
    return console.export_text()


def test_a_wide_report_fits_80_columns_with_every_name_whole() -> None:
    out = _render(DAILY, ROWS)
    assert max(len(line) for line in out.splitlines()) <= 80
    for name in DAILY:
        assert name in out, name
    assert "3, 4" in out and "['3'" not in out
    assert "…" not in out
    assert out.count("triage-07") >= 2  # the key column repeats in each part


def test_timestamps_print_to_the_second_on_one_line() -> None:
    cols = ["at", "breaker", "state", "actor", "reason"]
    rows = [["2026-11-24 02:00:13.123456", "integration:zendesk", "OPEN", "processors",
             "failure rate 62% over 20 calls >= 50%"]]  # fmt: skip
    out = _render(cols, rows)
    assert "2026-11-24 02:00:13" in out and ".123456" not in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_cells() -> None:
    assert cell(["3"]) == "3"
    assert cell(None) == ""
    assert cell("2026-01-31T12:00:00.5Z") == "2026-01-31 12:00:00"
    assert cell("not a time 2026") == "not a time 2026"
