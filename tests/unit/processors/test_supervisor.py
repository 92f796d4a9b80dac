"""``processors run`` starts every alert worker of ``FLEETPULSE_ALERTS_WORKERS``, each told its
index, beside one breaker stage."""

from __future__ import annotations

from typing import Any

import pytest

from fleetpulse.processors import supervisor


def test_spawn_side_starts_each_alert_worker_with_its_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[tuple[str, dict[str, str] | None]] = []

    def fake(stage: str, *, env: dict[str, str] | None = None, **_: Any) -> Any:
        started.append((stage, env))
        return object()

    monkeypatch.setattr(supervisor, "spawn", fake)
    procs = supervisor.spawn_side(("breakers", "alerts"), alerts_workers=3)
    assert len(procs) == 4
    assert started == [
        ("breakers", None),
        ("alerts", {"FLEETPULSE_ALERTS_INDEX": "0"}),
        ("alerts", {"FLEETPULSE_ALERTS_INDEX": "1"}),
        ("alerts", {"FLEETPULSE_ALERTS_INDEX": "2"}),
    ]
