"""The newest lifecycle event of every alert on ``fleetpulse.alerts`` (what ``alerts list``
and ``GET /v1/alerts`` show), joined with acknowledgements from the governance log."""

from __future__ import annotations

import threading
from typing import Any

from fleetpulse.sdk.topic_follower import TopicFollower, catch_up


class AlertsView:
    """dedup key -> the alert's newest event (by ``emitted_at``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, dict[str, Any]] = {}

    def apply(self, alert: dict[str, Any]) -> bool:
        with self._lock:
            held = self._latest.get(alert["dedup_key"])
            if held is not None and held["emitted_at"] > alert["emitted_at"]:
                return False
            self._latest[alert["dedup_key"]] = alert
            return True

    def alerts(self, status: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            found = [a for a in self._latest.values() if status in (None, a["status"])]
        return sorted(found, key=lambda a: a["started_at"])


def follow_alerts(
    bootstrap: str, topic: str, *, background: bool
) -> tuple[AlertsView, TopicFollower]:
    view = AlertsView()
    follower = TopicFollower(bootstrap, topic, "Alert", view.apply, client_id="fleetpulse-alerts")
    follower.start(background=background)
    return view, follower


def read_alerts(bootstrap: str, topic: str, *, timeout: float = 15.0) -> AlertsView:
    view, follower = follow_alerts(bootstrap, topic, background=False)
    try:
        catch_up(follower, timeout)
        return view
    finally:
        follower.close()
