"""The control plane's service layer: every governed action, checked and audited, once.

The CLI (acting directly) and the HTTP API call the same methods with the `Caller` they
authenticated. Each method first asks ``caller.require(action)``; a refusal is itself written
to the governance log (``access_denied``) before the error reaches the caller. Changes are
GovernanceEvents appended to ``fleetpulse.governance``; pauses and breaker changes also go to
``fleetpulse.control`` (the state the SDK follows) through `ControlService`.

Example:
    >>> plane = ControlPlane(settings, policy, log)                          # doctest: +SKIP
    >>> plane.publish(caller, load_bundle(Path("triage.yaml")), "tighter prompt")
    >>> plane.rollback(caller, "triage", reason="v4 fails on long tickets")
"""

from __future__ import annotations

import getpass
import logging
import os
from typing import Any

from fleetpulse.contract import limits
from fleetpulse.contract.bundles import AgentBundle, diff
from fleetpulse.contract.clock import Clock, SystemClock
from fleetpulse.contract.config import CommonSettings
from fleetpulse.contract.control_state import ControlView
from fleetpulse.contract.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
)
from fleetpulse.contract.governance import (
    PRODUCTION,
    Approval,
    Event,
    GovernanceState,
    Principal,
    Silence,
    Version,
    new_event,
)
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.control import access
from fleetpulse.control.access import Caller, IssuedToken, check_role, issue_token
from fleetpulse.control.service import ControlService, ControlWriter
from fleetpulse.sdk.alerts_state import AlertsView, read_alerts
from fleetpulse.sdk.governance_log import GovernanceLog
from fleetpulse.sdk.topic_follower import read_control

logger = logging.getLogger(__name__)
_MAX_SILENCE_S = limits.MAX_SILENCE_S


def local_caller() -> Caller:
    """Who runs the CLI without a token: the local operator, who can reach Kafka directly and
    so could write any event anyway (Kafka ACLs are the perimeter); acts as engineering."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Caller(name=f"local:{user}", role="engineering")


class ControlPlane:
    """Agents, versions, labels, principals, approvals, pauses and breakers, for a caller.

    Args:
        control_view: a live view of ``fleetpulse.control`` (the API keeps one); the CLI reads
            the topic once per command when it is None.
    """

    def __init__(
        self,
        settings: CommonSettings,
        policy: FleetPolicy,
        log: GovernanceLog,
        *,
        clock: Clock | None = None,
        control_view: ControlView | None = None,
        alerts_view: AlertsView | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.log = log
        self.clock = clock or SystemClock()
        self.control_view = control_view
        self.alerts_view = alerts_view
        self._control_writer: ControlWriter | None = None

    # -- who ------------------------------------------------------------------------------

    def authenticate(self, token: str | None) -> Caller:
        """The caller holding ``token``; AuthenticationError when there is none or it is not
        valid (the message never repeats the token)."""
        if not token:
            raise AuthenticationError("missing token: send Authorization: Bearer <token>")
        token_id, secret = access.split_token(token)
        p = self.log.read(lambda s: s.principal_by_token_id(token_id))
        if p is None or not access.verify_secret(p.salt, p.token_hash, secret):
            raise AuthenticationError("unknown or revoked token")
        return Caller(name=p.name, role=p.role, agent_id=p.agent_id)

    def require(self, caller: Caller, action: str, agent_id: str | None = None) -> None:
        try:
            caller.require(action, agent_id)
        except AccessDeniedError as exc:
            self.audit_denied(caller, action, agent_id, str(exc))
            raise

    def audit_denied(self, caller: Caller, action: str, agent_id: str | None, why: str) -> None:
        try:
            self._append(
                caller,
                "principal",
                caller.name,
                "access_denied",
                agent_id=agent_id,
                reason=why,
                payload={"action": action},
            )
        except Exception as exc:  # the refusal stands even if its audit record is late
            logger.warning("could not audit a refused %s by %s: %s", action, caller.name, exc)

    def _append(
        self, caller: Caller, entity_type: str, entity_id: str, action: str, **kw: Any
    ) -> Event:
        event = new_event(
            entity_type,
            entity_id,
            action,
            actor=caller.name,
            actor_role=caller.role,
            at_us=self.clock.time_us(),
            **kw,
        )
        return self.log.append(event)

    def _state(self) -> GovernanceState:
        self.log.refresh(0)
        return self.log.state

    # -- agents and versions --------------------------------------------------------------

    def agents(self, caller: Caller) -> list[dict[str, Any]]:
        self.require(caller, "agents.view")

        def summary(s: GovernanceState) -> list[dict[str, Any]]:
            rows = []
            for agent_id, rec in sorted(s.agents.items()):
                if not rec.versions:
                    continue
                latest = rec.versions[-1]
                rows.append(
                    {
                        "agent_id": agent_id,
                        "versions": len(rec.versions),
                        "labels": dict(rec.labels) | {"latest": latest.version},
                        "latest_author": latest.author,
                        "latest_at_us": latest.at_us,
                    }
                )
            return rows

        self._state()
        return self.log.read(summary)

    def history(self, caller: Caller, agent_id: str) -> list[Version]:
        self.require(caller, "agents.view")
        versions = self._state().versions(agent_id)
        if not versions:
            raise NotFoundError(f"no agent {agent_id!r}: publish a bundle for it first")
        return versions

    def labels(self, caller: Caller, agent_id: str) -> dict[str, int]:
        versions = self.history(caller, agent_id)
        return self.log.read(lambda s: s.labels(agent_id)) | {"latest": versions[-1].version}

    def version(self, caller: Caller, agent_id: str, number: int | None = None) -> Version:
        """One version; None: the production version (else the latest)."""
        versions = self.history(caller, agent_id)
        if number is None:
            return self.log.read(lambda s: s.active(agent_id)) or versions[-1]
        v = self.log.read(lambda s: s.version(agent_id, number))
        if v is None:
            raise NotFoundError(f"{agent_id} has versions 1 to {len(versions)}, not {number}")
        return v

    def config(self, caller: Caller, agent_id: str, label: str = PRODUCTION) -> Version:
        """The bundle an agent runs (what the SDK's ``fleet.config`` holds)."""
        self.require(caller, "agents.config", agent_id)
        v = self._state().active(agent_id, label)
        if v is None:
            raise NotFoundError(f"{agent_id} has no {label} version: activate one")
        return v

    def diff(
        self, caller: Caller, agent_id: str, old: int | None = None, new: int | None = None
    ) -> str:
        """Unified diff between two versions; by default production (or the one before the
        latest) against the latest."""
        versions = self.history(caller, agent_id)
        new_v = self.version(caller, agent_id, new or versions[-1].version)
        if old is None:
            prod = self.log.read(lambda s: s.active(agent_id))
            old = prod.version if prod and prod.version != new_v.version else new_v.version - 1
        if old < 1:
            return ""
        old_v = self.version(caller, agent_id, old)
        return diff(
            old_v.bundle, new_v.bundle, f"{agent_id}@{old_v.version}", f"{agent_id}@{new_v.version}"
        )

    def publish(self, caller: Caller, bundle: AgentBundle, message: str) -> Version:
        """Record ``bundle`` as the agent's next version (not active until activated)."""
        self.require(caller, "agents.publish")
        if not message.strip():
            raise ValueError("a message is required (-m): say what changed and why")
        excess = bundle.excess_grants(self.policy.access)
        if excess:
            raise ValueError(
                f"role {bundle.role!r} is not granted {', '.join(excess)} by the fleet "
                "policy's permissions; grant it there or remove the tool"
            )
        data, digest = bundle.canonical(), bundle.content_hash
        for _attempt in range(3):
            versions = self._state().versions(bundle.agent_id)
            if versions and versions[-1].content_hash == digest:
                raise ConflictError(
                    f"{bundle.agent_id}@{versions[-1].version} already has this content"
                )
            number = len(versions) + 1
            try:
                self._append(
                    caller,
                    "agent_version",
                    f"{bundle.agent_id}@{number}",
                    "published",
                    agent_id=bundle.agent_id,
                    version=number,
                    content_hash=digest,
                    reason=message,
                    payload={"bundle": data, "message": message},
                )
            except ConflictError:
                continue  # another publish took the number: take the next one
            v = self.log.read(lambda s, n=number: s.version(bundle.agent_id, n))  # type: ignore[misc]
            assert v is not None
            return v
        raise ConflictError(f"{bundle.agent_id}: other publishes kept winning; retry")

    def activate(
        self,
        caller: Caller,
        agent_id: str,
        number: int,
        *,
        label: str = PRODUCTION,
        reason: str = "",
    ) -> Version:
        """Point ``label`` at version ``number``: the SDK of every instance follows it live."""
        self.require(caller, "agents.activate", agent_id)
        target = self.version(caller, agent_id, number)
        if label == "latest":
            raise ValueError("latest always names the newest version; activate another label")
        if (
            label == PRODUCTION
            and self.policy.governance.production_requires_second_person
            and target.author == caller.name
        ):
            self.audit_denied(caller, "agents.activate", agent_id, "author promoting own version")
            raise AccessDeniedError(
                caller.name,
                caller.role,
                "agents.activate",
                f"{caller.name} wrote {agent_id}@{number}: the policy needs another engineer "
                "to move it to production",
            )
        return self._move_label(caller, target, label, "activated", reason)

    def rollback(self, caller: Caller, agent_id: str, *, reason: str = "") -> Version:
        """Back to the version production pointed at before the current one."""
        self.require(caller, "agents.rollback", agent_id)
        self.history(caller, agent_id)  # 404 for an unknown agent
        back = self.log.read(lambda s: s.rollback_target(agent_id))
        if back is None:
            raise ConflictError(f"{agent_id} has no earlier production version to roll back to")
        target = self.version(caller, agent_id, back)
        return self._move_label(caller, target, PRODUCTION, "rolled_back", reason)

    def _move_label(
        self, caller: Caller, target: Version, label: str, action: str, reason: str
    ) -> Version:
        """Point ``label`` at ``target``; the log rejects it if the label moved meanwhile."""
        agent_id = target.agent_id
        held = self.log.read(lambda s: s.labels(agent_id)).get(label)
        self._append(
            caller,
            "label",
            f"{agent_id}:{label}",
            action,
            agent_id=agent_id,
            version=target.version,
            content_hash=target.content_hash,
            reason=reason,
            payload={"label": label, "version": target.version, "previous": held},
        )
        return target

    # -- pauses and breakers (control topic + audit) --------------------------------------

    @property
    def control_writer(self) -> ControlWriter:
        """The one producer this plane (so its process) writes ``fleetpulse.control`` with."""
        if self._control_writer is None:
            self._control_writer = ControlWriter(
                self.settings.resolved_bootstrap(), client_id="fleetpulse-control-plane"
            )
        return self._control_writer

    def close(self) -> None:
        if self._control_writer is not None:
            self._control_writer.close()

    def _control(self, caller: Caller) -> ControlService:
        return ControlService(
            self.settings,
            actor=caller.name,
            clock=self.clock,
            view_source=self._control_view,
            writer=self.control_writer,
        )

    def _control_view(self) -> ControlView:
        if self.control_view is not None:
            return self.control_view
        return read_control(self.settings.resolved_bootstrap(), self.settings.topics.control)

    def set_paused(self, caller: Caller, agent_id: str, paused: bool, *, reason: str) -> Any:
        self.require(caller, "agents.pause" if paused else "agents.resume", agent_id)
        svc = self._control(caller)
        state = (
            svc.pause(agent_id, reason=reason) if paused else svc.resume(agent_id, reason=reason)
        )
        self._append(
            caller,
            "pause",
            agent_id,
            "paused" if paused else "resumed",
            agent_id=agent_id,
            reason=reason,
        )
        return state

    def set_breaker(self, caller: Caller, breaker_id: str, change: str, *, reason: str) -> Any:
        """``change``: force_open, disable or reset."""
        self.require(caller, "breakers.change")
        svc = self._control(caller)
        ops = {"force_open": svc.force_open, "disable": svc.disable, "reset": svc.reset}
        if change not in ops:
            raise ValueError(f"unknown breaker change {change!r}: force_open, disable or reset")
        state = ops[change](breaker_id, reason=reason)
        self._append(caller, "breaker", breaker_id, f"breaker_{change}", reason=reason)
        return state

    def breakers(self, caller: Caller) -> list[Any]:
        self.require(caller, "breakers.view")
        return self._control(caller).breakers()

    def pauses(self, caller: Caller) -> list[Any]:
        self.require(caller, "agents.view")
        return self._control(caller).pauses()

    # -- principals -----------------------------------------------------------------------

    def principals(self, caller: Caller) -> list[Principal]:
        self.require(caller, "principals.view")
        self._state()
        return self.log.read(lambda s: sorted(s.principals.values(), key=lambda p: p.name))

    def add_principal(
        self, caller: Caller, name: str, role: str, *, agent_id: str = ""
    ) -> tuple[Principal, IssuedToken]:
        """Create a principal and its token; the token is returned once and never stored."""
        self.require(caller, "principals.change")
        check_role(role)
        if not name or any(c.isspace() for c in name) or "/" in name:
            raise ValueError(f"principal name {name!r}: no spaces or '/'")
        if role == "agent" and not agent_id:
            raise ValueError("an agent principal needs the agent id it acts as (--agent)")
        issued = issue_token()
        self._append(
            caller,
            "principal",
            name,
            "principal_added",
            agent_id=agent_id or None,
            payload={
                "role": role,
                "agent_id": agent_id,
                "token_id": issued.token_id,
                "salt": issued.salt,
                "token_hash": issued.hash,
            },
        )
        p = self.log.read(lambda s: s.principals[name])
        return p, issued

    def revoke_principal(self, caller: Caller, name: str, *, reason: str = "") -> None:
        self.require(caller, "principals.change")
        if self._state().principals.get(name) is None:
            raise NotFoundError(f"no principal {name!r}")
        self._append(caller, "principal", name, "principal_revoked", reason=reason)

    def set_role(self, caller: Caller, name: str, role: str, *, reason: str = "") -> None:
        self.require(caller, "principals.change")
        check_role(role)
        if self._state().principals.get(name) is None:
            raise NotFoundError(f"no principal {name!r}")
        self._append(caller, "role", name, "role_changed", reason=reason, payload={"role": role})

    # -- approvals ------------------------------------------------------------------------

    def approvals(self, caller: Caller, *, status: str | None = "pending") -> list[Approval]:
        self.require(caller, "approvals.view")
        self._state()
        return self.log.read(
            lambda s: [a for a in s.approvals.values() if status in (None, a.status)]
        )

    def approval(self, caller: Caller, approval_id: str) -> Approval:
        self.require(caller, "approvals.view")
        a = self._state().approvals.get(approval_id)
        if a is None:
            raise NotFoundError(f"no approval {approval_id!r}")
        return a

    def request_approval(
        self,
        caller: Caller,
        agent_id: str,
        action: str,
        *,
        summary: str,
        details: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Approval:
        self.require(caller, "approvals.request", agent_id)
        if not action or not summary:
            raise ValueError("an approval request needs an action and a summary")
        if len(action) > limits.ACTION_MAX or len(summary) > limits.TEXT_MAX:
            raise ValueError(
                f"an approval's action is at most {limits.ACTION_MAX} characters and its "
                f"summary at most {limits.TEXT_MAX}; put the rest in details"
            )
        if timeout_s is not None:
            limits.check_seconds(timeout_s, "timeout_s", limits.MAX_TIMEOUT_S)
        limits.check_json_value(details or {}, "details")
        timeout = timeout_s or self.policy.governance.approval_default_timeout_s
        approval_id = os.urandom(8).hex()
        now = self.clock.time_us()
        self._append(
            caller,
            "approval",
            approval_id,
            "approval_requested",
            agent_id=agent_id,
            payload={
                "action": action,
                "summary": summary,
                "details": details or {},
                "expires_at_us": now + int(timeout * 1e6),
            },
        )
        return self.log.read(lambda s: s.approvals[approval_id])

    def decide(
        self, caller: Caller, approval_id: str, approve: bool, *, reason: str = ""
    ) -> Approval:
        self.require(caller, "approvals.decide")
        a = self.approval(caller, approval_id)
        if a.requested_by == caller.name:
            self.audit_denied(caller, "approvals.decide", a.agent_id, "own request")
            raise AccessDeniedError(
                caller.name, caller.role, "approvals.decide", "nobody approves their own request"
            )
        if not approve and not reason.strip():
            raise ValueError("a denial needs a reason (--reason): the agent receives it")
        self._append(
            caller,
            "approval",
            approval_id,
            "approval_decided",
            agent_id=a.agent_id,
            reason=reason,
            payload={"decision": "approved" if approve else "denied"},
        )
        return self.log.read(lambda s: s.approvals[approval_id])

    # -- alerts (acknowledgements and silences live in the governance log) ----------------

    def alerts(self, caller: Caller, *, status: str | None = None) -> list[dict[str, Any]]:
        """Every alert's newest event, with who acknowledged it."""
        self.require(caller, "alerts.view")
        view = self.alerts_view or read_alerts(
            self.settings.resolved_bootstrap(), self.settings.topics.alerts
        )
        acks = dict(self._state().acks)
        out = []
        for a in view.alerts(status):
            ack = acks.get(a["dedup_key"])
            out.append(a | {"acknowledged_by": ack["actor"] if ack else ""})
        return out

    def ack_alert(self, caller: Caller, dedup_key: str, *, reason: str = "") -> Event:
        self.require(caller, "alerts.ack")
        return self._append(caller, "alert", dedup_key, "alert_acknowledged", reason=reason)

    def silences(self, caller: Caller, *, include_ended: bool = False) -> list[Silence]:
        self.require(caller, "alerts.view")
        now = self.clock.time_us()
        found = self._state().silences.values()
        return [s for s in found if include_ended or s.active(now)]

    def silence(
        self, caller: Caller, matchers: dict[str, str], *, duration_s: float, reason: str
    ) -> Silence:
        """Mute the alerts whose labels match every matcher (globs) for ``duration_s``.

        Raises:
            ValueError: no matcher, no reason, or a duration outside (0, 30 days].
        """
        self.require(caller, "alerts.silence")
        if not matchers or not all(k.strip() and v.strip() for k, v in matchers.items()):
            raise ValueError("a silence needs at least one label=glob matcher (--match)")
        if not reason.strip():
            raise ValueError("a silence needs a reason (--reason): the next on-call reads it")
        if not 0 < duration_s <= _MAX_SILENCE_S:
            raise ValueError("a silence must expire within 30 days (--for, e.g. 2h)")
        silence_id = os.urandom(6).hex()
        self._append(
            caller,
            "silence",
            silence_id,
            "silence_created",
            reason=reason,
            payload={
                "matchers": matchers,
                "expires_at_us": self.clock.time_us() + int(duration_s * 1e6),
            },
        )
        return self._state().silences[silence_id]

    def unsilence(self, caller: Caller, silence_id: str, *, reason: str = "") -> Silence:
        self.require(caller, "alerts.silence")
        held = self._state().silences.get(silence_id)
        if held is None or not held.active(self.clock.time_us()):
            raise NotFoundError(
                f"no active silence {silence_id!r}: see `fleetpulse alerts silences`"
            )
        self._append(caller, "silence", silence_id, "silence_removed", reason=reason)
        return self._state().silences[silence_id]
