"""One seeded stack for the console's tests: the control plane on the real broker (topics of
its own), every role's principal and token, two agents with versions, and ClickHouse
(embedded chDB) holding a few hours of synthetic history; the API app with the console
mounted at /ui, as ``fleetpulse api run`` serves it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from fleetpulse.console import Console, mount_console
from fleetpulse.console.synthetic import Seed, seed
from fleetpulse.contract.bundles import parse_bundle
from fleetpulse.contract.config import ControlSettings
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.contract.topics import Topics
from fleetpulse.control.access import ROLES, Caller
from fleetpulse.control.api import create_app
from fleetpulse.control.audit import from_state
from fleetpulse.control.plane import ControlPlane
from fleetpulse.devstack import ensure_topics
from fleetpulse.sdk.alerts_state import AlertsView
from fleetpulse.sdk.governance_log import GovernanceLog
from fleetpulse.sdk.topic_follower import ControlFollower
from fleetpulse.sink.backend import ChdbBackend
from fleetpulse.sink.migrate import migrate
from fleetpulse.sink.query import ReadOnly, Table

ADMIN = Caller("local:test", "engineering")
AGENTS = ("triage", "billing", "refunds")
PEOPLE = ("engineering", "operations", "compliance", "approver")
POLICY = FleetPolicy.model_validate(
    {"alerts": {"teams": {"support": {"agents": ["triage", "refunds"], "daily_usd": 40}},
                "budgets": {"billing": {"daily_usd": 5}}}}
)  # fmt: skip


class Shared:
    """The module's one chDB session as the console's analyst: read-only, never closed by
    a page (the fixture closes it)."""

    def __init__(self, backend: ChdbBackend) -> None:
        self._ro = ReadOnly(backend)

    def table(self, sql: str) -> Table:
        return self._ro.table(sql)

    def close(self) -> None:
        pass


@dataclass
class ConsoleStack:
    app: FastAPI
    console: Console
    plane: ControlPlane
    log: GovernanceLog
    alerts: AlertsView
    settings: ControlSettings
    topics: Topics
    bootstrap: str
    tokens: dict[str, str]  # role -> token
    now: datetime

    def name(self, role: str) -> str:
        return f"p-{role}"

    def client(self, role: str | None = None) -> TestClient:
        """A browser-like client, signed in as ``role`` (None: not signed in)."""
        c = TestClient(self.app, raise_server_exceptions=False, follow_redirects=False)
        if role is not None:
            r = c.post("/ui/login", data={"token": self.tokens[role], "next": "/ui/"})
            assert r.status_code == 303, r.text
        return c

    def audit_rows(self, principal: str) -> list[dict[str, Any]]:
        self.log.refresh(0)
        return self.log.read(lambda s: [e for e in s.audit if e["actor"] == principal])

    def fire(self, agent_id: str, kind: str = "failure_rate", **extra: Any) -> str:
        """A firing alert on ``agent_id``, as the alerts topic would bring it."""
        now_us = int(datetime.now(UTC).timestamp() * 1e6)
        key = f"{kind}:{agent_id}:{uuid.uuid4().hex[:6]}"
        self.alerts.apply(
            {"dedup_key": key, "rule": f"agent-{kind}", "kind": kind, "status": "firing",
             "severity": "critical", "scope_type": "agent", "scope_id": agent_id, "value": 0.6,
             "threshold": 0.2, "window_s": 300, "summary": f"{agent_id} fails 60% of tasks",
             "description": "", "runbook": f"fleetpulse report agent {agent_id}",
             "runbook_url": "", "labels": {"agent_id": agent_id} | extra, "root_cause": None,
             "started_at": now_us, "ended_at": None, "emitted_at": now_us}
        )  # fmt: skip
        return key


def csrf_of(html: str) -> str:
    m = re.search(r'<meta name="csrf" content="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


@contextmanager
def console_stack(bootstrap: str, home: Path, events: int = 20_000) -> Iterator[ConsoleStack]:
    topics = Topics(f"t{uuid.uuid4().hex[:10]}.")
    ensure_topics(bootstrap, topics)
    settings = ControlSettings(bootstrap_servers=bootstrap, topic_prefix=topics.prefix, home=home)
    log = GovernanceLog.open(settings, client_id="test-console")
    control = ControlFollower(bootstrap, topics.control).start()
    control.wait_caught_up(15)
    alerts = AlertsView()
    plane = ControlPlane(settings, POLICY, log, control_view=control.view, alerts_view=alerts)
    tokens = {}
    for role in ROLES:
        _, issued = plane.add_principal(
            ADMIN, f"p-{role}", role, agent_id="triage" if role == "agent" else ""
        )
        tokens[role] = issued.token
    for agent in AGENTS:
        for n in (1, 2):
            bundle = {"agent_id": agent, "role": "support", "prompt": f"{agent} prompt v{n}"}
            if agent == "billing":
                bundle["budget"] = {"daily_usd": 3}
            plane.publish(ADMIN, parse_bundle(bundle), f"{agent} v{n}")
            plane.activate(ADMIN, agent, n)
    backend = ChdbBackend(str(home / "ch"))
    migrate(backend)
    now = datetime.now(UTC)
    seed(backend, Seed(AGENTS, events, now, 3 * 3600))

    def audit(q: Any) -> list[dict[str, Any]]:
        log.refresh(0)
        return log.read(lambda s: from_state(s, q))

    app = create_app(plane, audit)
    shared = Shared(backend)
    console = mount_console(app, plane, audit, lambda: shared)
    try:
        yield ConsoleStack(
            app, console, plane, log, alerts, settings, topics, bootstrap, tokens, now
        )
    finally:
        backend.close()
        control.close()
        log.close()
