from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetpulse import ConfigError
from fleetpulse.sdk import PriceTable

TABLE = PriceTable.from_dict(
    {
        "version": "t1",
        "models": {
            "gpt-4o": {
                "provider": "openai",
                "input": "2.50",
                "output": "10.00",
                "cached_input": "1.25",
            },
            "gpt-4o-mini": {"provider": "openai", "input": "0.15", "output": "0.60"},
        },
    }
)


@pytest.mark.parametrize(
    "model, i, o, c, expected",
    [
        ("gpt-4o", 1000, 200, 0, 4500),
        ("gpt-4o", 1000, 200, 400, 600 * 2.5 + 400 * 1.25 + 2000),
        ("gpt-4o", 0, 0, 0, 0),
        ("gpt-4o-mini", 1, 0, 0, 0),  # 0.15 micro-USD rounds half-even to 0
        ("gpt-4o-mini", 10, 0, 0, 2),  # 1.5 -> 2
        ("gpt-4o-mini", 30, 0, 0, 4),  # 4.5 -> 4 (half-even, no float drift)
        ("gpt-4o-mini", 1000, 0, 1000, 150),  # no cached price: billed at the input price
        ("gpt-4o-2024-08-06", 1000, 0, 0, 2500),  # dated snapshot prices as its family
        ("gpt-4o-mini-2024-07-18", 1000, 0, 0, 150),  # longest prefix wins
    ],
)
def test_cost_micros(model: str, i: int, o: int, c: int, expected: float) -> None:
    assert TABLE.cost_micros(model, input_tokens=i, output_tokens=o, cached_tokens=c) == expected


def test_unknown_model_has_no_price() -> None:
    assert TABLE.cost_micros("llama-local", input_tokens=10) is None
    assert TABLE.lookup("llama-local") is None


def test_shipped_table_is_versioned_and_complete() -> None:
    table = PriceTable.default()
    assert table.version
    assert {"gpt-4o", "claude-sonnet-4", "gemini-2.5-flash"} <= set(table.models)


def test_override_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps({"version": "acme-2026", "models": {"m": {"input": 1, "output": 2}}})
    )
    table = PriceTable.load(path)
    assert table.version == "acme-2026"
    assert table.cost_micros("m", input_tokens=10, output_tokens=10) == 30


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"models": {}}), "'version'"),
        (json.dumps({"version": "x", "models": {"m": {"input": "abc", "output": 1}}}), "models.m"),
        (json.dumps({"version": "x", "models": {"m": {"input": -1, "output": 1}}}), "models.m"),
    ],
)
def test_bad_price_files_name_the_problem(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        PriceTable.load(path)


def test_missing_price_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FLEETPULSE_PRICE_TABLE"):
        PriceTable.load(tmp_path / "nope.json")
