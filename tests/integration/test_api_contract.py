"""The control API's contract under inputs nobody wrote by hand: schemathesis generates
requests for every operation from the OpenAPI document; none may answer 5xx, and every answer
must be one the document lists, in the shape it gives. Then the order of checks on bodies that
do not parse: 401, then 403, then 400/422, and always ``{error, message}``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

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

pytestmark = pytest.mark.integration

ADMIN = Caller("local:test", "engineering")
AGENT = "triage"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Contract:
    app: Any
    client: TestClient
    tokens: dict[str, str]
    plane: ControlPlane


@pytest.fixture(scope="module")
def contract(kafka, tmp_path_factory) -> Iterator[Contract]:
    topics = Topics(f"t{uuid.uuid4().hex[:10]}.")
    ensure_topics(kafka.bootstrap_servers, topics)
    settings = ControlSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        topic_prefix=topics.prefix,
        home=tmp_path_factory.mktemp("contract"),
    )
    log = GovernanceLog.open(settings, client_id="test-api-contract")
    control = ControlFollower(kafka.bootstrap_servers, topics.control).start()
    control.wait_caught_up(15)
    plane = ControlPlane(
        settings, FleetPolicy(), log, control_view=control.view, alerts_view=AlertsView()
    )
    tokens = {}
    for role in ROLES:
        _, issued = plane.add_principal(
            ADMIN, f"p-{role}", role, agent_id=AGENT if role == "agent" else ""
        )
        tokens[role] = issued.token
    plane.publish(ADMIN, parse_bundle({"agent_id": AGENT, "prompt": "p"}), "setup")
    app = create_app(plane, lambda q: log.read(lambda s: from_state(s, q)))
    try:
        yield Contract(app, TestClient(app, raise_server_exceptions=False), tokens, plane)
    finally:
        control.close()
        log.close()


def _fuzz(operation: Any, mode: GenerationMode, examples: int, auth: dict[str, str]) -> None:
    try:
        strategy = operation.as_strategy(generation_mode=mode)
    except Exception:  # schemathesis cannot make negative data for every operation
        return

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=auth, checks=CHECKS)

    run()


def test_no_operation_answers_5xx_or_off_its_document(contract: Contract) -> None:
    """Every operation, as engineering (who may do everything): whatever schemathesis sends,
    valid or not, the answer is one the document lists, never 5xx, in the documented shape."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", contract.app)
    auth = {"Authorization": f"Bearer {contract.tokens['engineering']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = contract.client.get("/openapi.json").json()["paths"]
    assert len(operations) == sum(len(ops) for ops in paths.values()) >= 30
    for operation in operations:
        _fuzz(operation, GenerationMode.POSITIVE, 8, auth)
        _fuzz(operation, GenerationMode.NEGATIVE, 4, auth)


# -- the order of checks on bodies that do not parse ------------------------------------------

BAD_BODIES = {
    "not json": (b"{not json", 400),
    "not utf-8": (b'{"reason": "\xff\xfe"}', 400),
    "wrong shape": (b'{"reason": 42, "extra": 1}', 422),
}


@pytest.mark.parametrize("body", sorted(BAD_BODIES))
@pytest.mark.parametrize(
    ("role", "expected"),
    [(None, 401), ("bad", 401), ("compliance", 403), ("operations", None)],
)
def test_401_then_403_then_400_or_422_whatever_the_body(
    contract: Contract, body: str, role: str | None, expected: int | None
) -> None:
    data, body_status = BAD_BODIES[body]
    headers = {"Content-Type": "application/json"}
    if role == "bad":
        headers["Authorization"] = "Bearer fp_0000_nope"
    elif role:
        headers["Authorization"] = f"Bearer {contract.tokens[role]}"
    r = contract.client.post(f"/v1/agents/{AGENT}/pause", content=data, headers=headers)
    assert r.status_code == (expected or body_status), r.text
    assert set(r.json()) == {"error", "message"}
    assert r.json()["message"]


def test_framework_errors_have_our_shape(contract: Contract) -> None:
    auth = {"Authorization": f"Bearer {contract.tokens['engineering']}"}
    cases = [
        (contract.client.get("/v1/nope", headers=auth), 404, "not_found"),
        (contract.client.put("/v1/agents", headers=auth), 405, "method_not_allowed"),
        (contract.client.get("/v1/audit?until=0.5", headers=auth), 422, "invalid"),
        (contract.client.get("/v1/agents/a%20b/versions", headers=auth), 422, "invalid"),
        (
            contract.client.post("/v1/agents", content=b"x" * (2 << 20), headers=auth),
            413,
            "too_large",
        ),
    ]
    for r, status, error in cases:
        assert (r.status_code, r.json()["error"]) == (status, error), r.text
        assert set(r.json()) == {"error", "message"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timeout_s": 1e308}, "timeout_s"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"details": {"n": 2**64}}, "details.n"),
        ({"details": {"deep": [[[[[[[[[1]]]]]]]]]}}, "details"),
    ],
)
def test_out_of_range_approval_requests_are_422_and_logged_nowhere(
    contract: Contract, body: dict[str, Any], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    request = {"agent_id": AGENT, "action": "zendesk.close", "summary": "close #1"} | body
    auth = {"Authorization": f"Bearer {contract.tokens['engineering']}"}
    with caplog.at_level(logging.ERROR):
        r = contract.client.post("/v1/approvals", json=request, headers=auth)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid"
    assert field in r.json()["message"]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_openapi_documents_bounds_and_our_error_schema(contract: Contract) -> None:
    spec = contract.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    approval = schemas["ApprovalBody"]["properties"]
    assert approval["timeout_s"]["anyOf"][0]["maximum"] == 30 * 86400
    assert schemas["PrincipalBody"]["properties"]["role"]["enum"] == list(ROLES)
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status in ("401", "403", "422"):
                ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), (method, path, status)
            if "{" in path:
                assert "404" in op["responses"], (method, path)
            if method in ("post", "delete"):
                assert "409" in op["responses"], (method, path)


def test_a_bug_is_a_500_with_a_ref_and_its_traceback_logged_once(
    contract: Contract, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_audit(q: Any) -> Any:
        raise RuntimeError("the audit store fell over")

    # raise_server_exceptions: were it to escape the app, the server would log it again
    client = TestClient(create_app(contract.plane, broken_audit), raise_server_exceptions=True)
    auth = {"Authorization": f"Bearer {contract.tokens['engineering']}"}
    with caplog.at_level(logging.ERROR):
        r = client.get("/v1/audit", headers=auth)
    assert r.status_code == 500 and r.json()["error"] == "internal"
    assert "the audit store fell over" not in r.text and "Traceback" not in r.text
    ref = r.json()["message"].split("ref ")[1].split(")")[0]
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and ref in errors[0].getMessage() and errors[0].exc_info
