"""The console's fleet pages: sign-in, overview, agents, an agent, a task, cost.

Every page asks the plane whether the viewer's role may see it (``agents.view`` here), so a
refusal is audited as the API's are; figures come from ClickHouse (`history`), live state
(breakers, pauses, alerts, approvals, versions) from the views the API process follows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from fleetpulse.console import charts, history, live, ops
from fleetpulse.console.app import Console, Viewer, current_viewer, gateway
from fleetpulse.console.health import budget_rows, firing_by_agent, health
from fleetpulse.console.history import Filter
from fleetpulse.console.session import safe_next
from fleetpulse.contract.errors import NotFoundError

SORTABLE = ("agent_id", "role", "team", "version", "health", "tasks", "failure_rate", "cost_usd")


def viewer_for(console: Console, request: Request, action: str) -> Viewer:
    """The signed-in viewer, if its role may ``action`` (refusals audited by the plane)."""
    v = current_viewer(console, request)
    console.plane.require(v.caller, action)
    return v


def filter_of(request: Request) -> Filter:
    q = request.query_params
    return Filter.parse(q.get("range"), q.get("label"))


def plots(s: dict[str, Any], markers: list[tuple[float, str]] | None = None) -> list[str]:
    xs, m = s["xs"], markers or []
    return [
        charts.line_chart(charts.Plot("tasks", xs, [charts.Series("tasks", s["tasks"])], "", m)),
        charts.line_chart(
            charts.Plot(
                "failure rate", xs, [charts.Series("failure rate", s["failure_rate"])], "%", m
            )
        ),
        charts.line_chart(
            charts.Plot(
                "latency (ms)",
                xs,
                [charts.Series(p, s[p]) for p in ("p50", "p95", "p99")],
                "ms",
                m,
            )
        ),
        charts.line_chart(charts.Plot("cost", xs, [charts.Series("cost", s["cost_usd"])], "$", m)),
    ]


def _agent_rows(
    console: Console, v: Viewer, f: Filter, analyst: Any, *, sparks: bool = True
) -> list[dict[str, Any]]:
    plane, caller = console.plane, v.caller
    paused = {p.agent_id for p in plane.pauses(caller) if p.paused}
    firing = firing_by_agent(plane.alerts(caller)) if caller.can("alerts.view") else {}
    db = console.database
    totals = history.agent_totals(analyst, db, f, quantiles=False) if analyst else {}
    lines = history.sparklines(analyst, db, f) if analyst and sparks else {}
    policy = plane.policy

    def bundle_of(s: Any, agent_id: str) -> dict[str, Any]:
        active = s.active(agent_id)
        return active.bundle if active else {}

    rows = []
    for a in plane.agents(caller):
        agent_id = a["agent_id"]
        b = plane.log.read(lambda s, i=agent_id: bundle_of(s, i))  # type: ignore[misc]
        t = totals.get(agent_id)
        rows.append(
            {
                "agent_id": agent_id,
                "role": b.get("role") or "",
                "team": policy.alerts.team_of(agent_id) or "",
                "labels": a["labels"],
                "version": a["labels"].get("production", ""),
                "health": health(t, agent_id in paused, firing.get(agent_id, set())),
                "tasks": t["tasks"] if t else 0,
                "failure_rate": t["failure_rate"] if t else 0.0,
                "cost_usd": t["cost_usd"] if t else 0.0,
                "spark": charts.sparkline(lines.get(agent_id, [])),
            }
        )
    return rows


def install(app: FastAPI, console: Console) -> None:
    plane = console.plane
    db = console.database

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "") -> Response:
        return console.render(request, "login.html", next=safe_next(next, console.base))

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> Response:
        v = viewer_for(console, request, "agents.view")
        f = filter_of(request)
        with console.history() as analyst:
            rows = _agent_rows(console, v, f, analyst, sparks=False)
            fleet = history.fleet_totals(analyst, db, f) if analyst else None
            s = history.series(analyst, db, f) if analyst else None
            today = history.cost_today(analyst, db, f) if analyst else {}
        tiles = {h: sum(1 for r in rows if r["health"] == h) for h in
                 ("healthy", "degraded", "failing", "paused", "not_run", "idle")}  # fmt: skip
        spent = sum(today.values())
        budgets = _daily_budgets(console, rows)
        snap = live.snapshot(plane, v.caller)
        return console.render(
            request,
            "overview.html",
            f=f,
            tiles=tiles,
            fleet=fleet,
            plots=plots(s) if s else [],
            cost_today=spent,
            budget_today=sum(budgets.values()),
            counts=snap["counts"],
            live_versions=snap["versions"],
            top_failures=sorted(rows, key=lambda r: -r["tasks"] * r["failure_rate"])[:5],
            top_cost=sorted(rows, key=lambda r: -r["cost_usd"])[:5],
            has_history=analyst is not None,
        )

    @app.get("/agents", response_class=HTMLResponse)
    def agents(request: Request, sort: str = "agent_id", q: str = "", desc: int = 0) -> Response:
        v = viewer_for(console, request, "agents.view")
        f = filter_of(request)
        with console.history() as analyst:
            rows = _agent_rows(console, v, f, analyst)
        needle = q.strip().lower()
        if needle:
            keys = ("agent_id", "role", "team", "health", "version")
            rows = [r for r in rows if needle in " ".join(str(r[k]) for k in keys).lower()]
        if sort in SORTABLE:
            rows.sort(key=lambda r: (r[sort] is None, r[sort]), reverse=bool(desc))
        snap = live.snapshot(plane, v.caller)
        return console.render(
            request, "agents.html", f=f, rows=rows, sort=sort, q=q, desc=desc,
            live_versions=snap["versions"], counts=snap["counts"],
        )  # fmt: skip

    @app.get("/agents/{agent_id}", response_class=HTMLResponse)
    def agent(request: Request, agent_id: str, diff_from: int = 0, diff_to: int = 0) -> Response:
        v = viewer_for(console, request, "agents.view")
        f = filter_of(request)
        gw = gateway(console, v)
        versions = gw.history(agent_id)  # 404 for an unknown agent
        labels = gw.labels(agent_id)
        pause = next((p for p in plane.pauses(v.caller) if p.agent_id == agent_id), None)
        activations = plane.log.read(
            lambda s: [
                (e["at"] / 1e6, f"{e['action']} v{e.get('version')} by {e['actor']}")
                for e in s.audit
                if e.get("agent_id") == agent_id and e["action"] in ("activated", "rolled_back")
                and s.outcomes.get(e["event_id"]) is None
            ]
        )  # fmt: skip
        breakers = [
            b for b in gw.breakers() if f"agent:{agent_id}" in b["id"]
        ] if v.can("breakers.view") else []  # fmt: skip
        diff = gw.diff(agent_id, diff_from or None, diff_to or None)["diff"]
        with console.history() as analyst:
            data: dict[str, Any] = {}
            if analyst is not None:
                data["plots"] = plots(history.series(analyst, db, f, agent_id), activations)
                data["releases"] = history.versions(analyst, db, f, agent_id)
                data["integrations"] = history.agent_integrations(analyst, db, f, agent_id)
                data["tasks"] = history.recent_tasks(analyst, db, f, agent_id)
                one = history.agent_totals(analyst, db, f, agent_id=agent_id)
                data["totals"] = one.get(agent_id)
        snap = live.snapshot(plane, v.caller)
        return console.render(
            request, "agent.html", f=f, agent_id=agent_id, versions=versions[::-1],
            labels=labels, pause=pause, breakers=breakers, diff=diff, data=data,
            activations=[(datetime.fromtimestamp(t, UTC).isoformat(), s) for t, s in activations],
            live_versions=snap["versions"], counts=snap["counts"], has_history=bool(data),
        )  # fmt: skip

    @app.get("/agents/{agent_id}/tasks/{task_id}", response_class=HTMLResponse)
    def task(request: Request, agent_id: str, task_id: str) -> Response:
        v = viewer_for(console, request, "agents.view")
        gateway(console, v).history(agent_id)
        with console.history() as analyst:
            found = history.task(analyst, db, agent_id, task_id) if analyst else None
        if found is None:
            raise NotFoundError(f"no task {task_id!r} of {agent_id} in ClickHouse")
        return console.render(
            request, "task.html", agent_id=agent_id, t=found,
            waterfall=charts.waterfall(found["calls"]) if found["calls"] else "",
            live_versions={}, counts={}, f=filter_of(request),
        )  # fmt: skip

    @app.get("/cost", response_class=HTMLResponse)
    def cost(request: Request) -> Response:
        v = viewer_for(console, request, "agents.view")
        f = filter_of(request)
        with console.history() as analyst:
            by: dict[str, list[dict[str, Any]]] = {}
            spent: dict[str, float] = {}
            if analyst is not None:
                for dim in ("agent_id", "model", "integration"):
                    by[dim] = history.cost_by(analyst, db, f, dim)
                spent = history.cost_today(analyst, db, f)
        team_of = plane.policy.alerts.team_of
        teams: dict[str, float] = {}
        for r in by.get("agent_id", []):
            team = team_of(str(r["key"])) or "(no team)"
            teams[team] = teams.get(team, 0.0) + r["cost_usd"]
        by["team"] = [{"key": k, "n": "", "cost_usd": c} for k, c in
                      sorted(teams.items(), key=lambda kv: -kv[1])]  # fmt: skip
        rows = [{"agent_id": a["agent_id"]} for a in plane.agents(v.caller)]
        team_budgets = {
            a["agent_id"]: (t, plane.policy.alerts.teams[t].daily_usd)
            for a in rows if (t := team_of(a["agent_id"]))
        }  # fmt: skip
        midnight = f.now.replace(hour=0, minute=0, second=0, microsecond=0)
        gone = (f.now - midnight).total_seconds() / 86400
        budgets = budget_rows(spent, _daily_budgets(console, rows), team_budgets, gone)
        snap = live.snapshot(plane, v.caller)
        return console.render(
            request, "cost.html", f=f, by=by, budgets=budgets, has_history=bool(by.get("model")),
            live_versions=snap["versions"], counts=snap["counts"],
        )  # fmt: skip

    @app.get("/live")
    async def live_events(request: Request) -> Response:
        v = current_viewer(console, request)
        body = live.stream(lambda: live.snapshot(plane, v.caller), request.is_disconnected)
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/logout")
    def logout_get(request: Request) -> Response:
        return RedirectResponse(f"{console.base}/", 303)

    ops.install(app, console)


def _daily_budgets(console: Console, rows: list[dict[str, Any]]) -> dict[str, float]:
    """agent id -> daily USD: the production bundle's budget, else the policy's."""
    policy_budgets = console.plane.policy.alerts.budgets
    out = {}
    for r in rows:
        agent_id = r["agent_id"]
        active = console.plane.log.read(lambda s, a=agent_id: s.active(a))  # type: ignore[misc]
        bundle_budget = (active.bundle.get("budget") or {}) if active else {}
        daily = bundle_budget.get("daily_usd")
        if daily is None and agent_id in policy_budgets:
            daily = policy_budgets[agent_id].daily_usd
        if daily:
            out[agent_id] = float(daily)
    return out
