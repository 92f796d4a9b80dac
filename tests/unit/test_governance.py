"""Governance logic without Kafka: bundles, the folded state, roles, tokens, permissions,
the approval-pending alert and the bypass detector."""

from __future__ import annotations

import pytest

from fleetpulse.contract.bundles import AgentBundle, diff, parse_bundle
from fleetpulse.contract.errors import AccessDeniedError, AuthenticationError, ConfigError
from fleetpulse.contract.governance import GovernanceState, new_event
from fleetpulse.contract.policy import Permissions
from fleetpulse.control import access
from fleetpulse.control.access import ACTIONS, ROLES, Caller
from fleetpulse.control.watcher import approval_alerts

BUNDLE = {
    "agent_id": "triage",
    "role": "support",
    "model": {"name": "gpt-4o", "parameters": {"temperature": 0.2}},
    "prompt": "Triage {ticket}",
    "tools": [
        {"integration": "zendesk", "access": "read"},
        {"integration": "zendesk", "access": "write", "operations": ["comment"]},
    ],
    "schedule": {"cron": "*/5 * * * *", "grace_s": 60},
    "approvals": ["zendesk.close"],
}


# -- bundles ----------------------------------------------------------------------------------


def test_content_hash_ignores_key_order_and_changes_with_content():
    a = parse_bundle(BUNDLE)
    b = parse_bundle(dict(reversed(list(BUNDLE.items()))))
    c = parse_bundle(BUNDLE | {"prompt": "Triage {ticket} carefully"})
    assert a.content_hash == b.content_hash != c.content_hash
    assert len(a.content_hash) == 64


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"agent_id": "bad id!"}, "agent_id"),
        ({"schedule": {"cron": "every day"}}, "schedule"),
        ({"schedule": {"cron": "* * * * *", "interval_s": 60}}, "schedule"),
        ({"tools": [{"integration": "crm", "access": "delete"}]}, "tools.0.access"),
        ({"approvals": ["refund"]}, "approvals"),
        ({"breakers": {"crm": {"minimum_calls": 0}}}, "breakers"),
        ({"temperature": 1}, "temperature"),
    ],
)
def test_invalid_bundles_name_the_field(change, field):
    with pytest.raises(ConfigError) as err:
        parse_bundle(BUNDLE | change, source="triage.yaml")
    assert err.value.field == field
    assert "triage.yaml" in str(err.value)


def test_bundle_narrows_calls_and_gates_approvals():
    b = parse_bundle(BUNDLE)
    assert b.allows("zendesk", "search", "read")
    assert b.allows("zendesk", "comment", "write")
    assert not b.allows("zendesk", "delete", "write")  # write only for the listed operations
    assert not b.allows("crm", "get", "read")  # undeclared integration
    assert AgentBundle(agent_id="x").allows("crm", "get", "write")  # no tools: no narrowing
    assert b.needs_approval("zendesk", "close") and not b.needs_approval("zendesk", "comment")


def test_bundle_grants_checked_against_the_policy():
    b = parse_bundle(BUNDLE)
    assert b.excess_grants(Permissions()) == []  # not enforced
    p = Permissions(roles={"support": {"zendesk": frozenset({"read"})}})
    assert b.excess_grants(p) == ["write zendesk"]


def test_diff_shows_the_changed_line():
    old = parse_bundle(BUNDLE).canonical()
    new = parse_bundle(BUNDLE | {"prompt": "Be brief. {ticket}"}).canonical()
    text = diff(old, new, "triage@1", "triage@2")
    assert "-prompt: Triage {ticket}" in text and "+prompt: Be brief. {ticket}" in text
    assert diff(old, old, "a", "b") == ""


# -- the folded state -------------------------------------------------------------------------


def ev(entity_type, entity_id, action, actor="eng", at=1, **kw):
    return new_event(entity_type, entity_id, action, actor=actor, actor_role="x", at_us=at, **kw)


def publish(state, n, content=None, actor="eng"):
    b = parse_bundle(BUNDLE | (content or {"prompt": f"v{n}"}))
    return state.apply(
        ev(
            "agent_version",
            f"triage@{n}",
            "published",
            actor=actor,
            agent_id="triage",
            version=n,
            content_hash=b.content_hash,
            payload={"bundle": b.canonical(), "message": f"m{n}"},
        )
    )


def move(state, n, action="activated", label="production"):
    return state.apply(
        ev(
            "label",
            f"triage:{label}",
            action,
            agent_id="triage",
            version=n,
            payload={"label": label},
        )
    )


def test_versions_are_numbered_in_log_order_and_a_taken_number_is_rejected():
    s = GovernanceState()
    assert publish(s, 1) is None
    assert publish(s, 1, {"prompt": "racing writer"}) == (
        "version 1 of triage is taken; the next is 2"
    )
    assert publish(s, 2) is None
    assert [v.version for v in s.versions("triage")] == [1, 2]
    assert s.active("triage", "latest").version == 2
    assert s.active("triage") is None  # nothing activated yet


def test_a_tampered_bundle_is_rejected():
    s = GovernanceState()
    e = ev(
        "agent_version", "triage@1", "published", agent_id="triage", version=1,
        content_hash="0" * 64, payload={"bundle": BUNDLE, "message": "m"},
    )  # fmt: skip
    assert s.apply(e) == "content hash does not match the bundle"


def test_rollback_pops_the_production_history():
    s = GovernanceState()
    for n in (1, 2, 3):
        publish(s, n)
        move(s, n)
    assert s.active("triage").version == 3
    assert s.rollback_target("triage") == 2
    move(s, 2, "rolled_back")
    assert s.active("triage").version == 2 and s.rollback_target("triage") == 1
    move(s, 1, "rolled_back")
    assert s.active("triage").version == 1 and s.rollback_target("triage") is None
    assert move(s, 9) == "triage has no version 9"
    move(s, 3, label="staging")
    assert s.labels("triage") == {"production": 1, "staging": 3}


def test_a_replayed_event_is_folded_once():
    s = GovernanceState()
    publish(s, 1)
    e = ev("label", "triage:production", "activated", agent_id="triage", version=1)
    assert s.apply(e) is None and s.apply(e) is None
    assert len(s.agents["triage"].production_stack) == 1


def principal(s, name, role="operations", token_id="t1"):
    payload = {"role": role, "token_id": token_id, "salt": "00", "token_hash": "ff"}
    return s.apply(ev("principal", name, "principal_added", payload=payload))


def test_principals_added_revoked_and_role_changed():
    s = GovernanceState()
    assert principal(s, "ana") is None
    assert principal(s, "ana", token_id="t2") == "principal ana exists"
    assert s.principal_by_token_id("t1").name == "ana"
    s.apply(ev("role", "ana", "role_changed", payload={"role": "compliance"}))
    assert s.principals["ana"].role == "compliance"
    s.apply(ev("principal", "ana", "principal_revoked"))
    assert s.principal_by_token_id("t1") is None
    assert principal(s, "ana", token_id="t3") is None  # the name can be issued again


def request(s, approval_id="a1", actor="agent:triage", expires=100):
    payload = {"action": "zendesk.close", "summary": "close 42", "expires_at_us": expires}
    return s.apply(
        ev("approval", approval_id, "approval_requested", actor=actor, agent_id="triage",
           payload=payload)
    )  # fmt: skip


def decide(s, decision, actor="abe", at=50, approval_id="a1"):
    return s.apply(
        ev("approval", approval_id, "approval_decided", actor=actor, at=at,
           payload={"decision": decision})
    )  # fmt: skip


@pytest.mark.parametrize(
    ("steps", "status", "last_outcome"),
    [
        ([("decide", "approved", "abe", 50)], "approved", None),
        ([("decide", "denied", "abe", 50)], "denied", None),
        ([("decide", "approved", "agent:triage", 50)], "pending",
         "nobody approves their own request"),
        ([("decide", "approved", "abe", 150)], "pending",
         "approval a1 expired before the decision"),
        ([("expire",), ("decide", "approved", "abe", 60)], "expired",
         "approval a1 is already expired"),
        ([("decide", "denied", "abe", 50), ("expire",)], "denied",
         "approval a1 is already denied"),
        ([("decide", "maybe", "abe", 50)], "pending",
         "decision must be approved or denied, not 'maybe'"),
    ],
)  # fmt: skip
def test_approval_lifecycle(steps, status, last_outcome):
    s = GovernanceState()
    request(s)
    outcome = None
    for step in steps:
        if step[0] == "decide":
            outcome = decide(s, step[1], actor=step[2], at=step[3])
        else:
            outcome = s.apply(
                ev("approval", "a1", "approval_expired", actor="agent:triage", at=101)
            )
    assert s.approvals["a1"].status == status
    assert outcome == last_outcome


# -- roles and tokens -------------------------------------------------------------------------

# the public contract of the roles, row by row (ACTIONS must not drift from it silently)
MATRIX = {
    "engineering": set(ACTIONS),
    "operations": {
        "whoami", "agents.view", "agents.config", "agents.pause", "agents.resume",
        "breakers.view", "breakers.change", "alerts.view", "alerts.ack", "alerts.silence",
        "approvals.view", "audit.read",
    },
    "compliance": {
        "whoami", "agents.view", "agents.config", "breakers.view", "alerts.view",
        "approvals.view", "audit.read",
    },
    "approver": {"whoami", "agents.view", "agents.config", "breakers.view", "approvals.view",
                 "approvals.decide"},
    "agent": {"whoami", "agents.config", "breakers.view", "approvals.request"},
}  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(role):
    caller = Caller("p", role, agent_id="triage" if role == "agent" else "")
    allowed = {a for a in ACTIONS if caller.can(a, agent_id="triage")}
    assert allowed == MATRIX[role]


def test_an_agent_acts_only_on_itself():
    me = Caller("svc-triage", "agent", agent_id="triage")
    me.require("agents.config", "triage")
    with pytest.raises(AccessDeniedError, match="on another agent"):
        me.require("agents.config", "billing")
    with pytest.raises(AccessDeniedError):
        me.require("approvals.request", "billing")


def test_tokens_verify_and_store_only_a_salted_hash():
    issued = access.issue_token()
    token_id, secret = access.split_token(issued.token)
    assert token_id == issued.token_id
    assert secret not in issued.hash and issued.hash != access.hash_secret("00" * 16, secret)
    assert access.verify_secret(issued.salt, issued.hash, secret)
    assert not access.verify_secret(issued.salt, issued.hash, secret + "x")
    other = access.issue_token()
    assert other.salt != issued.salt and other.token != issued.token
    for bad in ("", "Bearer x", "fp_only", "xx_a_b"):
        with pytest.raises(AuthenticationError):
            access.split_token(bad)


# -- permissions ------------------------------------------------------------------------------

PERMS = Permissions(
    roles={
        "support": {"zendesk": frozenset({"read", "write"}), "crm": frozenset({"read"})},
        "reporting": {"*": frozenset({"read"})},
    }
)


@pytest.mark.parametrize(
    ("role", "integration", "access_", "allowed"),
    [
        ("support", "zendesk", "write", True),
        ("support", "crm", "read", True),
        ("support", "crm", "write", False),
        ("support", "stripe", "read", False),
        ("reporting", "anything", "read", True),
        ("reporting", "anything", "write", False),
        ("unknown", "crm", "read", False),  # least privilege: an unlisted role gets nothing
        ("", "crm", "read", False),
    ],
)
def test_permissions(role, integration, access_, allowed):
    assert PERMS.allows(role, integration, access_) is allowed
    assert Permissions().allows(role, integration, access_)  # no section: not enforced


# -- approvals pending too long ---------------------------------------------------------------


def test_pending_approvals_fire_once_and_resolve_when_decided():
    s = GovernanceState()
    request(s, expires=10**12)
    assert approval_alerts(s, set(), now_us=100 * 10**6, after_s=300) == []
    fired = approval_alerts(s, set(), now_us=400 * 10**6, after_s=300)
    assert [(a["dedup_key"], a["status"]) for a in fired] == [("approval_pending:a1", "firing")]
    assert approval_alerts(s, {"approval_pending:a1"}, now_us=500 * 10**6, after_s=300) == []
    decide(s, "approved", at=501 * 10**6)
    resolved = approval_alerts(s, {"approval_pending:a1"}, now_us=502 * 10**6, after_s=300)
    assert [(a["status"], a["ended_at"]) for a in resolved] == [("resolved", 502 * 10**6)]
