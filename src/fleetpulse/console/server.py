"""``fleetpulse api run``: the control API process, with the console at ``/ui/``.

The process follows three topics live (governance, control, alerts), so reads are answered
from memory and a write returns once the log has folded it. It sits on top of the layers: the
control plane and its API (``control/``), the console (this package), and the analysts'
read-only path into ClickHouse (``sink/query.py``) for audit answers and history.
"""

from __future__ import annotations

import logging

import uvicorn

from fleetpulse.console.app import clickhouse_history
from fleetpulse.console.mount import mount_console
from fleetpulse.contract.config import ControlSettings
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.control.api import create_app
from fleetpulse.control.audit import audit_source
from fleetpulse.control.plane import ControlPlane
from fleetpulse.control.watcher import ApprovalWatcher
from fleetpulse.sdk.alerts_state import follow_alerts
from fleetpulse.sdk.governance_log import GovernanceLog
from fleetpulse.sdk.topic_follower import ControlFollower
from fleetpulse.sink.query import running_analyst

logger = logging.getLogger(__name__)


def run_api(settings: ControlSettings, policy: FleetPolicy) -> None:
    """Serve the control API and the console until interrupted."""
    bootstrap = settings.resolved_bootstrap()
    log = GovernanceLog.open(settings, client_id="fleetpulse-api")
    control = ControlFollower(
        bootstrap, settings.topics.control, client_id="fleetpulse-api"
    ).start()
    control.wait_caught_up(15)
    alerts_view, alerts_follower = follow_alerts(bootstrap, settings.topics.alerts, background=True)
    alerts_follower.wait_caught_up(15)
    plane = ControlPlane(settings, policy, log, control_view=control.view, alerts_view=alerts_view)
    watcher = ApprovalWatcher(settings, policy, log, alerts_view).start()
    audit = audit_source(log, settings.clickhouse_database, lambda: running_analyst(settings))
    app = create_app(plane, audit)
    history = clickhouse_history(settings)
    mount_console(app, plane, audit, history, database=settings.clickhouse_database)
    logger.info("control API on http://%s:%d (docs at /docs)", settings.api_host, settings.api_port)
    try:
        uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning")
    finally:
        watcher.close()
        plane.close()
        alerts_follower.close()
        control.close()
        log.close()
