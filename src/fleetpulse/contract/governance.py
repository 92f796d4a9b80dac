"""The control plane's state, rebuilt by folding GovernanceEvents in log order (no I/O).

``fleetpulse.governance`` has one partition, so every reader folds the same events in the same
order and reaches the same state. A writer proposes an event; `GovernanceState.apply` accepts or
rejects it (a version number already taken, a decision on an approval no longer pending, a
self-approval); the writer reads the log back to learn which. Rejected events stay in the log
(they are part of the audit) but change nothing.

Actions, by entity type:

    agent_version  published            payload: bundle, message
    label          activated, rolled_back   payload: label, version, previous
    principal      principal_added, principal_revoked, role_changed
    approval       approval_requested, approval_decided, approval_expired
    pause          paused, resumed      (audit; the control topic carries the state)
    breaker        breaker_forced_open, breaker_disabled, breaker_reset   (audit)
    principal      access_denied        (audit of a refused action)
    alert          alert_acknowledged
    silence        silence_created, silence_removed   payload: matchers, expires_at_us
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson

from fleetpulse.contract.alert_rules import labels_match
from fleetpulse.contract.bundles import AgentBundle, content_hash

Event = dict[str, Any]
PRODUCTION = "production"
LABELS = ("production", "staging", "latest")


def new_event(
    entity_type: str,
    entity_id: str,
    action: str,
    *,
    actor: str,
    actor_role: str,
    at_us: int,
    agent_id: str | None = None,
    version: int | None = None,
    content_hash: str | None = None,
    reason: str = "",
    payload: dict[str, Any] | None = None,
) -> Event:
    """A GovernanceEvent record (the Avro shape, times in epoch micros)."""
    return {
        "event_id": os.urandom(16).hex(),
        "entity_type": entity_type,
        "entity_id": entity_id,
        "action": action,
        "actor": actor,
        "actor_role": actor_role,
        "agent_id": agent_id,
        "version": version,
        "content_hash": content_hash,
        "reason": reason,
        "payload_json": orjson.dumps(payload or {}).decode(),
        "at": at_us,
        "sequence": 0,
    }


def payload(event: Event) -> dict[str, Any]:
    data = orjson.loads(event.get("payload_json") or "{}")
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Version:
    agent_id: str
    version: int
    content_hash: str
    author: str
    message: str
    at_us: int
    bundle: dict[str, Any]

    @cached_property
    def agent_bundle(self) -> AgentBundle:
        """The bundle, validated once per version (the SDK and the alert stage read it often)."""
        return AgentBundle.model_validate(self.bundle)


@dataclass
class Principal:
    name: str
    role: str
    token_id: str
    salt: str
    token_hash: str
    agent_id: str
    created_by: str
    created_at_us: int
    revoked: bool = False


@dataclass
class Approval:
    approval_id: str
    agent_id: str
    action: str
    summary: str
    details: dict[str, Any]
    requested_by: str
    requested_at_us: int
    expires_at_us: int
    status: str = "pending"  # approved, denied, expired
    decided_by: str = ""
    reason: str = ""
    decided_at_us: int = 0


@dataclass
class Silence:
    """Mutes the notifications of alerts whose labels match every matcher (globs), until it
    expires or is removed. Alerts still fire and resolve on the topic, marked silenced.

    Example:
        >>> s = Silence("s1", {"agent_id": "triage*"}, 10, "deploying", "ana", 0)
        >>> s.matches({"agent_id": "triage-eu", "severity": "critical"}, now_us=5)
        True
    """

    silence_id: str
    matchers: dict[str, str]
    expires_at_us: int
    reason: str
    author: str
    created_at_us: int
    removed_by: str = ""

    def active(self, now_us: int) -> bool:
        return not self.removed_by and now_us < self.expires_at_us

    def matches(self, labels: dict[str, str], now_us: int) -> bool:
        return self.active(now_us) and labels_match(self.matchers, labels)


@dataclass
class AgentRecord:
    versions: list[Version] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    # versions production pointed at, oldest first: rollback pops the current one
    production_stack: list[int] = field(default_factory=list)


class GovernanceState:
    """Agents and their versions and labels, principals, approvals, and the audit trail.

    Example:
        >>> s = GovernanceState()
        >>> e = new_event("principal", "ana", "principal_added", actor="local:root",
        ...               actor_role="engineering", at_us=1,
        ...               payload={"role": "operations", "token_id": "ab", "salt": "00",
        ...                        "token_hash": "ff"})
        >>> s.apply(e) is None, s.principals["ana"].role
        (True, 'operations')
    """

    def __init__(self) -> None:
        self.agents: dict[str, AgentRecord] = {}
        self.principals: dict[str, Principal] = {}
        self.approvals: dict[str, Approval] = {}
        self.acks: dict[str, Event] = {}  # alert dedup key -> its latest acknowledgement
        self.silences: dict[str, Silence] = {}
        self.audit: list[Event] = []  # every event, accepted or not, in log order
        self.outcomes: dict[str, str | None] = {}  # event_id -> None (accepted) or why not
        self._by_token: dict[str, str] = {}

    # -- reading --------------------------------------------------------------------------

    def versions(self, agent_id: str) -> list[Version]:
        rec = self.agents.get(agent_id)
        return list(rec.versions) if rec else []

    def version(self, agent_id: str, number: int) -> Version | None:
        versions = self.versions(agent_id)
        return versions[number - 1] if 1 <= number <= len(versions) else None

    def labels(self, agent_id: str) -> dict[str, int]:
        rec = self.agents.get(agent_id)
        return dict(rec.labels) if rec else {}

    def active(self, agent_id: str, label: str = PRODUCTION) -> Version | None:
        """The version ``label`` points at (``latest``: the newest published)."""
        rec = self.agents.get(agent_id)
        if rec is None or not rec.versions:
            return None
        if label == "latest":
            return rec.versions[-1]
        number = rec.labels.get(label)
        return rec.versions[number - 1] if number else None

    def active_bundle(self, agent_id: str, label: str = PRODUCTION) -> AgentBundle | None:
        v = self.active(agent_id, label)
        return v.agent_bundle if v else None

    def rollback_target(self, agent_id: str) -> int | None:
        rec = self.agents.get(agent_id)
        if rec is None or len(rec.production_stack) < 2:
            return None
        return rec.production_stack[-2]

    def principal_by_token_id(self, token_id: str) -> Principal | None:
        name = self._by_token.get(token_id)
        p = self.principals.get(name) if name else None
        return p if p is not None and not p.revoked else None

    def pending(self) -> list[Approval]:
        return [a for a in self.approvals.values() if a.status == "pending"]

    # -- folding --------------------------------------------------------------------------

    def apply(self, event: Event) -> str | None:
        """Fold one event; return None when it took effect, else why it was rejected."""
        if event["event_id"] in self.outcomes:
            return self.outcomes[event["event_id"]]  # a replayed duplicate
        handler = _HANDLERS.get((event["entity_type"], event["action"]))
        outcome = handler(self, event) if handler else None  # audit-only actions
        self.outcomes[event["event_id"]] = outcome
        self.audit.append(event)
        return outcome

    def _published(self, e: Event) -> str | None:
        agent_id = e["agent_id"] or ""
        rec = self.agents.setdefault(agent_id, AgentRecord())
        expected = len(rec.versions) + 1
        if e["version"] != expected:
            return f"version {e['version']} of {agent_id} is taken; the next is {expected}"
        body = payload(e)
        bundle = body.get("bundle") or {}
        if content_hash(bundle) != e["content_hash"]:
            return "content hash does not match the bundle"
        rec.versions.append(
            Version(
                agent_id=agent_id,
                version=expected,
                content_hash=e["content_hash"],
                author=e["actor"],
                message=str(body.get("message", "")),
                at_us=e["at"],
                bundle=bundle,
            )
        )
        return None

    def _label_moved(self, e: Event) -> str | None:
        agent_id = e["agent_id"] or ""
        rec = self.agents.get(agent_id)
        label = payload(e).get("label", PRODUCTION)
        number = e["version"]
        if rec is None or not isinstance(number, int) or not 1 <= number <= len(rec.versions):
            return f"{agent_id} has no version {number}"
        if label == "latest":
            return "latest always points at the newest version; it cannot be moved"
        expected_previous = payload(e).get("previous")
        if expected_previous is not None and rec.labels.get(label) != expected_previous:
            return f"{label} moved meanwhile (now {rec.labels.get(label)}); retry"
        rec.labels[label] = number
        if label == PRODUCTION:
            if e["action"] == "rolled_back" and len(rec.production_stack) >= 2:
                rec.production_stack.pop()
            else:
                rec.production_stack.append(number)
        return None

    def _principal_added(self, e: Event) -> str | None:
        name = e["entity_id"]
        held = self.principals.get(name)
        if held is not None and not held.revoked:
            return f"principal {name} exists"
        body = payload(e)
        p = Principal(
            name=name,
            role=str(body.get("role", "")),
            token_id=str(body.get("token_id", "")),
            salt=str(body.get("salt", "")),
            token_hash=str(body.get("token_hash", "")),
            agent_id=str(body.get("agent_id", "")),
            created_by=e["actor"],
            created_at_us=e["at"],
        )
        self.principals[name] = p
        self._by_token[p.token_id] = name
        return None

    def _principal_revoked(self, e: Event) -> str | None:
        p = self.principals.get(e["entity_id"])
        if p is None or p.revoked:
            return f"no active principal {e['entity_id']}"
        p.revoked = True
        return None

    def _role_changed(self, e: Event) -> str | None:
        p = self.principals.get(e["entity_id"])
        if p is None or p.revoked:
            return f"no active principal {e['entity_id']}"
        p.role = str(payload(e).get("role", p.role))
        return None

    def _approval_requested(self, e: Event) -> str | None:
        if e["entity_id"] in self.approvals:
            return f"approval {e['entity_id']} exists"
        body = payload(e)
        self.approvals[e["entity_id"]] = Approval(
            approval_id=e["entity_id"],
            agent_id=e["agent_id"] or "",
            action=str(body.get("action", "")),
            summary=str(body.get("summary", "")),
            details=body.get("details") or {},
            requested_by=e["actor"],
            requested_at_us=e["at"],
            expires_at_us=int(body.get("expires_at_us", 0)),
        )
        return None

    def _approval_ended(self, e: Event) -> str | None:
        a = self.approvals.get(e["entity_id"])
        if a is None:
            return f"no approval {e['entity_id']}"
        if a.status != "pending":
            return f"approval {a.approval_id} is already {a.status}"
        if e["action"] == "approval_decided":
            if e["actor"] == a.requested_by:
                return "nobody approves their own request"
            if a.expires_at_us and e["at"] > a.expires_at_us:
                return f"approval {a.approval_id} expired before the decision"
            decision = payload(e).get("decision")
            if decision not in ("approved", "denied"):
                return f"decision must be approved or denied, not {decision!r}"
            a.status = decision
        else:
            a.status = "expired"
        a.decided_by = e["actor"]
        a.reason = e["reason"]
        a.decided_at_us = e["at"]
        return None


def _acked(state: GovernanceState, e: Event) -> str | None:
    state.acks[e["entity_id"]] = e
    return None


def _silenced(state: GovernanceState, e: Event) -> str | None:
    if e["entity_id"] in state.silences:
        return f"silence {e['entity_id']} exists"
    body = payload(e)
    matchers = body.get("matchers")
    expires = body.get("expires_at_us")
    if not isinstance(matchers, dict) or not matchers:
        return "a silence needs at least one matcher"
    if not isinstance(expires, int) or expires <= e["at"]:
        return "a silence needs an expiry in the future"
    state.silences[e["entity_id"]] = Silence(
        silence_id=e["entity_id"],
        matchers={str(k): str(v) for k, v in matchers.items()},
        expires_at_us=expires,
        reason=e["reason"],
        author=e["actor"],
        created_at_us=e["at"],
    )
    return None


def _unsilenced(state: GovernanceState, e: Event) -> str | None:
    s = state.silences.get(e["entity_id"])
    if s is None or not s.active(e["at"]):
        return f"no active silence {e['entity_id']}"
    s.removed_by = e["actor"]
    return None


_HANDLERS = {
    ("alert", "alert_acknowledged"): _acked,
    ("silence", "silence_created"): _silenced,
    ("silence", "silence_removed"): _unsilenced,
    ("agent_version", "published"): GovernanceState._published,
    ("label", "activated"): GovernanceState._label_moved,
    ("label", "rolled_back"): GovernanceState._label_moved,
    ("principal", "principal_added"): GovernanceState._principal_added,
    ("principal", "principal_revoked"): GovernanceState._principal_revoked,
    ("role", "role_changed"): GovernanceState._role_changed,
    ("approval", "approval_requested"): GovernanceState._approval_requested,
    ("approval", "approval_decided"): GovernanceState._approval_ended,
    ("approval", "approval_expired"): GovernanceState._approval_ended,
}
