"""The processors' Prometheus exposition: names in base units, accepted by promtool."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from fleetpulse.processors.metrics.prom import ProcessorCollector, exposition, new_registry


def _snapshot(scope_type: str, key: str, name: str) -> dict[str, object]:
    return {
        "horizon_s": 300,
        "scope_type": scope_type,
        "dimensions": {key: name},
        "task_count": 5,
        "tool_calls": 3,
        "failure": 1,
        "timeout": 0,
        "cost_micros": 10,
        "failure_rate": 0.2,
        "tool_error_rate": 0.1,
        "latency_p99_ms": 120.0,
        "tool_denied": 0,
        "tool_short_circuited": 0,
        "tool_errors": 1,
    }


def _text() -> str:
    c = ProcessorCollector(50)
    c.observe(
        [_snapshot("agent", "agent_id", "a1"), _snapshot("integration", "integration", "crm")]
    )
    return exposition(new_registry(c)).decode()


def test_latency_is_exposed_in_seconds() -> None:
    text = _text()
    assert 'fleetpulse_integration_latency_p99_seconds_5m{integration="crm"} 0.12' in text
    assert "_ms" not in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_exposition() -> None:
    r = subprocess.run(
        ["promtool", "check", "metrics"], input=_text(), capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stdout + r.stderr
