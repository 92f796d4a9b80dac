"""Every error fleetpulse raises, under one root.

    FleetpulseError
    ├── ConfigError                 invalid settings or policy; names the field and the fix
    ├── DevstackError               the local Kafka could not be fetched, started or reached
    │   ├── MissingToolError        java or mvn is not installed
    │   └── PortInUseError          a port the devstack needs is taken
    ├── CodecError                  bytes that are not a fleetpulse Avro record
    │   └── UnknownSchemaError      a writer schema fingerprint we do not ship
    ├── EventValidationError        (also a ValueError) a field of an event is wrong
    ├── DeliveryError               Kafka refused an event and it could not be spooled
    ├── CircuitOpenError            a fleet-wide breaker is open for this integration
    ├── AgentPausedError            an operator paused this agent
    ├── PermissionDeniedError       the agent's role may not use this integration this way
    ├── ApprovalDeniedError         a human denied an approval-gated action
    ├── ApprovalExpiredError        nobody decided in time
    ├── AuthenticationError         no token, or an unknown or revoked one (API: 401)
    ├── AccessDeniedError           the caller's role may not take this action (API: 403)
    ├── NotFoundError               no such agent, version, approval or principal (API: 404)
    └── ConflictError               the change lost a race or no longer applies (API: 409)

Each carries the structured fields a handler needs (topic, partition, offset, agent_id,
integration) as attributes, and a message that says what to do.
"""

from __future__ import annotations

from datetime import datetime


class FleetpulseError(Exception):
    """Root of every fleetpulse error."""


class ConfigError(FleetpulseError):
    """Invalid configuration: the message names the field and how to fix it."""

    def __init__(self, message: str, *, field: str | None = None, source: str | None = None):
        super().__init__(message)
        self.field = field
        self.source = source


class DevstackError(FleetpulseError):
    """The local infrastructure could not be fetched, started, stopped or reached."""


class MissingToolError(DevstackError):
    def __init__(self, tool: str, fix: str):
        super().__init__(f"{tool} was not found on PATH. Fix: {fix}")
        self.tool = tool


class PortInUseError(DevstackError):
    def __init__(self, port: int, what: str, setting: str):
        super().__init__(
            f"port {port} ({what}) on 127.0.0.1 is already taken by another process. "
            f"Fix: stop that process, or choose another port with {setting}."
        )
        self.port = port


class CodecError(FleetpulseError):
    """Bytes that could not be decoded as the expected fleetpulse record."""

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ):
        where = f" at {topic}[{partition}]@{offset}" if topic is not None else ""
        super().__init__(f"{reason}{where}")
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset


class UnknownSchemaError(CodecError):
    def __init__(self, fingerprint: bytes, **where: object):
        super().__init__(
            f"unknown writer schema fingerprint {fingerprint.hex()}: the producer used a schema "
            "this fleetpulse does not ship; upgrade fleetpulse or add the .avsc to schemas/",
            **where,  # type: ignore[arg-type]
        )
        self.fingerprint = fingerprint


class EventValidationError(FleetpulseError, ValueError):
    """An event field has a wrong type or value; `field` is its dotted path."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class DeliveryError(FleetpulseError):
    def __init__(self, message: str, *, topic: str | None = None):
        super().__init__(message)
        self.topic = topic


class CircuitOpenError(FleetpulseError):
    """The fleet-wide breaker for this integration is open: the call was not made."""

    def __init__(
        self,
        integration: str,
        *,
        breaker_id: str,
        state: str,
        retry_at: datetime | None = None,
        agent_id: str | None = None,
    ):
        when = f"; retry after {retry_at.isoformat()}" if retry_at else ""
        super().__init__(f"circuit {breaker_id} is {state}: call to {integration} not made{when}")
        self.integration = integration
        self.breaker_id = breaker_id
        self.state = state
        self.retry_at = retry_at
        self.agent_id = agent_id


class AgentPausedError(FleetpulseError):
    def __init__(self, agent_id: str, reason: str = "", actor: str = ""):
        by = f" by {actor}" if actor else ""
        why = f": {reason}" if reason else ""
        super().__init__(f"agent {agent_id} is paused{by}{why}")
        self.agent_id = agent_id
        self.reason = reason
        self.actor = actor


class PermissionDeniedError(FleetpulseError):
    def __init__(self, agent_id: str, role: str, integration: str, access: str, detail: str = ""):
        super().__init__(
            detail
            or f"agent {agent_id} (role {role!r}) may not {access} {integration}: grant it in "
            "the fleet policy's permissions section (and the agent's bundle tools)"
        )
        self.agent_id = agent_id
        self.role = role
        self.integration = integration
        self.access = access


class ApprovalDeniedError(FleetpulseError):
    def __init__(self, approval_id: str, action: str, approver: str = "", reason: str = ""):
        super().__init__(f"approval {approval_id} for {action} denied by {approver}: {reason}")
        self.approval_id = approval_id
        self.action = action
        self.approver = approver
        self.reason = reason


class ApprovalExpiredError(FleetpulseError):
    def __init__(self, approval_id: str, action: str, timeout_s: float):
        super().__init__(f"approval {approval_id} for {action} not decided within {timeout_s:g}s")
        self.approval_id = approval_id
        self.action = action
        self.timeout_s = timeout_s


class AuthenticationError(FleetpulseError):
    """No token, or a token that is unknown or revoked."""


class AccessDeniedError(FleetpulseError):
    """The caller's role does not allow the action (or it is their own approval request)."""

    def __init__(self, principal: str, role: str, action: str, detail: str = ""):
        super().__init__(detail or f"{principal} (role {role}) may not {action}")
        self.principal = principal
        self.role = role
        self.action = action


class NotFoundError(FleetpulseError, LookupError):
    """No such agent, version, approval or principal."""


class ConflictError(FleetpulseError):
    """A governance change was rejected by the log: it lost a race or no longer applies."""
