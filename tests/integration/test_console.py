"""The console over HTTP against a seeded stack: sign-in and sessions, CSRF, and the role x
page x action matrix (exact status; controls present or absent in the HTML; every action
audited as the API's)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fleetpulse.contract.bundles import parse_bundle
from fleetpulse.contract.governance import payload
from fleetpulse.control.access import ACTIONS

from .console_support import ADMIN, PEOPLE, ConsoleStack, console_stack, csrf_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory) -> Iterator[ConsoleStack]:
    with console_stack(kafka.bootstrap_servers, tmp_path_factory.mktemp("console")) as s:
        yield s


def _task_path(stack: ConsoleStack) -> str:
    return "/ui/agents/triage/tasks/t0"


# -- pages ----------------------------------------------------------------------------------

# page, action that gates it, controls (HTML marker -> action that shows it)
PAGES: list[tuple[str, str, dict[str, str]]] = [
    ("/ui/", "agents.view", {}),
    ("/ui/agents", "agents.view", {}),
    ("/ui/agents/triage", "agents.view", {
        'id="pause-button"': "agents.pause", 'id="rollback-button"': "agents.rollback",
        'class="activate-button"': "agents.activate"}),
    ("/ui/agents/triage/tasks/t0", "agents.view", {}),
    ("/ui/breakers", "breakers.view", {'id="breaker-any"': "breakers.change"}),
    ("/ui/alerts", "alerts.view", {
        'class="ack-button"': "alerts.ack", 'id="silence-form"': "alerts.silence"}),
    ("/ui/approvals", "approvals.view", {'class="approve-button"': "approvals.decide"}),
    ("/ui/cost", "agents.view", {}),
    ("/ui/audit", "audit.read", {}),
    ("/ui/audit.csv", "audit.read", {}),
]  # fmt: skip
NAV = {"/ui/audit": "audit.read", "/ui/alerts": "alerts.view", "/ui/breakers": "breakers.view"}


def test_role_by_page_matrix(stack: ConsoleStack) -> None:
    """Every page x every role: 200 with exactly the controls the role may use, or 403 (a
    friendly page, audited); not signed in: 303 to the sign-in page."""
    stack.fire("triage")
    stack.plane.request_approval(ADMIN, "triage", "stripe.refund", summary="refund #42")
    failures = []
    for role in PEOPLE:
        client = stack.client(role)
        for path, gate, controls in PAGES:
            r = client.get(path)
            allowed = role in ACTIONS[gate]
            if r.status_code != (200 if allowed else 403):
                failures.append(f"{path} as {role}: {r.status_code}")
                continue
            assert "Traceback" not in r.text
            if not allowed:
                assert "Not allowed" in r.text and "<html" in r.text
                continue
            for marker, action in controls.items():
                if (marker in r.text) != (role in ACTIONS[action]):
                    failures.append(f"{path} as {role}: {marker} shown={marker in r.text}")
            if path == "/ui/":
                for link, action in NAV.items():
                    shown = f'href="{link}?' in r.text
                    if shown != (role in ACTIONS[action]):
                        failures.append(f"nav {link} as {role}: shown={shown}")
    anonymous = stack.client()
    for path, _, _ in PAGES:
        r = anonymous.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
    assert not failures, "\n".join(failures)
    denied = [e for e in stack.audit_rows("p-approver") if e["action"] == "access_denied"]
    assert {payload(e)["action"] for e in denied} >= {"alerts.view", "audit.read"}


def test_overview_shows_the_seeded_figures_and_plots(stack: ConsoleStack) -> None:
    html = stack.client("operations").get("/ui/?range=1h").text
    tasks = int(re.search(r"\((\d+) in 1h\)", html).group(1))  # type: ignore[union-attr]
    assert 5000 < tasks < 7500  # 20,000 tasks over 3 h, evenly: a third of them, give or take
    assert html.count('<svg class="plot"') == 4
    points = [int(n) for n in re.findall(r'data-points="(\d+)"', html)]
    assert all(n >= 55 for n in points), points  # a value per minute of the hour
    assert 'id="health-failing">1<' in html  # triage fails 60 % of its tasks
    top = html.split("Top agents by failures")[1]
    assert top.index(">triage<") < top.index(">billing<")


def test_agent_page_compares_releases_and_drills_into_a_task(stack: ConsoleStack) -> None:
    c = stack.client("engineering")
    html = c.get("/ui/agents/triage?range=24h").text
    releases = html.split('id="releases"')[1].split("</table>")[0]
    assert "<td>v1</td>" in releases and "<td>v2</td>" in releases
    assert "crm" in html.split('id="integrations"')[1] and "/tasks/t0" in html
    task = c.get("/ui/agents/triage/tasks/t0").text
    assert task.count('<rect class="call"') == 2 and "crm.lookup" in task
    assert c.get("/ui/agents/triage?diff_from=1&diff_to=2").text.count('class="add"') >= 1
    assert c.get("/ui/agents/nobody").status_code == 404
    assert c.get("/ui/agents/triage/tasks/nope").status_code == 404


def test_label_selector_and_sorting_are_honoured(stack: ConsoleStack) -> None:
    c = stack.client("compliance")
    every = c.get("/ui/agents?range=1h").text
    support = c.get("/ui/agents?range=1h&label=team%3Dsupport").text

    def tasks(html: str, agent: str) -> int:
        row = html.split(f'<tr data-agent="{agent}">')[1].split("</tr>")[0]
        return int(re.findall(r"<td>(\d+)</td>", row)[0])

    assert 0 < tasks(support, "triage") < tasks(every, "triage")
    assert tasks(support, "billing") == 0  # the seed puts billing in the other team
    ordered = c.get("/ui/agents?sort=failure_rate&desc=1").text
    assert ordered.index('data-agent="triage"') < ordered.index('data-agent="billing"')
    assert c.get("/ui/?range=1y").status_code == 422


# -- sessions and CSRF ----------------------------------------------------------------------


def test_sign_in_sets_a_signed_httponly_cookie_and_never_shows_the_token(
    stack: ConsoleStack,
) -> None:
    c = stack.client()
    token = stack.tokens["operations"]
    r = c.post("/ui/login", data={"token": token, "next": "/ui/agents"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/agents"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
    assert token.split("_", 2)[2] not in cookie
    page = c.get("/ui/agents")
    assert page.status_code == 200 and token not in page.text
    assert "p-operations" in page.text
    bad = stack.client().post("/ui/login", data={"token": "fp_x_y"})
    assert bad.status_code == 401 and "unknown or revoked token" in bad.text
    agent = stack.client().post("/ui/login", data={"token": stack.tokens["agent"]})
    assert agent.status_code == 403
    off = c.post("/ui/login", data={"token": token}, headers={"origin": "https://evil.example"})
    assert off.status_code == 403


def test_forged_cookie_and_sign_out(stack: ConsoleStack) -> None:
    c = stack.client("operations")
    assert c.get("/ui/").status_code == 200
    session = c.cookies.get("fp_session")
    body, mac = session.split(".")
    forged = stack.client()
    forged.cookies.set("fp_session", f"{body}.{'0' * len(mac)}", path="/ui")
    assert forged.get("/ui/").status_code == 303
    csrf = csrf_of(c.get("/ui/").text)
    assert c.post("/ui/logout", data={"csrf": csrf}).status_code == 303
    assert c.get("/ui/").status_code == 303


def test_mutations_need_the_session_and_its_csrf_token(stack: ConsoleStack) -> None:
    c = stack.client("operations")
    csrf = csrf_of(c.get("/ui/").text)
    body = {"reason": "csrf test", "next": "/ui/agents/refunds"}
    assert c.post("/ui/agents/refunds/pause", data=body).status_code == 403
    other = csrf_of(stack.client("operations").get("/ui/").text)
    assert c.post("/ui/agents/refunds/pause", data=body | {"csrf": other}).status_code == 403
    r = c.post(
        "/ui/agents/refunds/pause", data=body | {"csrf": csrf},
        headers={"origin": "https://evil.example"},
    )  # fmt: skip
    assert r.status_code == 403
    assert stack.client().post("/ui/agents/refunds/pause", data=body).status_code == 401
    assert not [p for p in stack.plane.pauses(ADMIN) if p.agent_id == "refunds" and p.paused]


# -- actions --------------------------------------------------------------------------------


@dataclass
class Action:
    name: str
    gate: str  # the API action it maps to
    path: str
    prepare: Callable[[ConsoleStack], dict[str, str]]
    audited: str  # the governance action recorded on success


def _approval(s: ConsoleStack) -> dict[str, str]:
    a = s.plane.request_approval(ADMIN, "triage", "stripe.refund", summary="refund")
    return {"approval_id": a.approval_id, "decision": "approve", "reason": "ok"}


def _silence(s: ConsoleStack) -> dict[str, str]:
    sil = s.plane.silence(ADMIN, {"agent_id": "x"}, duration_s=60, reason="r")
    return {"silence_id": sil.silence_id, "reason": "done"}


def _rollback(s: ConsoleStack) -> dict[str, str]:
    s.plane.activate(ADMIN, "billing", 1)
    s.plane.activate(ADMIN, "billing", 2)
    return {"reason": "bad release"}


ACTION_LIST = [
    Action("pause", "agents.pause", "/ui/agents/refunds/pause",
           lambda s: {"reason": "matrix"}, "paused"),
    Action("resume", "agents.resume", "/ui/agents/refunds/resume",
           lambda s: {"reason": "matrix"}, "resumed"),
    Action("activate", "agents.activate", "/ui/agents/billing/activate",
           lambda s: {"version": "1", "reason": "matrix"}, "activated"),
    Action("rollback", "agents.rollback", "/ui/agents/billing/rollback", _rollback,
           "rolled_back"),
    Action("force-open", "breakers.change", "/ui/breakers/change",
           lambda s: {"breaker_id": "integration:crm", "change": "force-open", "reason": "m"},
           "breaker_force_open"),
    Action("reset", "breakers.change", "/ui/breakers/change",
           lambda s: {"breaker_id": "integration:crm", "change": "reset", "reason": "m"},
           "breaker_reset"),
    Action("ack", "alerts.ack", "/ui/alerts/ack",
           lambda s: {"dedup_key": s.fire("billing"), "reason": "on it"}, "alert_acknowledged"),
    Action("silence", "alerts.silence", "/ui/silences",
           lambda s: {"matchers": "agent_id=bill*", "duration": "30m", "reason": "deploy"},
           "silence_created"),
    Action("unsilence", "alerts.silence", "/ui/silences/remove", _silence, "silence_removed"),
    Action("approve", "approvals.decide", "/ui/approvals/decide", _approval,
           "approval_decided"),
]  # fmt: skip


def test_role_by_action_matrix(stack: ConsoleStack) -> None:
    """Every button x every role: 303 back to the page and audited exactly as the API call,
    or 403 and an ``access_denied`` record naming the API action."""
    failures = []
    for role in PEOPLE:
        client = stack.client(role)
        csrf = csrf_of(client.get("/ui/approvals").text)
        for a in ACTION_LIST:
            before = len(stack.audit_rows(stack.name(role)))
            form = a.prepare(stack) | {"csrf": csrf, "next": "/ui/agents"}
            r = client.post(a.path, data=form)
            allowed = role in ACTIONS[a.gate]
            if r.status_code != (303 if allowed else 403):
                failures.append(f"{a.name} as {role}: {r.status_code} {r.text[:200]}")
                continue
            rows = stack.audit_rows(stack.name(role))[before:]
            want = a.audited if allowed else "access_denied"
            if [e["action"] for e in rows] != [want]:
                failures.append(f"{a.name} as {role}: audited {[e['action'] for e in rows]}")
            if not allowed and rows and payload(rows[0])["action"] != a.gate:
                failures.append(f"{a.name} as {role}: denial names {payload(rows[0])}")
            if allowed:
                assert r.headers["location"].startswith("/ui/agents?done=")
    assert not failures, "\n".join(failures)


def test_nobody_approves_their_own_request(stack: ConsoleStack) -> None:
    c = stack.client("engineering")
    own = stack.plane.request_approval(
        type(ADMIN)("p-engineering", "engineering"), "triage", "x.y", summary="mine"
    )
    html = c.get("/ui/approvals").text
    row = html.split(f'data-approval="{own.approval_id}"')[1].split("</tr>")[0]
    assert "your own request" in row and "approve-button" not in row
    form = {"approval_id": own.approval_id, "decision": "approve", "csrf": csrf_of(html)}
    r = c.post("/ui/approvals/decide", data=form)
    assert r.status_code == 403 and "nobody approves their own request" in r.text


def test_errors_are_friendly_pages(stack: ConsoleStack, monkeypatch: Any) -> None:
    c = stack.client("engineering")
    csrf = csrf_of(c.get("/ui/").text)
    r = c.post("/ui/agents/triage/pause", data={"csrf": csrf, "reason": ""})
    assert r.status_code == 422 and "say why" in r.text and "<html" in r.text
    stack.plane.publish(ADMIN, parse_bundle({"agent_id": "solo"}), "one version")
    stack.plane.activate(ADMIN, "solo", 1)
    r = c.post("/ui/agents/solo/rollback", data={"csrf": csrf})
    assert r.status_code == 409 and "no earlier production version" in r.text
    assert c.get("/ui/nowhere").status_code == 404

    def boom(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("secret internals at /srv/app.py line 3")

    monkeypatch.setattr(stack.plane, "agents", boom)
    r = c.get("/ui/agents")
    assert r.status_code == 500 and "ref " in r.text
    assert "Traceback" not in r.text and "secret internals" not in r.text


def test_audit_answers_what_an_agent_did_to_a_record_and_exports_csv(stack: ConsoleStack) -> None:
    c = stack.client("compliance")
    since = stack.now.replace(microsecond=0).isoformat().replace("+00:00", "")
    q = f"agent=triage&target=customer%2F3&since={since[:11]}00:00"
    html = c.get(f"/ui/audit?{q}").text
    calls = html.split('id="audit-calls"')[1].split("</section>")[0]
    assert "zendesk.update" in calls and "crm.lookup" in calls
    assert html.count('method="post"') == 1 and 'id="sign-out"' in html  # no control but that
    csv = c.get(f"/ui/audit.csv?{q}")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0].startswith("kind,at,actor") and any(",customer/3," in x for x in lines)


def test_the_audit_from_clickhouse_takes_a_time_span(stack: ConsoleStack) -> None:
    """The API's and the console's audit source when the sink runs: a span used to fail on
    ClickHouse (the text alias of ``at`` shadowed the column in WHERE)."""
    from datetime import timedelta

    from fleetpulse.control.audit import COLUMNS, AuditQuery, from_clickhouse

    db = stack.console.database
    with stack.console.history() as a:
        assert a is not None
        a_backend = a._ro.backend  # type: ignore[attr-defined]
        a_backend.command(
            f"INSERT INTO {db}.governance (event_id, entity_type, entity_id, action, actor, "
            f"actor_role, agent_id, at) VALUES ('g1', 'pause', 'triage', 'paused', 'ops', "
            f"'operations', 'triage', now64(6))"
        )
        q = AuditQuery("triage", None, stack.now - timedelta(hours=1), None, 10)
        rows = from_clickhouse(a, db, q)
    assert [(r["action"], r["actor"]) for r in rows] == [("paused", "ops")]
    assert list(rows[0]) == COLUMNS


def test_alerts_honour_the_label_selectors(stack: ConsoleStack) -> None:
    mine = stack.fire("triage", team="support")
    theirs = stack.fire("billing", team="billing")
    html = stack.client("operations").get("/ui/alerts?label=team%3Dsupport").text
    assert f'data-alert="{mine}"' in html and f'data-alert="{theirs}"' not in html


def test_revoking_a_principal_ends_its_sessions_at_once(stack: ConsoleStack) -> None:
    _, issued = stack.plane.add_principal(ADMIN, "temp-ops", "operations")
    c = stack.client()
    assert c.post("/ui/login", data={"token": issued.token}).status_code == 303
    assert c.get("/ui/agents").status_code == 200
    stack.plane.revoke_principal(ADMIN, "temp-ops", reason="left the team")
    assert c.get("/ui/agents").status_code == 303


def test_the_time_ordered_rollup_counts_what_the_agent_rollup_counts(stack: ConsoleStack) -> None:
    """fleet_minute and fleet_total_minute (migration 0004, what the fleet-wide pages read)
    hold the same figures as agent_minute."""
    db = stack.console.database
    with stack.console.history() as a:
        assert a is not None
        q = (
            "SELECT agent_id, countMerge(tasks) AS n, sumMerge(cost_micros) AS c "
            "FROM {db}.{t} GROUP BY agent_id ORDER BY agent_id"
        )
        fleet = a.table(q.format(db=db, t="fleet_minute")).rows
        agent = a.table(q.format(db=db, t="agent_minute")).rows
        total = a.table(
            f"SELECT countMerge(tasks), sumMerge(cost_micros) FROM {db}.fleet_total_minute"
        ).rows[0]
    assert fleet == agent and sum(int(r[1]) for r in fleet) == 20_000
    assert [int(x) for x in total] == [20_000, sum(int(r[2]) for r in agent)]


def test_cost_page_breaks_spend_down_and_burns_budgets(stack: ConsoleStack) -> None:
    html = stack.client("compliance").get("/ui/cost?range=24h").text
    budgets = html.split('id="budget-table"')[1].split("</table>")[0]
    assert "<td>billing</td>" in budgets and "<td>support</td>" in budgets  # bundle, policy team
    assert "at this pace by midnight" in budgets
    for dim, key in (("agent_id", "triage"), ("model", "gpt-4o-mini"), ("team", "support"),
                     ("integration", "zendesk")):  # fmt: skip
        table = html.split(f'id="cost-{dim}"')[1].split("</table>")[0]
        assert f"<td>{key}</td>" in table, dim
