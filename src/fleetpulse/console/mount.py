"""The console put together: the app with its pages, actions, error pages and headers, mounted
under ``/ui`` of the control API (``fleetpulse api run``, ``console/server.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from fleetpulse.console import actions, pages
from fleetpulse.console.app import CSP, HERE, Console, History, install_errors
from fleetpulse.console.session import SessionKeys
from fleetpulse.control.gateway import AuditFn
from fleetpulse.control.plane import ControlPlane


def create_console(console: Console) -> FastAPI:
    """The console app; the API mounts it at ``console.base``."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = console
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    pages.install(app, console)
    actions.install(app, console)
    install_errors(app, console)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith(f"{console.base}/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def mount_console(
    app: FastAPI,
    plane: ControlPlane,
    audit: AuditFn,
    history: History,
    *,
    database: str = "fleetpulse",
    key: bytes | None = None,
) -> Console:
    """Serve the console under ``/ui`` of the control API ``app``."""
    console = Console(plane, audit, history, database=database)
    if key is not None:
        console.keys = SessionKeys(key)
    app.mount(console.base, create_console(console))
    return console
