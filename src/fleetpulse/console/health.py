"""How the console sums an agent up in one word, and budgets against spend. Pure.

Health, first match wins:

    paused      an operator paused it
    not_run     its schedule alert fires (it did not run when expected)
    failing     failure rate >= 50 % over the period (with at least MIN_TASKS tasks)
    degraded    failure rate >= 10 %, or an alert on it fires
    healthy     it ran and none of the above
    idle        no task in the period and nothing firing
"""

from __future__ import annotations

from typing import Any

HEALTH = ("healthy", "degraded", "failing", "paused", "not_run", "idle")
FAILING, DEGRADED, MIN_TASKS = 0.5, 0.1, 5


def health(totals: dict[str, Any] | None, paused: bool, firing_kinds: set[str]) -> str:
    """One agent's health from its figures over the period, its pause and its firing alerts.

    >>> health({"tasks": 100, "failure_rate": 0.6}, False, set())
    'failing'
    >>> health({"tasks": 100, "failure_rate": 0.0}, False, {"latency_degradation"})
    'degraded'
    """
    if paused:
        return "paused"
    if "schedule" in firing_kinds:
        return "not_run"
    tasks = int(totals["tasks"]) if totals else 0
    rate = float(totals["failure_rate"]) if totals else 0.0
    if tasks >= MIN_TASKS and rate >= FAILING:
        return "failing"
    if (tasks >= MIN_TASKS and rate >= DEGRADED) or firing_kinds:
        return "degraded"
    return "healthy" if tasks else "idle"


def firing_by_agent(alerts: list[dict[str, Any]]) -> dict[str, set[str]]:
    """agent id -> kinds of its firing alerts (suppressed ones included: still true)."""
    out: dict[str, set[str]] = {}
    for a in alerts:
        if a["status"] != "firing":
            continue
        agent = (a.get("labels") or {}).get("agent_id") or (
            a["scope_id"] if a.get("scope_type") == "agent" else ""
        )
        if agent:
            out.setdefault(agent, set()).add(a["kind"])
    return out


def budget_rows(
    spent_today: dict[str, float],
    budgets: dict[str, float],
    teams: dict[str, tuple[str, float | None]],
    day_fraction: float = 1.0,
) -> list[dict[str, Any]]:
    """Daily budgets against today's spend, agents' then teams', most used first, with the
    burn: the spend projected to midnight at today's pace (``day_fraction`` of the UTC day
    gone).

    ``budgets``: agent id -> daily USD; ``teams``: agent id -> (team, team daily USD).

    >>> r = budget_rows({"a": 5.0}, {"a": 10.0}, {}, day_fraction=0.25)[0]
    >>> r["used"], r["projected_used"]
    (0.5, 2.0)
    """
    rows: list[dict[str, Any]] = []
    for agent, daily in budgets.items():
        spent = spent_today.get(agent, 0.0)
        rows.append({"scope": "agent", "name": agent, "budget_usd": daily, "spent_usd": spent,
                     "used": spent / daily if daily else 0.0})  # fmt: skip
    team_spend: dict[str, float] = {}
    team_budget: dict[str, float] = {}
    for agent, (team, team_daily) in teams.items():
        team_spend[team] = team_spend.get(team, 0.0) + spent_today.get(agent, 0.0)
        if team_daily:
            team_budget[team] = team_daily
    for team, daily in team_budget.items():
        spent = team_spend.get(team, 0.0)
        rows.append({"scope": "team", "name": team, "budget_usd": daily, "spent_usd": spent,
                     "used": spent / daily})  # fmt: skip
    for r in rows:
        r["projected_usd"] = r["spent_usd"] / max(day_fraction, 1 / 96)  # from 15 min on
        r["projected_used"] = r["projected_usd"] / r["budget_usd"] if r["budget_usd"] else 0.0
    return sorted(rows, key=lambda r: (-r["used"], r["scope"], r["name"]))
