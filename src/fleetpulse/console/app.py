"""The console's web app, mounted by the control API under ``/ui``: sessions, the checks
every request passes, error pages, templates and static files.

Who may see a page or take an action is decided where the API decides it: pages ask
``ControlPlane.require`` (a refusal is audited as ``access_denied``, as the API's are) and
actions call the same `LocalGateway` methods as the API's routes, so they are checked again
and audited exactly like the API call they stand for. The templates only hide what a role
may not use. Errors become friendly HTML pages with the status code; an unexpected one is
logged with its traceback and shows an id to find it in the log, never the traceback.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import quote as urlquote

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleetpulse.console.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    DEFAULT_TTL_S,
    Session,
    SessionKeys,
    same_origin,
)
from fleetpulse.contract.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    NotFoundError,
)
from fleetpulse.control.access import Caller
from fleetpulse.control.gateway import AuditFn, LocalGateway
from fleetpulse.control.plane import ControlPlane
from fleetpulse.sink.query import Analyst, endpoint, open_analyst

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
History = Callable[[], Analyst | None]
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
# console roles: an agent's service identity has no pages to see
PEOPLE = ("engineering", "operations", "compliance", "approver")


@dataclass
class Console:
    """What the console's routes share."""

    plane: ControlPlane
    audit: AuditFn
    history_source: History
    database: str = "fleetpulse"
    base: str = "/ui"
    ttl_s: int = DEFAULT_TTL_S
    keys: SessionKeys = field(default_factory=lambda: SessionKeys(os.urandom(32)))
    templates: jinja2.Environment = field(
        default_factory=lambda: jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
    )

    @contextmanager
    def history(self) -> Iterator[Analyst | None]:
        """A read-only ClickHouse connection, or None when no store answers (no sink)."""
        analyst = self.history_source()
        try:
            yield analyst
        finally:
            if analyst is not None:
                analyst.close()

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        viewer: Viewer | None = getattr(request.state, "viewer", None)
        html = self.templates.get_template(name).render(
            base=self.base, viewer=viewer, request=request, path=request.url.path, **ctx
        )
        return HTMLResponse(html, status_code=status)


@dataclass(frozen=True)
class Viewer:
    """The signed-in person behind a request."""

    caller: Caller
    session: Session
    csrf: str

    def can(self, action: str) -> bool:
        return self.caller.can(action)


class SignInNeeded(Exception):
    pass


class BadCsrf(Exception):
    pass


def current_viewer(console: Console, request: Request) -> Viewer:
    """The viewer whose session cookie came with ``request``; SignInNeeded otherwise (no,
    forged or expired cookie, or a principal revoked since)."""
    session = console.keys.verify(request.cookies.get(COOKIE), now_s=time.time())
    if session is None:
        raise SignInNeeded()
    p = console.plane.log.read(lambda s: s.principal_by_token_id(session.token_id))
    if p is None or p.role not in PEOPLE:
        raise SignInNeeded()
    viewer = Viewer(Caller(p.name, p.role, p.agent_id), session, console.keys.csrf(session))
    request.state.viewer = viewer
    return viewer


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form body (the console's forms post nothing else)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    if len(body) > 64_000:
        raise ValueError("form too large")
    return dict(parse_qsl(body, keep_blank_values=True))


async def actor(console: Console, request: Request) -> tuple[Viewer, dict[str, str]]:
    """For a mutating request: the viewer, once its session, origin and CSRF token check out,
    and the form it sent."""
    if not same_origin(request.headers.get("origin"), request.headers.get("host")):
        raise BadCsrf()
    viewer = current_viewer(console, request)
    form = await form_of(request)
    given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not console.keys.csrf_ok(viewer.session, given):
        raise BadCsrf()
    return viewer, form


def gateway(console: Console, viewer: Viewer) -> LocalGateway:
    return LocalGateway(console.plane, viewer.caller, console.audit)


def clickhouse_history(settings: Any) -> History:
    """History for ``fleetpulse api run``: the ClickHouse server, or the embedded store's owner
    (the sink) through its read-only endpoint; None while neither answers (the API process
    never opens the embedded store itself: the sink could not start while it held it)."""

    def source() -> Analyst | None:
        if settings.clickhouse_url or endpoint(settings.store_dir) is not None:
            return open_analyst(settings, wait_s=0)
        return None

    return source


def install_errors(app: FastAPI, console: Console) -> None:
    """The console's error pages (sign-in redirects, 403, 404, 422, 500 with a reference)."""

    def page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return console.render(request, "error.html", status, title=title, message=message)

    async def sign_in(request: Request, exc: Exception) -> Response:
        if request.method == "GET":
            where = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{console.base}/login?next={urlquote(where)}", 303)
        return page(request, 401, "Sign in first", "Your session ended: sign in again.")

    app.add_exception_handler(SignInNeeded, sign_in)
    app.add_exception_handler(AuthenticationError, sign_in)

    statuses: list[tuple[type[Exception], int, str]] = [
        (BadCsrf, 403, "Form expired"),
        (AccessDeniedError, 403, "Not allowed"),
        (NotFoundError, 404, "Not found"),
        (ConflictError, 409, "Conflict"),
        (ValueError, 422, "Invalid input"),
        (ConfigError, 422, "Invalid input"),
    ]
    for cls, status, title in statuses:

        async def handle(
            request: Request, exc: Exception, s: int = status, t: str = title
        ) -> Response:
            if isinstance(exc, BadCsrf):
                msg = "The form was stale or came from another site. Reload the page and retry."
            else:
                msg = str(exc) or t
            return page(request, s, t, msg)

        app.add_exception_handler(cls, handle)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return page(request, exc.status_code, title, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _422(request: Request, exc: RequestValidationError) -> Response:
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        ]
        return page(request, 422, "Invalid input", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _500(request: Request, exc: Exception) -> Response:
        ref = os.urandom(4).hex()
        logger.exception("console %s %s failed (ref %s)", request.method, request.url.path, ref)
        return page(
            request,
            500,
            "Something went wrong",
            f"Internal error (ref {ref}); the server log has the details.",
        )
