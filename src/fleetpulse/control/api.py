"""The control API (``fleetpulse api run``): the `ControlPlane` over HTTP, with OpenAPI docs at
``/docs``.

Every route names the action it performs; the caller's role is checked before the body is
read, so the answer to a request is, in this order: 401 (no or bad token), 403 (role), 422
(bad input), 404 / 409, then success. Every error is JSON ``{"error": ..., "message": ...}``;
an unexpected one is logged here with its traceback and reaches the client as a 500 with an
id to find it in the log, never the traceback.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from fleetpulse.control.access import ACTIONS, Caller
from fleetpulse.control.audit import AuditQuery
from fleetpulse.control.gateway import AuditFn, LocalGateway
from fleetpulse.control.governance import PRODUCTION
from fleetpulse.control.plane import ControlPlane
from fleetpulse.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    NotFoundError,
)

logger = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False)


class PublishBody(BaseModel):
    bundle: dict[str, Any]
    message: str = Field(min_length=1)


class ActivateBody(BaseModel):
    version: int = Field(ge=1)
    label: str = PRODUCTION
    reason: str = ""


class ReasonBody(BaseModel):
    reason: str = Field(min_length=1)


class OptionalReason(BaseModel):
    reason: str = ""


class SilenceBody(BaseModel):
    matchers: dict[str, str] = Field(min_length=1)
    duration_s: float = Field(gt=0, le=30 * 86400)
    reason: str = Field(min_length=1)


class PrincipalBody(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    role: str
    agent_id: str = ""


class RoleBody(BaseModel):
    role: str
    reason: str = ""


class ApprovalBody(BaseModel):
    agent_id: str = Field(min_length=1)
    action: str = Field(min_length=1)
    summary: str = Field(min_length=1)
    details: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)


def create_app(plane: ControlPlane, audit: AuditFn) -> FastAPI:
    """The FastAPI app over ``plane``; ``audit`` answers audit queries (ClickHouse or log)."""
    app = FastAPI(
        title="fleetpulse control API",
        version="1",
        description="Agents, versions, rollback, pauses, breakers, alerts, approvals, "
        "principals and the audit log. Send `Authorization: Bearer <token>`.",
    )
    _errors(app)

    def caller(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
        return plane.authenticate(creds.credentials if creds else None)

    def need(action: str) -> Any:
        """A dependency: the caller, if its role may take ``action`` (ownership is checked in
        the plane, where the agent id is known)."""

        # a default, not Annotated: with postponed annotations FastAPI could not resolve the
        # local `caller` from a string
        def check(who: Caller = Depends(caller)) -> Caller:
            if who.role not in ACTIONS[action]:
                plane.audit_denied(who, action, None, f"{action} refused to role {who.role}")
                raise AccessDeniedError(who.name, who.role, action)
            return who

        return Depends(check)

    def gw(who: Caller) -> LocalGateway:
        return LocalGateway(plane, who, audit)

    # -- who am I -------------------------------------------------------------------------

    @app.get("/v1/whoami", tags=["principals"])
    def whoami(who: Caller = need("whoami")) -> Any:
        return gw(who).whoami()

    # -- agents ---------------------------------------------------------------------------

    @app.get("/v1/agents", tags=["agents"])
    def list_agents(who: Caller = need("agents.view")) -> Any:
        return gw(who).agents()

    @app.post("/v1/agents", status_code=201, tags=["agents"])
    def publish(body: PublishBody, who: Caller = need("agents.publish")) -> Any:
        return gw(who).publish(body.bundle, body.message)

    @app.get("/v1/agents/{agent_id}/versions", tags=["agents"])
    def history(agent_id: str, who: Caller = need("agents.view")) -> Any:
        return gw(who).history(agent_id)

    @app.get("/v1/agents/{agent_id}/versions/{version}", tags=["agents"])
    def version(agent_id: str, version: int, who: Caller = need("agents.view")) -> Any:
        return gw(who).version(agent_id, version)

    @app.get("/v1/agents/{agent_id}/labels", tags=["agents"])
    def labels(agent_id: str, who: Caller = need("agents.view")) -> Any:
        return gw(who).labels(agent_id)

    @app.get("/v1/agents/{agent_id}/diff", tags=["agents"])
    def diff(
        agent_id: str,
        who: Caller = need("agents.view"),
        from_: Annotated[int | None, Query(alias="from", ge=1)] = None,
        to: Annotated[int | None, Query(ge=1)] = None,
    ) -> Any:
        return gw(who).diff(agent_id, from_, to)

    @app.get("/v1/agents/{agent_id}/config", tags=["agents"])
    def config(agent_id: str, who: Caller = need("agents.config"), label: str = PRODUCTION) -> Any:
        return gw(who).config(agent_id, label)

    @app.post("/v1/agents/{agent_id}/activate", tags=["agents"])
    def activate(agent_id: str, body: ActivateBody, who: Caller = need("agents.activate")) -> Any:
        return gw(who).activate(agent_id, body.version, body.label, body.reason)

    @app.post("/v1/agents/{agent_id}/rollback", tags=["agents"])
    def rollback(agent_id: str, body: OptionalReason, who: Caller = need("agents.rollback")) -> Any:
        return gw(who).rollback(agent_id, body.reason)

    @app.post("/v1/agents/{agent_id}/pause", tags=["agents"])
    def pause(agent_id: str, body: ReasonBody, who: Caller = need("agents.pause")) -> Any:
        return gw(who).set_paused(agent_id, True, body.reason)

    @app.post("/v1/agents/{agent_id}/resume", tags=["agents"])
    def resume(agent_id: str, body: ReasonBody, who: Caller = need("agents.resume")) -> Any:
        return gw(who).set_paused(agent_id, False, body.reason)

    @app.get("/v1/pauses", tags=["agents"])
    def pauses(who: Caller = need("agents.view")) -> Any:
        return gw(who).pauses()

    # -- breakers -------------------------------------------------------------------------

    @app.get("/v1/breakers", tags=["breakers"])
    def breakers(who: Caller = need("breakers.view")) -> Any:
        return gw(who).breakers()

    def breaker_route(change: str) -> Any:
        def route(breaker_id: str, body: ReasonBody, who: Caller = need("breakers.change")) -> Any:
            return gw(who).set_breaker(breaker_id, change, body.reason)

        return route

    for path, change in (("force-open", "force_open"), ("disable", "disable"), ("reset", "reset")):
        app.post(f"/v1/breakers/{{breaker_id}}/{path}", tags=["breakers"], name=change)(
            breaker_route(change)
        )

    # -- alerts ---------------------------------------------------------------------------

    @app.get("/v1/alerts", tags=["alerts"])
    def alerts(who: Caller = need("alerts.view"), status: str | None = None) -> Any:
        return gw(who).alerts(status)

    @app.post("/v1/alerts/{dedup_key}/ack", tags=["alerts"])
    def ack(dedup_key: str, body: OptionalReason, who: Caller = need("alerts.ack")) -> Any:
        return gw(who).ack(dedup_key, body.reason)

    @app.get("/v1/silences", tags=["alerts"])
    def silences(who: Caller = need("alerts.view"), include_ended: bool = False) -> Any:
        return gw(who).silences(include_ended)

    @app.post("/v1/silences", tags=["alerts"], status_code=201)
    def silence(body: SilenceBody, who: Caller = need("alerts.silence")) -> Any:
        return gw(who).silence(body.matchers, body.duration_s, body.reason)

    @app.delete("/v1/silences/{silence_id}", tags=["alerts"])
    def unsilence(silence_id: str, reason: str = "", who: Caller = need("alerts.silence")) -> Any:
        return gw(who).unsilence(silence_id, reason)

    # -- approvals ------------------------------------------------------------------------

    @app.get("/v1/approvals", tags=["approvals"])
    def approvals(who: Caller = need("approvals.view"), status: str | None = "pending") -> Any:
        return gw(who).approvals(status or None)

    @app.post("/v1/approvals", status_code=201, tags=["approvals"])
    def request_approval(body: ApprovalBody, who: Caller = need("approvals.request")) -> Any:
        return gw(who).request_approval(
            body.agent_id, body.action, body.summary, body.details, body.timeout_s
        )

    @app.get("/v1/approvals/{approval_id}", tags=["approvals"])
    def approval(approval_id: str, who: Caller = need("approvals.view")) -> Any:
        return gw(who).approval(approval_id)

    @app.post("/v1/approvals/{approval_id}/approve", tags=["approvals"])
    def approve(
        approval_id: str, body: OptionalReason, who: Caller = need("approvals.decide")
    ) -> Any:
        return gw(who).decide(approval_id, True, body.reason)

    @app.post("/v1/approvals/{approval_id}/deny", tags=["approvals"])
    def deny(approval_id: str, body: ReasonBody, who: Caller = need("approvals.decide")) -> Any:
        return gw(who).decide(approval_id, False, body.reason)

    # -- principals -----------------------------------------------------------------------

    @app.get("/v1/principals", tags=["principals"])
    def principals(who: Caller = need("principals.view")) -> Any:
        return gw(who).principals()

    @app.post("/v1/principals", status_code=201, tags=["principals"])
    def add_principal(body: PrincipalBody, who: Caller = need("principals.change")) -> Any:
        return gw(who).add_principal(body.name, body.role, body.agent_id)

    @app.post("/v1/principals/{name}/role", tags=["principals"])
    def set_role(name: str, body: RoleBody, who: Caller = need("principals.change")) -> Any:
        return gw(who).set_role(name, body.role, body.reason)

    @app.delete("/v1/principals/{name}", tags=["principals"])
    def revoke(name: str, who: Caller = need("principals.change")) -> Any:
        return gw(who).revoke(name)

    # -- audit ----------------------------------------------------------------------------

    @app.get("/v1/audit", tags=["audit"])
    def audit_log(
        who: Caller = need("audit.read"),
        agent: str | None = None,
        principal: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    ) -> Any:
        return gw(who).audit(AuditQuery(agent, principal, since, until, limit))

    return app


def _errors(app: FastAPI) -> None:
    def reply(status: int, error: str, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": error, "message": message})

    statuses: list[tuple[type[Exception], int, str]] = [
        (AuthenticationError, 401, "unauthenticated"),
        (AccessDeniedError, 403, "forbidden"),
        (NotFoundError, 404, "not_found"),
        (ConflictError, 409, "conflict"),
        (ValueError, 422, "invalid"),  # a bad value the service layer refused
        (ConfigError, 422, "invalid"),  # a bundle that does not validate
    ]
    for cls, status, error in statuses:

        async def handle(request: Request, exc: Exception, s: int = status, e: str = error) -> Any:
            r = reply(s, e, str(exc))
            if s == 401:
                r.headers["WWW-Authenticate"] = "Bearer"
            return r

        app.add_exception_handler(cls, handle)

    @app.exception_handler(RequestValidationError)
    async def _422(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}")
        return reply(422, "invalid", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _500(request: Request, exc: Exception) -> JSONResponse:
        ref = os.urandom(4).hex()
        logger.exception("%s %s failed (ref %s)", request.method, request.url.path, ref)
        return reply(500, "internal", f"internal error (ref {ref}); the server log has details")
