"""The console's actions: sign-in and sign-out, and every button, each one a `LocalGateway`
call, the same the API's route makes (so the role is checked again and the action audited
exactly as over the API). A form posts its CSRF token; success redirects back (303) to the
page it came from with a note of what was done.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from fleetpulse.console.app import PEOPLE, Console, actor, form_of, gateway
from fleetpulse.console.session import COOKIE, safe_next, same_origin
from fleetpulse.contract.errors import AccessDeniedError, AuthenticationError, NotFoundError
from fleetpulse.control.access import split_token

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 60, "s": 1, "m": 60, "h": 3600, "d": 86400}
BREAKER_CHANGES = {"force-open": "force_open", "disable": "disable", "reset": "reset"}


def parse_duration(text: str) -> float:
    """Seconds in ``90m``, ``2h``, ``1d`` or ``30`` (minutes).

    >>> parse_duration("2h"), parse_duration("30")
    (7200.0, 1800.0)
    """
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError(f"duration {text!r}: write e.g. 30m, 2h or 1d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_matchers(text: str) -> dict[str, str]:
    """``agent_id=triage*, severity=warning`` as a dict of label globs."""
    out = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        k, sep, v = part.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise ValueError(f"matcher {part.strip()!r}: write label=glob, e.g. agent_id=triage*")
        out[k.strip()] = v.strip()
    if not out:
        raise ValueError("a silence needs at least one label=glob matcher")
    return out


def _back(console: Console, form: dict[str, str], done: str) -> Response:
    target = safe_next(form.get("next"), console.base)
    path, _, query = target.partition("?")
    kept = "&".join(p for p in query.split("&") if p and not p.startswith("done="))
    joined = "&".join(p for p in (kept, urlencode({"done": done})) if p)
    return RedirectResponse(f"{path}?{joined}", 303)


def install(app: FastAPI, console: Console) -> None:
    @app.post("/login")
    async def login(request: Request) -> Response:
        if not same_origin(request.headers.get("origin"), request.headers.get("host")):
            raise AccessDeniedError("", "", "login", "sign-in from another site refused")
        form = await form_of(request)
        try:
            caller = console.plane.authenticate(form.get("token", "").strip() or None)
        except AuthenticationError as exc:
            nxt = safe_next(form.get("next"), console.base)
            return console.render(request, "login.html", 401, next=nxt, error=str(exc))
        if caller.role not in PEOPLE:
            raise AccessDeniedError(
                caller.name, caller.role, "console", "service identities do not use the console"
            )
        token_id, _ = split_token(form["token"])
        cookie = console.keys.issue(token_id, now_s=time.time(), ttl_s=console.ttl_s)
        response = RedirectResponse(safe_next(form.get("next"), console.base), 303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=console.ttl_s,
            path=console.base,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await actor(console, request)
        response = RedirectResponse(f"{console.base}/login", 303)
        response.delete_cookie(COOKIE, path=console.base)
        return response

    @app.post("/agents/{agent_id}/{verb}")
    async def agent_action(request: Request, agent_id: str, verb: str) -> Response:
        v, form = await actor(console, request)
        gw = gateway(console, v)
        reason = form.get("reason", "").strip()
        if verb in ("pause", "resume"):
            if not reason:
                raise ValueError(f"say why you {verb} {agent_id} (reason)")
            gw.set_paused(agent_id, verb == "pause", reason)
            done = f"{agent_id} {'paused' if verb == 'pause' else 'resumed'}"
        elif verb == "activate":
            version = int(form.get("version") or 0)
            if version < 1:
                raise ValueError("choose a version to activate")
            gw.activate(agent_id, version, form.get("label") or "production", reason)
            done = f"{agent_id} v{version} activated"
        elif verb == "rollback":
            row = gw.rollback(agent_id, reason)
            done = f"{agent_id} rolled back to v{row['version']}"
        else:
            raise NotFoundError(f"no action {verb!r} on agents")
        return _back(console, form, done)

    @app.post("/breakers/change")
    async def breaker(request: Request) -> Response:
        v, form = await actor(console, request)
        change = BREAKER_CHANGES.get(form.get("change", ""))
        if change is None:
            raise ValueError("change: force-open, disable or reset")
        breaker_id = form.get("breaker_id", "").strip()
        gateway(console, v).set_breaker(breaker_id, change, form.get("reason", "").strip())
        return _back(console, form, f"{breaker_id}: {form['change']}")

    @app.post("/alerts/ack")
    async def ack(request: Request) -> Response:
        v, form = await actor(console, request)
        key = form.get("dedup_key", "").strip()
        if not key:
            raise ValueError("which alert? (dedup_key)")
        gateway(console, v).ack(key, form.get("reason", "").strip())
        return _back(console, form, f"acknowledged {key}")

    @app.post("/silences")
    async def silence(request: Request) -> Response:
        v, form = await actor(console, request)
        s = gateway(console, v).silence(
            parse_matchers(form.get("matchers", "")),
            parse_duration(form.get("duration", "")),
            form.get("reason", "").strip(),
        )
        return _back(console, form, f"silence {s['silence_id']} created")

    @app.post("/silences/remove")
    async def unsilence(request: Request) -> Response:
        v, form = await actor(console, request)
        sid = form.get("silence_id", "").strip()
        gateway(console, v).unsilence(sid, form.get("reason", "").strip())
        return _back(console, form, f"silence {sid} removed")

    @app.post("/approvals/decide")
    async def decide(request: Request) -> Response:
        v, form = await actor(console, request)
        decision = form.get("decision")
        if decision not in ("approve", "deny"):
            raise ValueError("decision: approve or deny")
        aid = form.get("approval_id", "").strip()
        gateway(console, v).decide(aid, decision == "approve", form.get("reason", "").strip())
        return _back(console, form, f"{aid} {decision}d")
