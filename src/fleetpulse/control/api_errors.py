"""The control API's error contract, and the OpenAPI document's account of it.

Every error, ours or the framework's (unknown route, wrong method, a body that is not JSON or
not UTF-8, validation), answers ``{"error": <code>, "message": <what to do>}``:

    400 bad_request       the body is not UTF-8 JSON
    401 unauthenticated   no token, or an unknown or revoked one
    403 forbidden         the caller's role may not take this action
    404 not_found         no such agent, version, approval, principal, silence, or route
    405 method_not_allowed
    409 conflict          the change lost a race or no longer applies
    413 too_large         a body over 1 MiB
    422 invalid           a value out of its documented bounds
    500 internal          a bug: logged once with its traceback, the reply carries a ref
    503 unavailable       Kafka did not acknowledge the change; retry

Checks run in that order for every request: 401, then 403, then 400/422, whether the body
parses or not (FastAPI parses the body before it runs the dependencies; `gated` runs the
route's access check first when parsing failed).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetpulse.contract.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    DeliveryError,
    NotFoundError,
)
from fleetpulse.control.models import ErrorBody

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20
Gate = Callable[[Request], Awaitable[None]]

_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    500: "internal",
    503: "unavailable",
}
_MAPPED: list[tuple[type[Exception], int]] = [
    (AuthenticationError, 401),
    (AccessDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (DeliveryError, 503),
    (ValueError, 422),  # a bad value the service layer refused
    (ConfigError, 422),  # a bundle that does not validate
]
_DESCRIPTIONS = {
    400: "the body is not UTF-8 JSON",
    401: "no token, or an unknown or revoked one",
    403: "the caller's role may not take this action",
    404: "no such resource",
    409: "the change lost a race or no longer applies",
    413: "the body is over 1 MiB",
    422: "a value out of its documented bounds",
    500: "internal error; the reply's ref finds it in the server log",
    503: "Kafka did not acknowledge the change; retry",
}


def reply(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": _CODES.get(status, "error"), "message": message}
    r = JSONResponse(status_code=status, content=body, headers=headers)
    if status == 401:
        r.headers["WWW-Authenticate"] = "Bearer"
    return r


def error_reply(exc: Exception) -> JSONResponse | None:
    """Our reply to a fleetpulse or value error, or None for anything else (a bug)."""
    for cls, status in _MAPPED:
        if isinstance(exc, cls):
            return reply(status, str(exc))
    return None


def statuses(path: str, methods: set[str]) -> list[int]:
    """The error statuses a route can answer."""
    out = [401, 403, 422, 500]
    if "{" in path:
        out.append(404)
    if methods & {"POST", "PUT", "PATCH"}:  # every such route of ours takes a JSON body
        out += [400, 413]
    if methods & {"POST", "PUT", "PATCH", "DELETE"}:
        out += [409, 503]
    return sorted(set(out))


class DocumentedRoute(APIRoute):
    """An APIRoute whose OpenAPI entry lists every error status it can answer, each with
    `ErrorBody` (this also replaces FastAPI's own ``{detail}`` 422 schema)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kw: Any) -> None:
        methods = {m.upper() for m in kw.get("methods") or ["GET"]}
        documented: dict[int | str, dict[str, Any]] = {
            s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]}
            for s in statuses(path, methods)
        }
        kw["responses"] = documented | dict(kw.get("responses") or {})
        super().__init__(path, endpoint, **kw)


class _Guard:
    """Outermost ASGI layer: refuses bodies over `MAX_BODY` (413), and turns an unexpected
    exception into our 500, logged here once (Starlette's own handler would re-raise it to
    the server, which logs it a second time)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await reply(413, f"the body is over {MAX_BODY} bytes")(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            ref = os.urandom(4).hex()
            logger.exception("%s %s failed (ref %s)", scope["method"], scope["path"], ref)
            if started:
                return  # the client sees a cut reply; the log has the traceback, once
            msg = f"internal error (ref {ref}); the server log has details"
            await reply(500, msg)(scope, receive, send)


def install(app: FastAPI, gate: Gate) -> None:
    """Our error shape for every error, and the 401/403-before-400/422 order.

    ``gate(request)`` raises AuthenticationError or AccessDeniedError when the matched
    route's caller may not proceed; it runs when the body failed to parse, before that is
    reported.
    """

    async def gated(request: Request, status: int, message: str) -> JSONResponse:
        try:
            await gate(request)
        except (AuthenticationError, AccessDeniedError) as exc:
            refused = error_reply(exc)
            assert refused is not None
            return refused
        return reply(status, message)

    for cls, _status in _MAPPED:

        async def handle(request: Request, exc: Exception) -> Any:
            return error_reply(exc)

        app.add_exception_handler(cls, handle)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return await gated(request, 400, "the body is not valid JSON")
        parts = []
        for err in errors:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        return reply(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI: a body it could not read (not UTF-8)
            return await gated(request, 400, "the body is not UTF-8 JSON")
        message = {
            404: f"no route {request.url.path}: see /docs for the API",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return reply(exc.status_code, message, dict(exc.headers or {}))

    app.add_middleware(_Guard)
