"""One control-plane client, two ways to reach it: the same calls through `LocalGateway` (in
process) and `HttpGateway` (the real FastAPI app, over HTTP) give the same answers and the
same errors, on the real broker. And a process writes the control topic with one producer."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleetpulse.contract.config import ControlSettings
from fleetpulse.contract.errors import AccessDeniedError, ConfigError, ConflictError, NotFoundError
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.control.access import Caller
from fleetpulse.control.api import create_app
from fleetpulse.control.audit import AuditQuery, from_state
from fleetpulse.control.client import ControlClient
from fleetpulse.control.gateway import HttpGateway, LocalGateway
from fleetpulse.control.plane import ControlPlane
from fleetpulse.control.watcher import approval_alerts
from fleetpulse.sdk.alerts_state import AlertsView
from fleetpulse.sdk.governance_log import GovernanceLog
from fleetpulse.sdk.topic_follower import ControlFollower

pytestmark = pytest.mark.integration

ADMIN = Caller("local:test", "engineering")
# what differs between two runs of the same calls: ids, clocks, hashes of bundles that name
# different agents; everything else must be equal
VOLATILE = {
    "approval_id",
    "silence_id",
    "token",
    "token_id",
    "content_hash",
    "sequence",
    "since",
    "retry_at",
    "at_us",
    "since_us",
    "created_at_us",
    "requested_at_us",
    "expires_at_us",
    "decided_at_us",
}


@dataclass
class Pair:
    """The same principal's client, in process and over HTTP."""

    local: ControlClient
    http: ControlClient


@dataclass
class Stack:
    plane: ControlPlane
    log: GovernanceLog
    alerts: AlertsView
    engineer: Pair
    approver: Pair


@pytest.fixture
def stack(kafka, fresh_prefix, tmp_path) -> Iterator[Stack]:
    settings = ControlSettings(
        bootstrap_servers=kafka.bootstrap_servers, topic_prefix=fresh_prefix.prefix, home=tmp_path
    )
    log = GovernanceLog.open(settings, client_id="test-client-parity")
    control = ControlFollower(kafka.bootstrap_servers, fresh_prefix.control).start()
    control.wait_caught_up(15)
    alerts = AlertsView()
    plane = ControlPlane(
        settings, FleetPolicy(), log, control_view=control.view, alerts_view=alerts
    )

    def audit(q: AuditQuery) -> list[dict[str, Any]]:
        return log.read(lambda s: from_state(s, q))

    http = TestClient(create_app(plane, audit), raise_server_exceptions=False)

    def pair(role: str) -> Pair:
        _, issued = plane.add_principal(ADMIN, f"p-{role}", role)
        caller = plane.authenticate(issued.token)
        return Pair(
            LocalGateway(plane, caller, audit),
            HttpGateway("http://testserver", issued.token, http=http),
        )

    try:
        yield Stack(plane, log, alerts, pair("engineering"), pair("approver"))
    finally:
        plane.close()
        control.close()
        log.close()


def _json(data: Any) -> Any:
    """What the API would send: JSON, and nothing the local answer could carry beyond it."""
    return json.loads(json.dumps(data))


def _same_shape(data: Any, mine: str, theirs: str) -> Any:
    """``data`` with volatile values masked and the other run's names made this run's."""
    if isinstance(data, dict):
        return {k: "*" if k in VOLATILE else _same_shape(v, mine, theirs) for k, v in data.items()}
    if isinstance(data, list):
        return [_same_shape(v, mine, theirs) for v in data]
    if isinstance(data, str):
        return data.replace(theirs, mine)
    return data


def _writes(s: Stack, side: str, tag: str) -> list[tuple[str, Any]]:
    """Every write of the protocol, on targets of this run's own (``tag``)."""
    eng: ControlClient = getattr(s.engineer, side)
    approver: ControlClient = getattr(s.approver, side)
    agent, breaker, person = f"par-{tag}", f"integration:par-{tag}", f"par-{tag}-p"
    out: list[tuple[str, Any]] = []

    def do(name: str, call: Callable[[], Any]) -> Any:
        result = call()
        out.append((name, _json(result)))
        return result

    do("publish 1", lambda: eng.publish({"agent_id": agent, "prompt": "one"}, "first"))
    do("publish 2", lambda: eng.publish({"agent_id": agent, "prompt": "two"}, "second"))
    do("activate 1", lambda: eng.activate(agent, 1, "production", "first out"))
    do("activate 2", lambda: eng.activate(agent, 2, "production", "second out"))
    do("rollback", lambda: eng.rollback(agent, "v2 regressed"))
    do("pause", lambda: eng.set_paused(agent, True, "incident"))
    do("resume", lambda: eng.set_paused(agent, False, "over"))
    do("force open", lambda: eng.set_breaker(breaker, "force_open", "vendor down"))
    do("disable", lambda: eng.set_breaker(breaker, "disable", "noisy"))
    do("reset", lambda: eng.set_breaker(breaker, "reset", "back"))
    do("ack", lambda: eng.ack(f"failure_rate:{agent}", "on it"))
    silence = do("silence", lambda: eng.silence({"agent_id": agent}, 600, "deploy"))
    do("unsilence", lambda: eng.unsilence(silence["silence_id"], "deployed"))
    asked = do(
        "request approval",
        lambda: eng.request_approval(agent, "refund.issue", "refund $10", {"usd": 10}, 600),
    )
    do("approve", lambda: approver.decide(asked["approval_id"], True, "fine"))
    asked = do(
        "request approval 2",
        lambda: eng.request_approval(agent, "refund.issue", "refund $900", {"usd": 900}, None),
    )
    do("deny", lambda: approver.decide(asked["approval_id"], False, "too much"))
    do("add principal", lambda: eng.add_principal(person, "compliance", ""))
    do("set role", lambda: eng.set_role(person, "operations", "moved team"))
    do("revoke", lambda: eng.revoke(person, "left"))
    return out


def test_every_write_answers_the_same_in_process_and_over_http(stack: Stack) -> None:
    local = _writes(stack, "local", "l")
    over_http = _writes(stack, "http", "h")
    assert [name for name, _ in over_http] == [name for name, _ in local]
    for (name, mine), (_, theirs) in zip(local, over_http, strict=True):
        assert _same_shape(theirs, "par-l", "par-h") == _same_shape(mine, "par-l", "par-h"), name


def test_every_read_answers_the_same_in_process_and_over_http(stack: Stack) -> None:
    _writes(stack, "local", "r")  # something to read: versions, labels, approvals, audit...
    agent = "par-r"
    eng = stack.engineer
    approval_id = eng.local.approvals(None)[0]["approval_id"]
    # an alert to list: the API process's watcher pages for approvals left pending
    eng.local.request_approval(agent, "refund.issue", "waiting", {}, None)
    now = int(time.time() * 1_000_000)
    for alert in stack.log.read(lambda s: approval_alerts(s, set(), now, 0.0)):
        stack.alerts.apply(alert)
    reads: dict[str, Callable[[ControlClient], Any]] = {
        "whoami": lambda c: c.whoami(),
        "agents": lambda c: c.agents(),
        "history": lambda c: c.history(agent),
        "version": lambda c: c.version(agent, 1),
        "labels": lambda c: c.labels(agent),
        "diff": lambda c: c.diff(agent, 1, 2),
        "diff default": lambda c: c.diff(agent, None, None),
        "config": lambda c: c.config(agent),
        "pauses": lambda c: c.pauses(),
        "breakers": lambda c: c.breakers(),
        "alerts": lambda c: c.alerts(None),
        "firing alerts": lambda c: c.alerts("firing"),
        "silences": lambda c: c.silences(True),
        "approvals": lambda c: c.approvals(None),
        "decided approvals": lambda c: c.approvals("approved"),
        "approval": lambda c: c.approval(approval_id),
        "principals": lambda c: c.principals(),
        "audit": lambda c: c.audit(AuditQuery(agent_id=agent, limit=100)),
        "audit of a principal": lambda c: c.audit(AuditQuery(principal="p-engineering")),
    }
    for name, read in reads.items():
        mine = _json(read(eng.local))
        assert mine, f"{name}: nothing to compare"
        assert read(eng.http) == mine, name


def _raised(call: Callable[[], Any]) -> type[Exception]:
    try:
        call()
    except Exception as exc:
        return type(exc)
    raise AssertionError("no error")


@pytest.mark.parametrize(
    ("what", "call", "error"),
    [
        ("unknown version", lambda c: c.version("nobody", 3), NotFoundError),
        ("unknown approval", lambda c: c.approval("ab" * 16), NotFoundError),
        ("revoke nobody", lambda c: c.revoke("nobody"), NotFoundError),
        ("bad bundle", lambda c: c.publish({"agent_id": "x", "model": 3}, "m"), ConfigError),
        ("no reason", lambda c: c.set_paused("x", True, ""), ValueError),
        ("no such version", lambda c: c.activate("x", 9, "production", ""), NotFoundError),
        ("taken name", lambda c: c.add_principal("p-approver", "agent", "x"), ConflictError),
    ],
)  # fmt: skip
def test_the_same_errors_in_process_and_over_http(
    stack: Stack, what: str, call: Callable[[ControlClient], Any], error: type[Exception]
) -> None:
    local = _raised(lambda: call(stack.engineer.local))
    assert issubclass(local, error), (what, local)
    assert _raised(lambda: call(stack.engineer.http)) is local, what


def test_a_requester_may_not_decide_their_own_approval_either_way(stack: Stack) -> None:
    refused = []
    for client in (stack.engineer.local, stack.engineer.http):
        asked = client.request_approval("par-self", "x.y", "mine", {}, None)
        refused.append(_raised(lambda a=asked, c=client: c.decide(a["approval_id"], True, "")))
        assert client.approval(asked["approval_id"])["status"] == "pending"
    assert refused[0] is refused[1]
    assert issubclass(refused[0], AccessDeniedError | ConflictError)


def test_one_control_topic_producer_per_process(stack: Stack) -> None:
    eng = stack.engineer
    for i in range(3):
        for client in (eng.local, eng.http):
            client.set_breaker(f"integration:one-{uuid.uuid4().hex[:6]}", "force_open", f"#{i}")
            client.set_paused(f"agent-{i}", True, "one writer")
    assert stack.plane.control_writer.producers_made == 1
    opened = {b["id"] for b in eng.http.breakers() if b["state"] == "FORCED_OPEN"}
    assert len(opened) == 6
