"""The control API (``fleetpulse api run``): the `ControlPlane` over HTTP, with OpenAPI docs at
``/docs``.

Every route names the action it performs; the caller's role is checked before the body is
read, so the answer to a request is, in this order: 401 (no or bad token), 403 (role), 400
(a body that is not UTF-8 JSON) or 422 (a value out of its documented bounds), 404 / 409,
then success. Every error is JSON ``{"error": ..., "message": ...}`` (api_errors.py); an
unexpected one is logged once with its traceback and reaches the client as a 500 with an id
to find it in the log, never the traceback. Request bodies: models.py (shared with the HTTP
client); path and query bounds: api_models.py.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from fleetpulse.contract.errors import AccessDeniedError
from fleetpulse.contract.governance import PRODUCTION
from fleetpulse.control import api_errors
from fleetpulse.control.access import ACTIONS, Caller
from fleetpulse.control.api_models import (
    AgentId,
    BreakerId,
    DedupKey,
    HexId,
    Label,
    Limit,
    OptIdent,
    OptReason,
    OptVersion,
    PrincipalName,
    Since,
    Until,
    VersionNo,
)
from fleetpulse.control.audit import AuditQuery
from fleetpulse.control.gateway import AuditFn, LocalGateway
from fleetpulse.control.models import (
    ActivateBody,
    AlertStatus,
    ApprovalBody,
    ApprovalStatus,
    OptionalReason,
    PrincipalBody,
    PublishBody,
    ReasonBody,
    RoleBody,
    SilenceBody,
)
from fleetpulse.control.plane import ControlPlane

logger = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False)


def create_app(plane: ControlPlane, audit: AuditFn) -> FastAPI:
    """The FastAPI app over ``plane``; ``audit`` answers audit queries (ClickHouse or log)."""
    app = FastAPI(
        title="fleetpulse control API",
        version="1",
        description="Agents, versions, rollback, pauses, breakers, alerts, approvals, "
        "principals and the audit log. Send `Authorization: Bearer <token>`. Every error is "
        '`{"error": code, "message": what to do}`; checks run in the order 401, 403, then '
        "400/422.",
    )
    app.router.route_class = api_errors.DocumentedRoute

    def caller(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
        return plane.authenticate(creds.credentials if creds else None)

    def authorize(who: Caller, action: str) -> Caller:
        if who.role not in ACTIONS[action]:
            plane.audit_denied(who, action, None, f"{action} refused to role {who.role}")
            raise AccessDeniedError(who.name, who.role, action)
        return who

    def need(action: str) -> Any:
        """A dependency: the caller, if its role may take ``action`` (ownership is checked in
        the plane, where the agent id is known)."""

        # a default, not Annotated: with postponed annotations FastAPI could not resolve the
        # local `caller` from a string
        def check(who: Caller = Depends(caller)) -> Caller:
            return authorize(who, action)

        check.fleetpulse_action = action  # type: ignore[attr-defined]  # read by gate()
        return Depends(check)

    async def gate(request: Request) -> None:
        """The matched route's 401/403 checks, for a request whose body did not parse."""
        route = request.scope.get("route")
        action = _action_of(route.dependant) if route is not None else None
        if action is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        who = await run_in_threadpool(
            plane.authenticate, token.strip() if scheme.lower() == "bearer" else None
        )
        await run_in_threadpool(authorize, who, action)

    api_errors.install(app, gate)

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
        return gw(who).publish(body.bundle.canonical(), body.message)

    @app.get("/v1/agents/{agent_id}/versions", tags=["agents"])
    def history(agent_id: AgentId, who: Caller = need("agents.view")) -> Any:
        return gw(who).history(agent_id)

    @app.get("/v1/agents/{agent_id}/versions/{version}", tags=["agents"])
    def version(agent_id: AgentId, version: VersionNo, who: Caller = need("agents.view")) -> Any:
        return gw(who).version(agent_id, version)

    @app.get("/v1/agents/{agent_id}/labels", tags=["agents"])
    def labels(agent_id: AgentId, who: Caller = need("agents.view")) -> Any:
        return gw(who).labels(agent_id)

    @app.get("/v1/agents/{agent_id}/diff", tags=["agents"])
    def diff(
        agent_id: AgentId,
        who: Caller = need("agents.view"),
        from_: Annotated[OptVersion, Query(alias="from")] = None,
        to: OptVersion = None,
    ) -> Any:
        return gw(who).diff(agent_id, from_, to)

    @app.get("/v1/agents/{agent_id}/config", tags=["agents"])
    def config(
        agent_id: AgentId, who: Caller = need("agents.config"), label: Label = PRODUCTION
    ) -> Any:
        return gw(who).config(agent_id, label)

    @app.post("/v1/agents/{agent_id}/activate", tags=["agents"])
    def activate(
        agent_id: AgentId, body: ActivateBody, who: Caller = need("agents.activate")
    ) -> Any:
        return gw(who).activate(agent_id, body.version, body.label, body.reason)

    @app.post("/v1/agents/{agent_id}/rollback", tags=["agents"])
    def rollback(
        agent_id: AgentId, body: OptionalReason, who: Caller = need("agents.rollback")
    ) -> Any:
        return gw(who).rollback(agent_id, body.reason)

    @app.post("/v1/agents/{agent_id}/pause", tags=["agents"])
    def pause(agent_id: AgentId, body: ReasonBody, who: Caller = need("agents.pause")) -> Any:
        return gw(who).set_paused(agent_id, True, body.reason)

    @app.post("/v1/agents/{agent_id}/resume", tags=["agents"])
    def resume(agent_id: AgentId, body: ReasonBody, who: Caller = need("agents.resume")) -> Any:
        return gw(who).set_paused(agent_id, False, body.reason)

    @app.get("/v1/pauses", tags=["agents"])
    def pauses(who: Caller = need("agents.view")) -> Any:
        return gw(who).pauses()

    # -- breakers -------------------------------------------------------------------------

    @app.get("/v1/breakers", tags=["breakers"])
    def breakers(who: Caller = need("breakers.view")) -> Any:
        return gw(who).breakers()

    def breaker_route(change: str) -> Any:
        def route(
            breaker_id: BreakerId, body: ReasonBody, who: Caller = need("breakers.change")
        ) -> Any:
            return gw(who).set_breaker(breaker_id, change, body.reason)

        return route

    for path, change in (("force-open", "force_open"), ("disable", "disable"), ("reset", "reset")):
        app.post(f"/v1/breakers/{{breaker_id}}/{path}", tags=["breakers"], name=change)(
            breaker_route(change)
        )

    # -- alerts ---------------------------------------------------------------------------

    @app.get("/v1/alerts", tags=["alerts"])
    def alerts(who: Caller = need("alerts.view"), status: AlertStatus | None = None) -> Any:
        return gw(who).alerts(status)

    @app.post("/v1/alerts/{dedup_key}/ack", tags=["alerts"])
    def ack(dedup_key: DedupKey, body: OptionalReason, who: Caller = need("alerts.ack")) -> Any:
        return gw(who).ack(dedup_key, body.reason)

    @app.get("/v1/silences", tags=["alerts"])
    def silences(who: Caller = need("alerts.view"), include_ended: bool = False) -> Any:
        return gw(who).silences(include_ended)

    @app.post("/v1/silences", tags=["alerts"], status_code=201)
    def silence(body: SilenceBody, who: Caller = need("alerts.silence")) -> Any:
        return gw(who).silence(body.matchers, body.duration_s, body.reason)

    @app.delete("/v1/silences/{silence_id}", tags=["alerts"])
    def unsilence(
        silence_id: HexId, reason: OptReason = "", who: Caller = need("alerts.silence")
    ) -> Any:
        return gw(who).unsilence(silence_id, reason)

    # -- approvals ------------------------------------------------------------------------

    @app.get("/v1/approvals", tags=["approvals"])
    def approvals(who: Caller = need("approvals.view"), status: ApprovalStatus = "pending") -> Any:
        return gw(who).approvals(status or None)

    @app.post("/v1/approvals", status_code=201, tags=["approvals"])
    def request_approval(body: ApprovalBody, who: Caller = need("approvals.request")) -> Any:
        return gw(who).request_approval(
            body.agent_id, body.action, body.summary, body.details, body.timeout_s
        )

    @app.get("/v1/approvals/{approval_id}", tags=["approvals"])
    def approval(approval_id: HexId, who: Caller = need("approvals.view")) -> Any:
        return gw(who).approval(approval_id)

    @app.post("/v1/approvals/{approval_id}/approve", tags=["approvals"])
    def approve(
        approval_id: HexId, body: OptionalReason, who: Caller = need("approvals.decide")
    ) -> Any:
        return gw(who).decide(approval_id, True, body.reason)

    @app.post("/v1/approvals/{approval_id}/deny", tags=["approvals"])
    def deny(approval_id: HexId, body: ReasonBody, who: Caller = need("approvals.decide")) -> Any:
        return gw(who).decide(approval_id, False, body.reason)

    # -- principals -----------------------------------------------------------------------

    @app.get("/v1/principals", tags=["principals"])
    def principals(who: Caller = need("principals.view")) -> Any:
        return gw(who).principals()

    @app.post("/v1/principals", status_code=201, tags=["principals"])
    def add_principal(body: PrincipalBody, who: Caller = need("principals.change")) -> Any:
        return gw(who).add_principal(body.name, body.role, body.agent_id)

    @app.post("/v1/principals/{name}/role", tags=["principals"])
    def set_role(
        name: PrincipalName, body: RoleBody, who: Caller = need("principals.change")
    ) -> Any:
        return gw(who).set_role(name, body.role, body.reason)

    @app.delete("/v1/principals/{name}", tags=["principals"])
    def revoke(
        name: PrincipalName, reason: OptReason = "", who: Caller = need("principals.change")
    ) -> Any:
        return gw(who).revoke(name, reason)

    # -- audit ----------------------------------------------------------------------------

    @app.get("/v1/audit", tags=["audit"])
    def audit_log(
        who: Caller = need("audit.read"),
        agent: OptIdent = None,
        principal: OptIdent = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 1000,
    ) -> Any:
        return gw(who).audit(AuditQuery(agent, principal, since, until, limit))

    return app


def _action_of(dependant: Dependant) -> str | None:
    """The action a route's access dependency checks (set by ``need``)."""
    for dep in dependant.dependencies:
        action = getattr(dep.call, "fleetpulse_action", None)
        if action is not None:
            return str(action)
        found = _action_of(dep)
        if found is not None:
            return found
    return None
