"""The console's operations pages: integrations and breakers, alerts, approvals, audit.

Lists come from the same `LocalGateway` calls as the API's ``GET`` routes (so a role sees
exactly what the API would show it); history (breaker transitions, integration figures,
calls on a record) from ClickHouse.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from fleetpulse.console import history, live
from fleetpulse.console.app import Console, Viewer, current_viewer, gateway
from fleetpulse.console.history import Filter
from fleetpulse.control.audit import COLUMNS, AuditQuery


def _viewer(console: Console, request: Request, action: str) -> Viewer:
    v = current_viewer(console, request)
    console.plane.require(v.caller, action)
    return v


def _filter(request: Request) -> Filter:
    q = request.query_params
    return Filter.parse(q.get("range"), q.get("label"))


def _time(text: str | None, what: str) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what} {text!r}: write a time like 2026-01-31T14:00") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def labels_match(labels: dict[str, str], f: Filter) -> bool:
    """An alert passes the filter's label selectors unless it carries a selected label with
    another value (an alert without the label is not about one team or customer).

    >>> labels_match({"team": "support"}, Filter(labels=(("team", "billing"),)))
    False
    """
    return all(labels.get(k, v) == v for k, v in f.labels)


def _us(value: Any) -> str:
    if not value:
        return ""
    return datetime.fromtimestamp(int(value) / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")


def install(app: FastAPI, console: Console) -> None:
    plane = console.plane
    db = console.database
    console.templates.filters["us"] = _us

    def render(request: Request, v: Viewer, name: str, **ctx: Any) -> Response:
        snap = live.snapshot(plane, v.caller)
        return console.render(
            request, name, live_versions=snap["versions"], counts=snap["counts"], **ctx
        )

    @app.get("/breakers", response_class=HTMLResponse)
    def breakers(request: Request) -> Response:
        v = _viewer(console, request, "breakers.view")
        f = _filter(request)
        rows = gateway(console, v).breakers()
        with console.history() as analyst:
            integrations = history.integrations(analyst, db, f) if analyst else None
            moves = history.transitions(analyst, db, f) if analyst else None
        return render(
            request, v, "breakers.html", f=f, breakers=rows, integrations=integrations,
            transitions=moves,
        )  # fmt: skip

    @app.get("/alerts", response_class=HTMLResponse)
    def alerts(request: Request) -> Response:
        v = _viewer(console, request, "alerts.view")
        f = _filter(request)
        gw = gateway(console, v)
        every = [a for a in gw.alerts(None) if labels_match(a.get("labels") or {}, f)]
        firing = [a for a in every if a["status"] == "firing"]
        since_us = f.since.timestamp() * 1e6
        recent = sorted(
            (a for a in every if a["status"] != "firing" and a["emitted_at"] >= since_us),
            key=lambda a: -a["emitted_at"],
        )[:50]
        order = {"critical": 0, "warning": 1, "info": 2}
        firing.sort(key=lambda a: (order.get(a["severity"], 3), a["started_at"]))
        return render(
            request, v, "alerts.html", f=f, firing=firing, recent=recent,
            silences=gw.silences(False),
        )  # fmt: skip

    @app.get("/approvals", response_class=HTMLResponse)
    def approvals(request: Request) -> Response:
        v = _viewer(console, request, "approvals.view")
        f = _filter(request)
        since_us = f.since.timestamp() * 1e6
        every = gateway(console, v).approvals(None)
        pending = [a for a in every if a["status"] == "pending"]
        pending.sort(key=lambda a: a["requested_at_us"])
        decided = [
            a
            for a in every
            if a["status"] != "pending" and (a["decided_at_us"] or a["expires_at_us"]) >= since_us
        ]
        decided.sort(key=lambda a: -(a["decided_at_us"] or a["expires_at_us"]))
        decided = decided[:100]
        return render(request, v, "approvals.html", f=f, pending=pending, decided=decided)

    def audit_answer(v: Viewer, request: Request) -> dict[str, Any]:
        q = request.query_params
        agent = (q.get("agent") or "").strip() or None
        principal = (q.get("principal") or "").strip() or None
        target = (q.get("target") or "").strip() or None
        since = _time(q.get("since"), "since")
        until = _time(q.get("until"), "until")
        if since and until and since >= until:
            raise ValueError("since must be before until")
        gw = gateway(console, v)  # audit.read is checked (and a refusal audited) here
        actions = gw.audit(AuditQuery(agent, principal, since, until, 1000))
        calls: list[dict[str, Any]] | None = None
        if target:
            if not agent:
                raise ValueError("a target record needs the agent that touched it (agent)")
            lo = since or datetime.now(UTC) - timedelta(days=7)
            hi = until or datetime.now(UTC) + timedelta(seconds=1)
            with console.history() as analyst:
                if analyst is not None:
                    calls = history.calls_on_target(analyst, db, agent, target, lo, hi)
        asked = any((agent, principal, target, since, until))
        return {"actions": actions, "calls": calls, "asked": asked, "target": target,
                "form": {k: q.get(k) or "" for k in ("agent", "principal", "target", "since",
                                                      "until")}}  # fmt: skip

    @app.get("/audit", response_class=HTMLResponse)
    def audit(request: Request) -> Response:
        v = _viewer(console, request, "audit.read")
        return render(request, v, "audit.html", f=_filter(request), **audit_answer(v, request))

    @app.get("/audit.csv")
    def audit_csv(request: Request) -> Response:
        v = _viewer(console, request, "audit.read")
        answer = audit_answer(v, request)
        out = io.StringIO()
        w = csv.writer(out)
        extra = ["integration", "operation", "access", "status", "task_id", "call_id"]
        w.writerow(["kind", *COLUMNS, *extra])
        for r in answer["actions"]:
            w.writerow(["governance", *(_cell(r.get(c)) for c in COLUMNS)] + [""] * len(extra))
        agent, target = answer["form"]["agent"], answer["target"]
        for c in answer["calls"] or []:
            row = ["tool_call", c["at"], agent, "agent", c["operation"], "record", target, agent]
            row += [c["agent_version"], c["error_type"], c["status"]]
            row += [c[k] for k in ("integration", "operation", "access", "status", "task_id")]
            w.writerow([_cell(x) for x in [*row, c["call_id"]]])
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="fleetpulse-audit.csv"'},
        )


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
