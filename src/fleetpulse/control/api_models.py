"""The control API's request bodies and parameters, with every bound stated (limits.py), so
the OpenAPI document describes what the API accepts and a value out of range is a 422
before the service layer sees it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from fleetpulse.control import limits
from fleetpulse.control.bundles import AgentBundle
from fleetpulse.control.governance import PRODUCTION

Role = Literal["engineering", "operations", "compliance", "approver", "agent"]
ApprovalStatus = Literal["pending", "approved", "denied", "expired", ""]
AlertStatus = Literal["firing", "resolved"]

Text = Annotated[str, Field(max_length=limits.TEXT_MAX)]
Reason = Annotated[str, Field(min_length=1, max_length=limits.TEXT_MAX)]
Ident = Annotated[str, Field(pattern=limits.ID_PATTERN, max_length=limits.ID_MAX)]


def _epoch(where: str) -> AfterValidator:
    return AfterValidator(lambda v: None if v is None else limits.check_epoch(v, where))


# -- path and query parameters --------------------------------------------------------------

AgentId = Annotated[
    str, Path(pattern=limits.ID_PATTERN, max_length=limits.ID_MAX, description="an agent id")
]
VersionNo = Annotated[int, Path(ge=1, le=limits.VERSION_MAX)]
BreakerId = Annotated[
    str,
    Path(
        pattern=limits.BREAKER_ID_PATTERN,
        max_length=300,
        description="integration:NAME, agent:AGENT|integration:NAME or agent:AGENT",
    ),
]
HexId = Annotated[str, Path(pattern=limits.HEX_ID_PATTERN, max_length=64)]
DedupKey = Annotated[str, Path(min_length=1, max_length=limits.KEY_MAX)]
PrincipalName = Annotated[
    str, Path(pattern=limits.ID_PATTERN, max_length=limits.ID_MAX, description="a principal")
]
Label = Annotated[str, Query(pattern=limits.ID_PATTERN, max_length=limits.ID_MAX)]
OptVersion = Annotated[int | None, Query(ge=1, le=limits.VERSION_MAX)]
OptIdent = Annotated[str | None, Query(max_length=limits.ID_MAX)]
Since = Annotated[
    datetime | None,
    Query(description="ISO 8601, between 2000 and 2200; naive times are UTC"),
    _epoch("since"),
]
Until = Annotated[
    datetime | None,
    Query(description="ISO 8601, between 2000 and 2200; naive times are UTC"),
    _epoch("until"),
]
Limit = Annotated[int, Query(ge=1, le=limits.LIMIT_MAX)]
OptReason = Annotated[str, Query(max_length=limits.TEXT_MAX)]


# -- bodies ---------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublishBody(_Body):
    bundle: AgentBundle
    message: Reason

    @field_validator("bundle", mode="before")
    @classmethod
    def _storable(cls, v: Any) -> Any:
        limits.check_json_value(v, "bundle")
        return v


class ActivateBody(_Body):
    version: int = Field(ge=1, le=limits.VERSION_MAX)
    label: Ident = PRODUCTION
    reason: Text = ""


class ReasonBody(_Body):
    reason: Reason


class OptionalReason(_Body):
    reason: Text = ""


Matcher = Annotated[str, Field(min_length=1, max_length=limits.KEY_MAX)]


class SilenceBody(_Body):
    matchers: dict[Matcher, Matcher] = Field(min_length=1, max_length=32)
    duration_s: float = Field(gt=0, le=limits.MAX_SILENCE_S, allow_inf_nan=False)
    reason: Reason


class PrincipalBody(_Body):
    name: Ident
    role: Role
    agent_id: Annotated[str, Field(max_length=limits.ID_MAX)] = ""


class RoleBody(_Body):
    role: Role
    reason: Text = ""


class ApprovalBody(_Body):
    agent_id: Ident
    action: str = Field(min_length=1, max_length=limits.ACTION_MAX)
    summary: Reason
    details: dict[str, Any] = Field(
        default_factory=dict,
        max_length=100,
        description="JSON: 64-bit integers, finite numbers, at most 8 levels and 1,000 values",
    )
    timeout_s: float | None = Field(
        default=None, gt=0, le=limits.MAX_TIMEOUT_S, allow_inf_nan=False
    )

    @field_validator("details")
    @classmethod
    def _storable(cls, v: dict[str, Any]) -> dict[str, Any]:
        limits.check_json_value(v, "details")
        return v


class ErrorBody(BaseModel):
    """Every error the API answers: a stable code and a message that says what to do."""

    error: str = Field(description="unauthenticated, forbidden, not_found, conflict, ...")
    message: str
