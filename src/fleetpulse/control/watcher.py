"""The watcher that pages on approvals left pending too long (run by ``fleetpulse api run``,
which is assembled in ``console/server.py``)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import Producer

from fleetpulse.contract.clock import Clock, SystemClock
from fleetpulse.contract.config import ControlSettings
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.governance import Approval, GovernanceState
from fleetpulse.contract.kafka_config import producer_config
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.sdk.alerts_state import AlertsView
from fleetpulse.sdk.governance_log import GovernanceLog

logger = logging.getLogger(__name__)


# -- approvals pending too long ---------------------------------------------------------------


def approval_alerts(
    state: GovernanceState, firing: set[str], now_us: int, after_s: float
) -> list[dict[str, Any]]:
    """Alert events to emit: firing for requests pending longer than ``after_s`` that are not
    firing yet, resolved for firing ones that were decided or expired. Pure."""
    out = []
    for a in state.approvals.values():
        key = f"approval_pending:{a.approval_id}"
        overdue = a.status == "pending" and now_us - a.requested_at_us > after_s * 1e6
        if overdue and key not in firing:
            out.append(_alert(a, key, "firing", now_us, after_s))
        elif a.status != "pending" and key in firing:
            out.append(_alert(a, key, "resolved", now_us, after_s))
    return out


def _alert(a: Approval, key: str, status: str, now_us: int, after_s: float) -> dict[str, Any]:
    return {
        "dedup_key": key,
        "rule": "approval_pending",
        "kind": "approval_pending",
        "status": status,
        "severity": "warning",
        "scope_type": "agent",
        "scope_id": a.agent_id,
        "value": (now_us - a.requested_at_us) / 1e6,
        "threshold": after_s,
        "window_s": 0,
        "summary": f"{a.agent_id} waits for approval of {a.action}: {a.summary}",
        "description": f"approval {a.approval_id} requested by {a.requested_by}",
        "runbook": f"fleetpulse approvals approve {a.approval_id}  (or deny --reason ...)",
        "runbook_url": "",
        "labels": {"agent_id": a.agent_id, "approval_id": a.approval_id},
        "root_cause": None,
        "started_at": a.requested_at_us,
        "ended_at": now_us if status == "resolved" else None,
        "emitted_at": now_us,
    }


class ApprovalWatcher:
    """Every few seconds, page on approvals pending too long and resolve them once decided."""

    def __init__(
        self,
        settings: ControlSettings,
        policy: FleetPolicy,
        log: GovernanceLog,
        alerts: AlertsView,
        *,
        clock: Clock | None = None,
        every_s: float = 2.0,
    ) -> None:
        self.topic = settings.topics.alerts
        self.after_s = policy.governance.approval_alert_after_s
        self.log, self.alerts, self.every_s = log, alerts, every_s
        self.clock = clock or SystemClock()
        self._encode = AvroCodec(registry_url=settings.schema_registry_url).encoder(
            "Alert", self.topic
        )
        self._producer = Producer(
            producer_config(settings.resolved_bootstrap(), client_id="fleetpulse-api-approvals")
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="approval-watcher", daemon=True)

    def start(self) -> ApprovalWatcher:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._producer.flush(5)

    def check(self) -> int:
        firing = {
            a["dedup_key"] for a in self.alerts.alerts("firing") if a["rule"] == "approval_pending"
        }
        now = self.clock.time_us()
        out = self.log.read(lambda s: approval_alerts(s, firing, now, self.after_s))
        for alert in out:
            self._producer.produce(self.topic, self._encode(alert), alert["dedup_key"].encode())
            self.alerts.apply(alert)  # do not send it again before it is read back
        self._producer.flush(10)
        return len(out)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.check()
            except Exception:
                logger.exception("approval watcher failed; retrying")
