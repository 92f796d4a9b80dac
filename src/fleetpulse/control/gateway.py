"""The two implementations of `ControlClient` (client.py), with JSON-ready answers.

* `LocalGateway`: the `ControlPlane` in this process, for one caller. The API's routes are
  thin wrappers around it, and the CLI uses it when ``FLEETPULSE_API_URL`` is not set.
* `HttpGateway`: the same methods over the control API (``FLEETPULSE_API_URL`` and
  ``FLEETPULSE_TOKEN``); requests are built from the API's own body models (models.py), and
  an API error comes back as the same fleetpulse error it was.

So the CLI prints the same data whichever way it went; a parity test holds them to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from fleetpulse.contract.bundles import parse_bundle
from fleetpulse.contract.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConflictError,
    FleetpulseError,
    NotFoundError,
)
from fleetpulse.contract.governance import PRODUCTION
from fleetpulse.control.access import Caller
from fleetpulse.control.audit import AuditQuery
from fleetpulse.control.client import ControlClient, Row, Rows
from fleetpulse.control.models import (
    ActivateBody,
    ApprovalBody,
    OptionalReason,
    PrincipalBody,
    PublishBody,
    ReasonBody,
    RoleBody,
    SilenceBody,
)
from fleetpulse.control.plane import ControlPlane

AuditFn = Callable[[AuditQuery], list[dict[str, Any]]]


def as_dict(obj: Any) -> dict[str, Any]:
    """A control-plane dataclass as JSON-ready data; a principal's salt and hash never leave."""
    data = asdict(obj)
    for secret in ("salt", "token_hash"):
        data.pop(secret, None)
    return data


def version_row(v: Any) -> dict[str, Any]:
    data = as_dict(v)
    data.pop("bundle", None)
    return data


def breaker_row(b: Any) -> dict[str, Any]:
    return {
        "id": b.id,
        "state": str(b.state),
        "scope": b.key.scope,
        "since": _iso_us(b.since_us),
        "retry_at": _iso_us(b.retry_at_us),
        "probe_allowance": b.probe_allowance,
        "reason": b.reason,
        "actor": b.actor,
        "sequence": b.sequence,
        "measurements": b.measurements,
    }


def _iso_us(us: int | None) -> str | None:
    return None if us is None else datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat()


class LocalGateway(ControlClient):
    """`ControlClient` on the `ControlPlane` in this process, as ``caller``."""

    def __init__(self, plane: ControlPlane, caller: Caller, audit: AuditFn) -> None:
        self.plane, self.caller, self._audit = plane, caller, audit

    def whoami(self) -> Row:
        self.plane.require(self.caller, "whoami")
        c = self.caller
        return {"name": c.name, "role": c.role, "agent_id": c.agent_id}

    # agents
    def agents(self) -> Rows:
        return self.plane.agents(self.caller)

    def publish(self, bundle: dict[str, Any], message: str) -> Row:
        self.plane.require(self.caller, "agents.publish")
        parsed = parse_bundle(bundle, source="bundle")
        return version_row(self.plane.publish(self.caller, parsed, message))

    def history(self, agent_id: str) -> Rows:
        return [version_row(v) for v in self.plane.history(self.caller, agent_id)]

    def version(self, agent_id: str, number: int) -> Row:
        return as_dict(self.plane.version(self.caller, agent_id, number))

    def labels(self, agent_id: str) -> Row:
        return self.plane.labels(self.caller, agent_id)

    def diff(self, agent_id: str, old: int | None, new: int | None) -> Row:
        return {"diff": self.plane.diff(self.caller, agent_id, old, new)}

    def config(self, agent_id: str, label: str = PRODUCTION) -> Row:
        return as_dict(self.plane.config(self.caller, agent_id, label))

    def activate(self, agent_id: str, version: int, label: str, reason: str) -> Row:
        v = self.plane.activate(self.caller, agent_id, version, label=label, reason=reason)
        return version_row(v) | {"label": label}

    def rollback(self, agent_id: str, reason: str) -> Row:
        return version_row(self.plane.rollback(self.caller, agent_id, reason=reason)) | {
            "label": PRODUCTION
        }

    def set_paused(self, agent_id: str, paused: bool, reason: str) -> Row:
        return as_dict(self.plane.set_paused(self.caller, agent_id, paused, reason=reason))

    def pauses(self) -> Rows:
        return [as_dict(p) for p in self.plane.pauses(self.caller)]

    # breakers
    def breakers(self) -> Rows:
        return [breaker_row(b) for b in self.plane.breakers(self.caller)]

    def set_breaker(self, breaker_id: str, change: str, reason: str) -> Row:
        return breaker_row(self.plane.set_breaker(self.caller, breaker_id, change, reason=reason))

    # alerts
    def alerts(self, status: str | None) -> Rows:
        return self.plane.alerts(self.caller, status=status)

    def ack(self, dedup_key: str, reason: str) -> Row:
        e = self.plane.ack_alert(self.caller, dedup_key, reason=reason)
        return {"dedup_key": dedup_key, "acknowledged_by": e["actor"]}

    def silences(self, include_ended: bool) -> Rows:
        return [as_dict(s) for s in self.plane.silences(self.caller, include_ended=include_ended)]

    def silence(self, matchers: dict[str, str], duration_s: float, reason: str) -> Row:
        s = self.plane.silence(self.caller, matchers, duration_s=duration_s, reason=reason)
        return as_dict(s)

    def unsilence(self, silence_id: str, reason: str) -> Row:
        return as_dict(self.plane.unsilence(self.caller, silence_id, reason=reason))

    # approvals
    def approvals(self, status: str | None) -> Rows:
        return [as_dict(a) for a in self.plane.approvals(self.caller, status=status)]

    def approval(self, approval_id: str) -> Row:
        return as_dict(self.plane.approval(self.caller, approval_id))

    def request_approval(
        self,
        agent_id: str,
        action: str,
        summary: str,
        details: dict[str, Any],
        timeout_s: float | None,
    ) -> Any:
        a = self.plane.request_approval(
            self.caller, agent_id, action, summary=summary, details=details, timeout_s=timeout_s
        )
        return as_dict(a)

    def decide(self, approval_id: str, approve: bool, reason: str) -> Row:
        return as_dict(self.plane.decide(self.caller, approval_id, approve, reason=reason))

    # principals
    def principals(self) -> Rows:
        return [as_dict(p) for p in self.plane.principals(self.caller)]

    def add_principal(self, name: str, role: str, agent_id: str) -> Row:
        p, issued = self.plane.add_principal(self.caller, name, role, agent_id=agent_id)
        return as_dict(p) | {"token": issued.token}

    def set_role(self, name: str, role: str, reason: str) -> Row:
        self.plane.set_role(self.caller, name, role, reason=reason)
        return {"name": name, "role": role}

    def revoke(self, name: str, reason: str = "") -> Row:
        self.plane.revoke_principal(self.caller, name, reason=reason)
        return {"name": name, "revoked": True}

    # audit
    def audit(self, q: AuditQuery) -> Rows:
        self.plane.require(self.caller, "audit.read")
        return self._audit(q)


_ERRORS: dict[int, type[FleetpulseError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
}


class HttpGateway(ControlClient):
    """`ControlClient` over the control API at ``url``, as the holder of ``token``.

    Args:
        http: the HTTP client to send with (tests pass FastAPI's TestClient); by default one
            of its own on ``url``.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        """The answer's JSON, or the fleetpulse error the API's status code stands for."""
        try:
            r = self._http.request(method, path, headers=self._headers, **kw)
        except httpx.HTTPError as exc:
            raise FleetpulseError(
                f"control API at {self._http.base_url} unreachable ({exc}). Fix: start it with "
                "`fleetpulse api run`, or unset FLEETPULSE_API_URL to act directly"
            ) from None
        if r.status_code < 400:
            return r.json()
        try:
            message = r.json().get("message", r.text)
        except ValueError:
            message = r.text
        if r.status_code == 403:
            raise AccessDeniedError("", "", "", message)
        if r.status_code == 422:
            raise ValueError(message)
        raise _ERRORS.get(r.status_code, FleetpulseError)(f"{r.status_code}: {message}")

    def whoami(self) -> Row:
        return self._call("GET", "/v1/whoami")

    def agents(self) -> Rows:
        return self._call("GET", "/v1/agents")

    def publish(self, bundle: dict[str, Any], message: str) -> Row:
        parsed = parse_bundle(bundle, source="bundle")  # the same ConfigError as in process
        body = _body(PublishBody, bundle=parsed.canonical(), message=message)
        return self._call("POST", "/v1/agents", json=body)

    def history(self, agent_id: str) -> Rows:
        return self._call("GET", f"/v1/agents/{agent_id}/versions")

    def version(self, agent_id: str, number: int) -> Row:
        return self._call("GET", f"/v1/agents/{agent_id}/versions/{number}")

    def labels(self, agent_id: str) -> Row:
        return self._call("GET", f"/v1/agents/{agent_id}/labels")

    def diff(self, agent_id: str, old: int | None, new: int | None) -> Row:
        params = {k: v for k, v in (("from", old), ("to", new)) if v is not None}
        return self._call("GET", f"/v1/agents/{agent_id}/diff", params=params)

    def config(self, agent_id: str, label: str = PRODUCTION) -> Row:
        return self._call("GET", f"/v1/agents/{agent_id}/config", params={"label": label})

    def activate(self, agent_id: str, version: int, label: str, reason: str) -> Row:
        body = _body(ActivateBody, version=version, label=label, reason=reason)
        return self._call("POST", f"/v1/agents/{agent_id}/activate", json=body)

    def rollback(self, agent_id: str, reason: str) -> Row:
        body = _body(OptionalReason, reason=reason)
        return self._call("POST", f"/v1/agents/{agent_id}/rollback", json=body)

    def set_paused(self, agent_id: str, paused: bool, reason: str) -> Row:
        verb = "pause" if paused else "resume"
        body = _body(ReasonBody, reason=reason)
        return self._call("POST", f"/v1/agents/{agent_id}/{verb}", json=body)

    def pauses(self) -> Rows:
        return self._call("GET", "/v1/pauses")

    def breakers(self) -> Rows:
        return self._call("GET", "/v1/breakers")

    def set_breaker(self, breaker_id: str, change: str, reason: str) -> Row:
        path = change.replace("_", "-")
        body = _body(ReasonBody, reason=reason)
        return self._call("POST", f"/v1/breakers/{breaker_id}/{path}", json=body)

    def alerts(self, status: str | None) -> Rows:
        return self._call("GET", "/v1/alerts", params={"status": status} if status else {})

    def ack(self, dedup_key: str, reason: str) -> Row:
        body = _body(OptionalReason, reason=reason)
        return self._call("POST", f"/v1/alerts/{dedup_key}/ack", json=body)

    def silences(self, include_ended: bool) -> Rows:
        return self._call("GET", "/v1/silences", params={"include_ended": include_ended})

    def silence(self, matchers: dict[str, str], duration_s: float, reason: str) -> Row:
        body = _body(SilenceBody, matchers=matchers, duration_s=duration_s, reason=reason)
        return self._call("POST", "/v1/silences", json=body)

    def unsilence(self, silence_id: str, reason: str) -> Row:
        return self._call("DELETE", f"/v1/silences/{silence_id}", params={"reason": reason})

    def approvals(self, status: str | None) -> Rows:
        return self._call("GET", "/v1/approvals", params={"status": status or ""})

    def approval(self, approval_id: str) -> Row:
        return self._call("GET", f"/v1/approvals/{approval_id}")

    def request_approval(
        self,
        agent_id: str,
        action: str,
        summary: str,
        details: dict[str, Any],
        timeout_s: float | None,
    ) -> Row:
        body = _body(
            ApprovalBody,
            agent_id=agent_id,
            action=action,
            summary=summary,
            details=details,
            timeout_s=timeout_s,
        )
        return self._call("POST", "/v1/approvals", json=body)

    def decide(self, approval_id: str, approve: bool, reason: str) -> Row:
        verb = "approve" if approve else "deny"
        body = _body(OptionalReason if approve else ReasonBody, reason=reason)
        return self._call("POST", f"/v1/approvals/{approval_id}/{verb}", json=body)

    def principals(self) -> Rows:
        return self._call("GET", "/v1/principals")

    def add_principal(self, name: str, role: str, agent_id: str) -> Row:
        body = _body(PrincipalBody, name=name, role=role, agent_id=agent_id)
        return self._call("POST", "/v1/principals", json=body)

    def set_role(self, name: str, role: str, reason: str) -> Row:
        body = _body(RoleBody, role=role, reason=reason)
        return self._call("POST", f"/v1/principals/{name}/role", json=body)

    def revoke(self, name: str, reason: str = "") -> Row:
        return self._call("DELETE", f"/v1/principals/{name}", params={"reason": reason})

    def audit(self, q: AuditQuery) -> Rows:
        params: dict[str, Any] = {"limit": q.limit}
        for key, value in (
            ("agent", q.agent_id),
            ("principal", q.principal),
            ("since", _iso(q.since)),
            ("until", _iso(q.until)),
        ):
            if value:
                params[key] = value
        return self._call("GET", "/v1/audit", params=params)


def _body(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    """A request body, checked against the model the API validates it with: a value out of its
    bounds is the ValueError the API's 422 would have been, without the round trip."""
    try:
        return model.model_validate(fields).model_dump(mode="json")
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        raise ValueError("; ".join(parts)) from None


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None
