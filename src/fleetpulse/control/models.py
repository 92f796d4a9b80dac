"""The control plane's request bodies and their bounds (limits.py): the one definition of what
a `ControlClient` call sends. The API validates requests with them (a value out of range is a
422 before the service layer sees it), `HttpGateway` builds its requests from them, and the
OpenAPI document describes them. No FastAPI here: the CLI's client uses them too."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleetpulse.contract import limits
from fleetpulse.contract.bundles import AgentBundle
from fleetpulse.contract.governance import PRODUCTION

Role = Literal["engineering", "operations", "compliance", "approver", "agent"]
ApprovalStatus = Literal["pending", "approved", "denied", "expired", ""]
AlertStatus = Literal["firing", "resolved"]
BreakerChange = Literal["force_open", "disable", "reset"]

Text = Annotated[str, Field(max_length=limits.TEXT_MAX)]
Reason = Annotated[str, Field(min_length=1, max_length=limits.TEXT_MAX)]
Ident = Annotated[str, Field(pattern=limits.ID_PATTERN, max_length=limits.ID_MAX)]


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
