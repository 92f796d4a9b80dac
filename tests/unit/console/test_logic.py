"""The console's pure parts: health words, budgets, the global filter, form parsing, plots."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from fleetpulse.console.actions import parse_duration, parse_matchers
from fleetpulse.console.charts import Plot, Series, line_chart, sparkline, waterfall
from fleetpulse.console.health import budget_rows, firing_by_agent, health
from fleetpulse.console.history import Filter


@pytest.mark.parametrize(
    ("totals", "paused", "firing", "expected"),
    [
        ({"tasks": 100, "failure_rate": 0.02}, False, set(), "healthy"),
        ({"tasks": 100, "failure_rate": 0.12}, False, set(), "degraded"),
        ({"tasks": 100, "failure_rate": 0.02}, False, {"latency_degradation"}, "degraded"),
        ({"tasks": 100, "failure_rate": 0.5}, False, set(), "failing"),
        ({"tasks": 3, "failure_rate": 1.0}, False, set(), "healthy"),  # too few to judge
        ({"tasks": 100, "failure_rate": 0.9}, True, set(), "paused"),
        (None, False, {"schedule"}, "not_run"),
        (None, False, set(), "idle"),
    ],
)
def test_health(totals, paused, firing, expected) -> None:
    assert health(totals, paused, firing) == expected


def test_firing_alerts_are_grouped_by_agent() -> None:
    alerts = [
        {"status": "firing", "kind": "failure_rate", "scope_type": "agent", "scope_id": "a",
         "labels": {}},
        {"status": "firing", "kind": "integration_error_rate", "scope_type": "agent_integration",
         "scope_id": "x", "labels": {"agent_id": "b"}},
        {"status": "resolved", "kind": "schedule", "scope_type": "agent", "scope_id": "a",
         "labels": {}},
    ]  # fmt: skip
    assert firing_by_agent(alerts) == {"a": {"failure_rate"}, "b": {"integration_error_rate"}}


def test_budgets_most_used_first_with_teams_summed() -> None:
    rows = budget_rows(
        {"a": 9.0, "b": 1.0, "c": 30.0},
        {"a": 10.0, "b": 10.0},
        {"a": ("support", 50.0), "c": ("support", 50.0)},
    )
    assert [(r["scope"], r["name"], round(r["used"], 2)) for r in rows] == [
        ("agent", "a", 0.9),
        ("team", "support", 0.78),
        ("agent", "b", 0.1),
    ]


NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def test_the_filter_parses_range_and_label_selectors() -> None:
    f = Filter.parse("24h", "team=support, customer=acme", NOW)
    assert f.labels == (("team", "support"), ("customer", "acme"))
    assert f.since == datetime(2026, 1, 30, 12, 0, tzinfo=UTC) and f.bucket_s == 1800
    assert "label=team%3Dsupport%2Ccustomer%3Dacme" in f.query()
    assert Filter.parse(None, None, NOW).range == "1h"


@pytest.mark.parametrize(
    ("range_", "label", "says"),
    [("1y", None, "range"), ("1h", "team", "key=value"), ("1h", "te am=x", "key=value"),
     ("1h", "x'=1", "key=value")],
)  # fmt: skip
def test_a_bad_filter_says_what_to_write(range_, label, says) -> None:
    with pytest.raises(ValueError, match=says):
        Filter.parse(range_, label, NOW)


def test_form_values() -> None:
    assert parse_duration("90m") == 5400 and parse_duration("1d") == 86400
    assert parse_matchers("agent_id=tri*, severity=critical") == {
        "agent_id": "tri*",
        "severity": "critical",
    }
    with pytest.raises(ValueError, match="30m"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="label=glob"):
        parse_matchers("agent_id")


def test_a_line_chart_draws_each_series_and_breaks_at_gaps() -> None:
    xs = [0.0, 60.0, 120.0, 180.0]
    svg = line_chart(Plot("t", xs, [Series("a", [1, 2, None, 4]), Series("b", [1, 1, 1, 1])]))
    assert svg.count('data-series="a"') == 1 and svg.count("<circle") == 1  # 4 stands alone
    assert svg.count('data-series="b"') == 1 and 'data-points="7"' in svg
    assert "no data" in line_chart(Plot("t", xs, [Series("a", [None] * 4)]))


def test_labels_are_escaped_in_plots() -> None:
    svg = line_chart(Plot("<script>", [0.0], [Series("<b>", [1.0])], markers=[(0.0, "<i>")]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<b>" not in svg


def test_sparkline_and_waterfall() -> None:
    assert len(re.findall(r"[\d.]+,[\d.]+", sparkline([0, 5, 10]))) == 3
    svg = waterfall([
        {"offset_ms": 0, "latency_ms": 100, "label": "crm.lookup", "status": "ok"},
        {"offset_ms": 100, "latency_ms": 300, "label": "zendesk.update", "status": "error"},
    ])  # fmt: skip
    bars = re.findall(r'<rect class="call" data-status="(\w+)" x="([\d.]+)"', svg)
    assert [b[0] for b in bars] == ["ok", "error"] and float(bars[1][1]) > float(bars[0][1])


@pytest.mark.parametrize("module", ["session", "charts", "health", "actions", "ops", "history"])
def test_docstring_examples_hold(module: str) -> None:
    import doctest
    import importlib

    mod = importlib.import_module(f"fleetpulse.console.{module}")
    assert doctest.testmod(mod).failed == 0
