"""The control API on the real broker: every route x every role gets its exact status, errors
are JSON with a message and never a traceback, tokens are never logged or stored in clear."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from fleetpulse.contract.bundles import parse_bundle
from fleetpulse.contract.config import ControlSettings
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.control.access import ROLES, Caller
from fleetpulse.control.api import create_app
from fleetpulse.control.audit import from_state
from fleetpulse.control.plane import ControlPlane
from fleetpulse.sdk.alerts_state import AlertsView
from fleetpulse.sdk.governance_log import GovernanceLog
from fleetpulse.sdk.topic_follower import ControlFollower

from .helpers import consumer_from_start

pytestmark = pytest.mark.integration

ADMIN = Caller("local:test", "engineering")
AGENT = "triage"


@dataclass
class Api:
    client: TestClient
    plane: ControlPlane
    log: GovernanceLog
    tokens: dict[str, str]  # role -> token
    bootstrap: str
    topic: str

    def call(self, method: str, path: str, role: str | None, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return self.client.request(method, path, headers=headers, json=body)

    def bundle(self, **extra: Any) -> dict[str, Any]:
        data = {"agent_id": AGENT, "prompt": f"p-{uuid.uuid4().hex}"} | extra
        return parse_bundle(data).canonical()

    def publish(self) -> int:
        return self.plane.publish(ADMIN, parse_bundle(self.bundle()), "setup").version


@pytest.fixture
def api(kafka, fresh_prefix, tmp_path) -> Iterator[Api]:
    settings = ControlSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        topic_prefix=fresh_prefix.prefix,
        home=tmp_path,
    )
    log = GovernanceLog.open(settings, client_id="test-api")
    control = ControlFollower(kafka.bootstrap_servers, fresh_prefix.control).start()
    control.wait_caught_up(15)
    plane = ControlPlane(
        settings, FleetPolicy(), log, control_view=control.view, alerts_view=AlertsView()
    )

    def audit(q: Any) -> list[dict[str, Any]]:
        return log.read(lambda s: from_state(s, q))

    tokens = {}
    for role in ROLES:
        _, issued = plane.add_principal(
            ADMIN, f"p-{role}", role, agent_id=AGENT if role == "agent" else ""
        )
        tokens[role] = issued.token
    a = Api(
        TestClient(create_app(plane, audit), raise_server_exceptions=False),
        plane,
        log,
        tokens,
        kafka.bootstrap_servers,
        fresh_prefix.governance,
    )
    a.publish()
    try:
        yield a
    finally:
        control.close()
        log.close()


# -- the matrix -------------------------------------------------------------------------------


@dataclass
class Route:
    method: str
    path: str  # as declared
    allowed: frozenset[str]
    status: int = 200
    # builds (concrete path, body) for one call; may create what the call needs
    prepare: Callable[[Api, str], tuple[str, Any]] | None = None


def _approval(api: Api, role: str) -> tuple[str, Any]:
    a = api.plane.request_approval(ADMIN, AGENT, "zendesk.close", summary="close #42")
    return a.approval_id, None


def _silence(api: Api, role: str) -> tuple[str, Any]:
    s = api.plane.silence(ADMIN, {"agent_id": "x"}, duration_s=60, reason="r")
    return f"/v1/silences/{s.silence_id}", None


def _fresh_principal(api: Api, role: str) -> str:
    name = f"tmp-{uuid.uuid4().hex[:8]}"
    api.plane.add_principal(ADMIN, name, "compliance")
    return name


def _rollback(api: Api, role: str) -> tuple[str, Any]:
    for n in (api.publish(), api.publish()):
        api.plane.activate(ADMIN, AGENT, n)  # production history: something to go back to
    return f"/v1/agents/{AGENT}/rollback", {}


def _config(api: Api, role: str) -> tuple[str, Any]:
    api.plane.activate(ADMIN, AGENT, 1)
    return f"/v1/agents/{AGENT}/config", None


ALL = frozenset(ROLES)
VIEW = frozenset({"engineering", "operations", "compliance", "approver"})
OPS = frozenset({"engineering", "operations"})
ENG = frozenset({"engineering"})
BREAKER = "integration:crm"

ROUTES = [
    Route("GET", "/v1/whoami", ALL),
    Route("GET", "/v1/agents", VIEW),
    Route("POST", "/v1/agents", ENG, 201,
          lambda a, r: ("/v1/agents", {"bundle": a.bundle(), "message": "m"})),
    Route("GET", "/v1/agents/{agent_id}/versions", VIEW),
    Route("GET", "/v1/agents/{agent_id}/versions/{version}", VIEW,
          prepare=lambda a, r: (f"/v1/agents/{AGENT}/versions/1", None)),
    Route("GET", "/v1/agents/{agent_id}/labels", VIEW),
    Route("GET", "/v1/agents/{agent_id}/diff", VIEW),
    Route("GET", "/v1/agents/{agent_id}/config", VIEW | {"agent"},
          prepare=_config),
    Route("POST", "/v1/agents/{agent_id}/activate", ENG,
          prepare=lambda a, r: (f"/v1/agents/{AGENT}/activate", {"version": 1})),
    Route("POST", "/v1/agents/{agent_id}/rollback", ENG,
          prepare=_rollback),
    Route("POST", "/v1/agents/{agent_id}/pause", OPS,
          prepare=lambda a, r: (f"/v1/agents/{AGENT}/pause", {"reason": "test"})),
    Route("POST", "/v1/agents/{agent_id}/resume", OPS,
          prepare=lambda a, r: (f"/v1/agents/{AGENT}/resume", {"reason": "test"})),
    Route("GET", "/v1/pauses", VIEW),
    Route("GET", "/v1/breakers", VIEW | {"agent"}),
    Route("POST", "/v1/breakers/{breaker_id}/force-open", OPS,
          prepare=lambda a, r: (f"/v1/breakers/{BREAKER}/force-open", {"reason": "t"})),
    Route("POST", "/v1/breakers/{breaker_id}/disable", OPS,
          prepare=lambda a, r: (f"/v1/breakers/{BREAKER}/disable", {"reason": "t"})),
    Route("POST", "/v1/breakers/{breaker_id}/reset", OPS,
          prepare=lambda a, r: (f"/v1/breakers/{BREAKER}/reset", {"reason": "t"})),
    Route("GET", "/v1/alerts", VIEW - {"approver"}),
    Route("POST", "/v1/alerts/{dedup_key}/ack", OPS,
          prepare=lambda a, r: ("/v1/alerts/failure_rate:triage/ack", {"reason": "on it"})),
    Route("GET", "/v1/silences", VIEW - {"approver"}),
    Route("POST", "/v1/silences", OPS, 201,
          lambda a, r: ("/v1/silences", {"matchers": {"agent_id": "t*"}, "duration_s": 60,
                                         "reason": "deploy"})),
    Route("DELETE", "/v1/silences/{silence_id}", OPS, prepare=_silence),
    Route("GET", "/v1/approvals", VIEW),
    Route("POST", "/v1/approvals", ENG | {"agent"}, 201,
          lambda a, r: ("/v1/approvals", {"agent_id": AGENT, "action": "x.y", "summary": "s"})),
    Route("GET", "/v1/approvals/{approval_id}", VIEW,
          prepare=lambda a, r: (f"/v1/approvals/{_approval(a, r)[0]}", None)),
    Route("POST", "/v1/approvals/{approval_id}/approve", ENG | {"approver"},
          prepare=lambda a, r: (f"/v1/approvals/{_approval(a, r)[0]}/approve", {})),
    Route("POST", "/v1/approvals/{approval_id}/deny", ENG | {"approver"},
          prepare=lambda a, r: (f"/v1/approvals/{_approval(a, r)[0]}/deny", {"reason": "no"})),
    Route("GET", "/v1/principals", ENG),
    Route("POST", "/v1/principals", ENG, 201,
          lambda a, r: ("/v1/principals", {"name": f"n-{uuid.uuid4().hex[:8]}", "role": "agent",
                                           "agent_id": "x"})),
    Route("POST", "/v1/principals/{name}/role", ENG,
          prepare=lambda a, r: (f"/v1/principals/{_fresh_principal(a, r)}/role",
                                {"role": "operations"})),
    Route("DELETE", "/v1/principals/{name}", ENG,
          prepare=lambda a, r: (f"/v1/principals/{_fresh_principal(a, r)}", None)),
    Route("GET", "/v1/audit", VIEW - {"approver"}),
]  # fmt: skip


def _default(route: Route) -> tuple[str, Any]:
    return route.path.replace("{agent_id}", AGENT), None


def test_every_route_is_in_the_matrix(api: Api) -> None:
    declared = {
        (m, r.path) for r in api.client.app.routes if isinstance(r, APIRoute) for m in r.methods
    }
    assert declared == {(r.method, r.path) for r in ROUTES}


def test_role_by_route_matrix(api: Api) -> None:
    """Each role gets the route's success status where it is allowed and 403 elsewhere; no
    token and a bad token get 401 (before anything else is looked at)."""
    failures = []
    for route in ROUTES:
        for role in [*ROLES, None, "bad"]:
            path, body = (route.prepare or (lambda a, r, rt=route: _default(rt)))(api, role)
            if role == "bad":
                r = api.client.request(
                    route.method, path, json=body, headers={"Authorization": "Bearer fp_x_y"}
                )
                expected = 401
            else:
                r = api.call(route.method, path, role, body)
                expected = 401 if role is None else (route.status if role in route.allowed else 403)
            if r.status_code != expected:
                failures.append(f"{route.method} {path} as {role}: {r.status_code} {r.text}")
            if r.status_code >= 400:
                assert set(r.json()) == {"error", "message"}, r.text
    assert not failures, "\n".join(failures)


def test_an_agent_reads_only_its_own_config_and_requests_for_itself(api: Api) -> None:
    api.plane.activate(ADMIN, AGENT, 1)
    other = parse_bundle({"agent_id": "billing"})
    api.plane.publish(ADMIN, other, "m")
    api.plane.activate(ADMIN, "billing", 1)
    assert api.call("GET", f"/v1/agents/{AGENT}/config", "agent").status_code == 200
    r = api.call("GET", "/v1/agents/billing/config", "agent")
    assert r.status_code == 403 and "another agent" in r.json()["message"]
    body = {"agent_id": "billing", "action": "x.y", "summary": "s"}
    assert api.call("POST", "/v1/approvals", "agent", body).status_code == 403


BAD_BUNDLE = {"agent_id": "a", "tools": [{"integration": "crm", "access": "delete"}]}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("POST", "/v1/agents/triage/activate", {"version": "x"}, 422, "version"),
        ("POST", "/v1/agents", {"bundle": BAD_BUNDLE, "message": "m"}, 422, "tools.0.access"),
        ("POST", "/v1/principals", {"name": "zed", "role": "admin"}, 422, "role: Input should be"),
        ("POST", "/v1/agents/triage/pause", {}, 422, "reason"),
        ("GET", "/v1/agents/nobody/versions", None, 404, "nobody"),
        ("GET", "/v1/agents/triage/versions/99", None, 404, "not 99"),
        ("POST", "/v1/agents/triage/rollback", {}, 409, "no earlier production version"),
        ("POST", "/v1/approvals/0123456789abcdef/approve", {}, 404, "no approval"),
        ("POST", "/v1/approvals/nope/approve", {}, 422, "approval_id"),
        ("GET", "/v1/audit?since=yesterday", None, 422, "since"),
    ],
)
def test_bad_requests_get_a_message(api: Api, method, path, body, status, says) -> None:
    r = api.call(method, path, "engineering", body)
    assert r.status_code == status, r.text
    assert r.json()["error"] and says in r.json()["message"]


def test_self_approval_is_refused(api: Api) -> None:
    body = {"agent_id": AGENT, "action": "stripe.refund", "summary": "refund 42"}
    created = api.call("POST", "/v1/approvals", "engineering", body).json()
    r = api.call("POST", f"/v1/approvals/{created['approval_id']}/approve", "engineering", {})
    assert r.status_code == 403 and "own request" in r.json()["message"]
    ok = api.call("POST", f"/v1/approvals/{created['approval_id']}/approve", "approver", {})
    assert ok.status_code == 200 and ok.json()["status"] == "approved"
    assert ok.json()["decided_by"] == "p-approver"


def test_revoked_tokens_stop_working_at_once(api: Api) -> None:
    assert api.call("GET", "/v1/whoami", "operations").status_code == 200
    assert api.call("DELETE", "/v1/principals/p-operations", "engineering").status_code == 200
    r = api.call("GET", "/v1/whoami", "operations")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_an_internal_error_is_a_500_without_a_traceback(api: Api, monkeypatch) -> None:
    def boom(caller: Any) -> Any:
        raise RuntimeError("secret internals at /srv/app.py line 3")

    monkeypatch.setattr(api.plane, "agents", boom)
    r = api.call("GET", "/v1/agents", "engineering")
    assert r.status_code == 500
    assert r.json()["error"] == "internal" and "ref" in r.json()["message"]
    assert "Traceback" not in r.text and "secret internals" not in r.text


def test_denied_actions_are_audited(api: Api) -> None:
    api.call("POST", "/v1/agents/triage/pause", "compliance", {"reason": "x"})
    rows = api.call("GET", "/v1/audit?principal=p-compliance", "compliance").json()
    assert [(r["action"], r["reason"]) for r in rows] == [
        ("access_denied", "agents.pause refused to role compliance")
    ]


def test_tokens_are_never_logged_nor_stored_in_clear(api: Api, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    r = api.call("POST", "/v1/principals", "engineering", {"name": "sam", "role": "operations"})
    token = r.json()["token"]
    assert (
        api.client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"}).json()["name"]
        == "sam"
    )
    api.client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}x"})  # a bad one
    everything = [*api.tokens.values(), token]
    secrets = [t.split("_", 2)[2] for t in everything]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not [s for s in secrets if s in logged]
    # the governance topic holds the salted hash only
    consumer = consumer_from_start(api.bootstrap, api.topic)
    raw = []
    try:
        while batch := consumer.consume(1000, timeout=2):
            raw += [(m.key() or b"") + (m.value() or b"") for m in batch]
    finally:
        consumer.close()
    blob = b"\n".join(raw)
    assert raw and not [s for s in secrets if s.encode() in blob]
    sam = api.log.read(lambda s: s.principals["sam"])
    assert (
        sam.token_hash
        == hashlib.sha256(bytes.fromhex(sam.salt) + token.split("_", 2)[2].encode()).hexdigest()
    )
    listed = api.call("GET", "/v1/principals", "engineering").json()
    assert all("token_hash" not in p and "salt" not in p for p in listed)
    assert os.environ.get("FLEETPULSE_TOKEN") not in secrets


def test_an_approval_pending_too_long_pages_once_and_resolves(api: Api) -> None:
    from fleetpulse.contract.clock import ManualClock
    from fleetpulse.contract.events import AvroCodec
    from fleetpulse.control.watcher import ApprovalWatcher

    policy = FleetPolicy.model_validate({"governance": {"approval_alert_after_s": 60}})
    view = AlertsView()
    a = api.plane.request_approval(ADMIN, AGENT, "stripe.refund", summary="refund 42")
    clock = ManualClock(a.requested_at_us + 30 * 10**6)
    watcher = ApprovalWatcher(api.plane.settings, policy, api.log, view, clock=clock)
    assert watcher.check() == 0  # not overdue yet
    clock.advance(s=31)
    assert watcher.check() == 1
    assert watcher.check() == 0  # firing already: no second page
    approver = Caller("p-approver", "approver")
    api.plane.decide(approver, a.approval_id, True)
    assert watcher.check() == 1
    watcher.close()

    consumer = consumer_from_start(api.bootstrap, api.plane.settings.topics.alerts)
    try:
        msgs = [m for m in consumer.consume(100, timeout=5) if m.error() is None]
    finally:
        consumer.close()
    alerts = [AvroCodec().decode(m.value(), "Alert") for m in msgs]
    key = f"approval_pending:{a.approval_id}"
    assert [(x["dedup_key"], x["status"]) for x in alerts] == [(key, "firing"), (key, "resolved")]
    assert "fleetpulse approvals approve" in alerts[0]["runbook"]
