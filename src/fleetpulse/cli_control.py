"""The control-plane verbs of the command line: `agents`, `breakers`, `principals`, `approvals`,
`alerts`, `audit`, `api run`.

Each goes through a gateway: the control API when ``FLEETPULSE_API_URL`` is set (the token in
``FLEETPULSE_TOKEN`` says who you are), else the control plane in this process, as the holder
of ``FLEETPULSE_TOKEN`` or, without one, as the local operator (role engineering).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from fleetpulse.contract.config import ControlSettings, load_settings

if TYPE_CHECKING:
    from fleetpulse.control.client import ControlClient

console = Console()
err_console = Console(stderr=True)

agents = typer.Typer(no_args_is_help=True, help="Agents: versioned bundles, rollback, pauses.")
breakers = typer.Typer(no_args_is_help=True, help="Fleet-wide circuit breakers.")
principals = typer.Typer(no_args_is_help=True, help="Who may act: principals, roles, tokens.")
approvals = typer.Typer(no_args_is_help=True, help="Human approval of agents' gated actions.")
alerts = typer.Typer(
    no_args_is_help=True, help="Alerts on fleetpulse.alerts: list, acknowledge, silence."
)
api = typer.Typer(no_args_is_help=True, help="The control API (FastAPI, docs at /docs).")

Actor = Annotated[
    str | None,
    typer.Option("--as", help="without a token: the name to act under (default local:$USER)"),
]
Reason = Annotated[str, typer.Option(help="why: recorded with the action")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


def register(app: typer.Typer) -> None:
    for sub, name in (
        (agents, "agents"),
        (breakers, "breakers"),
        (principals, "principals"),
        (approvals, "approvals"),
        (alerts, "alerts"),
        (api, "api"),
    ):
        app.add_typer(sub, name=name)
    app.command("audit")(audit)


def gateway(actor: str | None = None) -> ControlClient:
    """The control plane, through the API or in-process (see the module docstring)."""
    # imported when a verb runs: the control plane is not loaded for `dev` or `--help`
    from fleetpulse.contract.policy import load_policy
    from fleetpulse.control.access import Caller
    from fleetpulse.control.audit import audit_source
    from fleetpulse.control.gateway import HttpGateway, LocalGateway
    from fleetpulse.control.plane import ControlPlane, local_caller
    from fleetpulse.sdk.governance_log import GovernanceLog
    from fleetpulse.sink.query import running_analyst

    settings = load_settings(ControlSettings)
    token = settings.token.get_secret_value() if settings.token else None
    if actor and token:
        raise ValueError("--as is for acting without a token; your token says who you are")
    if settings.api_url:
        return HttpGateway(settings.api_url, token)
    policy = load_policy(settings.policy)
    log = GovernanceLog.open(settings, background=False, client_id="fleetpulse-cli")
    plane = ControlPlane(settings, policy, log)
    if token:
        caller = plane.authenticate(token)
    else:
        caller = Caller(actor, "engineering") if actor else local_caller()
    return LocalGateway(
        plane,
        caller,
        audit_source(log, settings.clickhouse_database, lambda: running_analyst(settings)),
    )


def _out(data: Any, as_json: bool, table: Table | None = None, empty: str = "nothing") -> None:
    if as_json or table is None:
        console.print_json(json.dumps(data, default=str))
    else:
        console.print(table if table.row_count else empty)


def _when(us: int | None) -> str:
    if not us:
        return ""
    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- agents -----------------------------------------------------------------------------------


@agents.command("publish")
def agents_publish(
    file: Annotated[Path, typer.Argument(help="the bundle YAML", exists=True, dir_okay=False)],
    message: Annotated[str, typer.Option("-m", "--message", help="what changed and why")],
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    """Validate a bundle and record it as the agent's next immutable version."""
    from fleetpulse.contract.bundles import load_bundle

    bundle = load_bundle(file)  # a bad file fails here, naming the field
    v = gateway(actor).publish(bundle.canonical(), message)
    if as_json:
        _out(v, True)
        return
    console.print(
        f"published [bold]{v['agent_id']}@{v['version']}[/] ({v['content_hash'][:12]}) by "
        f"{v['author']}. Activate: fleetpulse agents activate {v['agent_id']} "
        f"--version {v['version']}"
    )


@agents.command("list")
def agents_list(as_json: AsJson = False) -> None:
    """Every agent with a published bundle, and where its labels point."""
    rows = gateway().agents()
    table = Table("agent", "versions", "production", "staging", "latest", "last published by")
    for r in rows:
        lb = r["labels"]
        table.add_row(
            r["agent_id"],
            str(r["versions"]),
            str(lb.get("production", "-")),
            str(lb.get("staging", "-")),
            str(lb.get("latest")),
            r["latest_author"],
        )
    _out(rows, as_json, table, "no agents published yet: fleetpulse agents publish FILE -m ...")


@agents.command("history")
def agents_history(agent_id: str, as_json: AsJson = False) -> None:
    """Every version of an agent: who published it, when and why."""
    gw = gateway()
    rows, labels = gw.history(agent_id), gw.labels(agent_id)
    table = Table("version", "labels", "hash", "author", "at", "message")
    for r in rows:
        on = ", ".join(sorted(k for k, v in labels.items() if v == r["version"]))
        table.add_row(
            str(r["version"]),
            on,
            r["content_hash"][:12],
            r["author"],
            _when(r["at_us"]),
            r["message"],
        )
    _out({"versions": rows, "labels": labels}, as_json, table)


@agents.command("show")
def agents_show(
    agent_id: str,
    version: Annotated[int | None, typer.Option(help="default: the production version")] = None,
) -> None:
    """One version's bundle as YAML."""
    from fleetpulse.contract.bundles import to_yaml

    gw = gateway()
    if version is None:
        labels = gw.labels(agent_id)
        version = labels.get("production") or labels["latest"]
    v = gw.version(agent_id, version)
    console.print(f"# {agent_id}@{v['version']} by {v['author']}: {v['message']}")
    console.print(Syntax(to_yaml(v["bundle"]), "yaml"))


@agents.command("diff")
def agents_diff(
    agent_id: str,
    from_: Annotated[int | None, typer.Option("--from", help="default: production")] = None,
    to: Annotated[int | None, typer.Option(help="default: the latest version")] = None,
) -> None:
    """What changed between two versions (unified diff of the bundles)."""
    text = gateway().diff(agent_id, from_, to)["diff"]
    console.print(Syntax(text, "diff") if text else "no difference")


@agents.command("activate")
def agents_activate(
    agent_id: str,
    version: Annotated[int, typer.Option(help="the version to activate")],
    label: Annotated[str, typer.Option(help="production or staging")] = "production",
    reason: Annotated[str, typer.Option(help="why: recorded with the action")] = "",
    actor: Actor = None,
) -> None:
    """Point a label at a version; every running instance of the agent follows it live."""
    v = gateway(actor).activate(agent_id, version, label, reason)
    console.print(f"{agent_id} [bold]{label}[/] -> version {v['version']}")


@agents.command("rollback")
def agents_rollback(
    agent_id: str,
    reason: Annotated[str, typer.Option(help="why: recorded with the action")] = "",
    actor: Actor = None,
) -> None:
    """One command back to the previous production version."""
    v = gateway(actor).rollback(agent_id, reason)
    console.print(f"{agent_id} [bold]production[/] rolled back to version {v['version']}")


@agents.command("pause")
def agents_pause(agent_id: str, reason: Reason, actor: Actor = None) -> None:
    """Pause an agent fleet-wide: its next fleet.task(...) raises AgentPausedError."""
    s = gateway(actor).set_paused(agent_id, True, reason)
    console.print(f"agent {s['agent_id']} [bold]paused[/] (by {s['actor']}: {s['reason']})")


@agents.command("resume")
def agents_resume(agent_id: str, reason: Reason, actor: Actor = None) -> None:
    """Resume a paused agent."""
    s = gateway(actor).set_paused(agent_id, False, reason)
    console.print(f"agent {s['agent_id']} [bold]running[/] (by {s['actor']}: {s['reason']})")


# -- breakers ---------------------------------------------------------------------------------


@breakers.command("list")
def breakers_list(
    state: Annotated[str | None, typer.Option(help="only this state, e.g. OPEN")] = None,
    as_json: AsJson = False,
) -> None:
    """Every breaker the fleet has decided on, with its current state."""
    rows = gateway().breakers()
    if state:
        rows = [r for r in rows if r["state"] == state.upper()]
    table = Table("breaker", "state", "since", "by", "reason")
    for r in rows:
        table.add_row(r["id"], r["state"], r["since"], r["actor"], r["reason"])
    _out(rows, as_json, table, "no breakers have been decided on yet")


@breakers.command("show")
def breakers_show(breaker_id: str, as_json: AsJson = False) -> None:
    """One breaker: state, reason, the measured numbers, retry time, probe share."""
    from fleetpulse.contract.breakers import parse_breaker_id

    parse_breaker_id(breaker_id)
    found = [r for r in gateway().breakers() if r["id"] == breaker_id]
    if not found:
        err_console.print(f"no state recorded for {breaker_id} (it is CLOSED)")
        raise typer.Exit(1)
    if as_json:
        _out(found[0], True)
        return
    for k, v in found[0].items():
        console.print(f"[bold]{k}[/]: {v}")


def _breaker_action(change: str, breaker_id: str, reason: str, actor: str | None) -> None:
    s = gateway(actor).set_breaker(breaker_id, change, reason)
    console.print(f"{s['id']} is now [bold]{s['state']}[/] (by {s['actor']}: {s['reason']})")


@breakers.command("force-open")
def breakers_force_open(breaker_id: str, reason: Reason, actor: Actor = None) -> None:
    """Stop every call through this breaker, fleet-wide, until `reset`."""
    _breaker_action("force_open", breaker_id, reason, actor)


@breakers.command("disable")
def breakers_disable(breaker_id: str, reason: Reason, actor: Actor = None) -> None:
    """Let every call through this breaker until `reset`, whatever fails."""
    _breaker_action("disable", breaker_id, reason, actor)


@breakers.command("reset")
def breakers_reset(breaker_id: str, reason: Reason, actor: Actor = None) -> None:
    """Back to CLOSED with an empty window; the processors decide again."""
    _breaker_action("reset", breaker_id, reason, actor)


# -- principals -------------------------------------------------------------------------------


@principals.command("add")
def principals_add(
    name: str,
    role: Annotated[str, typer.Option(help="engineering, operations, compliance, approver, agent")],
    agent: Annotated[str, typer.Option(help="for role agent: the agent id it acts as")] = "",
    actor: Actor = None,
) -> None:
    """Create a principal; its token is printed once and stored only as a salted hash."""
    p = gateway(actor).add_principal(name, role, agent)
    console.print(f"principal [bold]{p['name']}[/] ({p['role']}) created. Its token, shown once:")
    console.print(p["token"], highlight=False, soft_wrap=True)


@principals.command("list")
def principals_list(as_json: AsJson = False) -> None:
    """Principals, their roles and whether they are revoked (never their tokens)."""
    rows = gateway().principals()
    table = Table("name", "role", "agent", "token id", "created by", "revoked")
    for r in rows:
        table.add_row(
            r["name"], r["role"], r["agent_id"], r["token_id"], r["created_by"], str(r["revoked"])
        )
    _out(rows, as_json, table, "no principals: fleetpulse principals add NAME --role ROLE")


@principals.command("revoke")
def principals_revoke(name: str, reason: Reason = "", actor: Actor = None) -> None:
    """Revoke a principal's token at once (every API and CLI use of it fails from now)."""
    gateway(actor).revoke(name, reason)
    console.print(f"principal {name} [bold]revoked[/]")


@principals.command("set-role")
def principals_set_role(name: str, role: str, reason: Reason = "", actor: Actor = None) -> None:
    """Change a principal's role (recorded in the governance log)."""
    gateway(actor).set_role(name, role, reason)
    console.print(f"principal {name} is now [bold]{role}[/]")


# -- approvals --------------------------------------------------------------------------------


@approvals.command("list")
def approvals_list(
    status: Annotated[
        str, typer.Option(help="pending, approved, denied, expired or all")
    ] = "pending",
    as_json: AsJson = False,
) -> None:
    """Approval requests (pending ones by default), oldest first."""
    rows = gateway().approvals(None if status == "all" else status)
    rows.sort(key=lambda r: r["requested_at_us"])
    table = Table("id", "agent", "action", "summary", "requested", "expires", "status", "by")
    for r in rows:
        table.add_row(
            r["approval_id"],
            r["agent_id"],
            r["action"],
            r["summary"],
            _when(r["requested_at_us"]),
            _when(r["expires_at_us"]),
            r["status"],
            r["decided_by"],
        )
    _out(rows, as_json, table, f"no {status} approvals")


@approvals.command("approve")
def approvals_approve(
    approval_id: str,
    reason: Annotated[str, typer.Option(help="recorded with the decision")] = "",
    actor: Actor = None,
) -> None:
    """Approve a pending request; the waiting agent proceeds."""
    a = gateway(actor).decide(approval_id, True, reason)
    console.print(f"approval {approval_id} ({a['action']} by {a['agent_id']}): [bold]approved[/]")


@approvals.command("deny")
def approvals_deny(approval_id: str, reason: Reason, actor: Actor = None) -> None:
    """Deny a pending request; the agent gets ApprovalDeniedError with the reason."""
    a = gateway(actor).decide(approval_id, False, reason)
    console.print(f"approval {approval_id} ({a['action']} by {a['agent_id']}): [bold]denied[/]")


# -- alerts -----------------------------------------------------------------------------------


@alerts.command("list")
def alerts_list(
    status: Annotated[str | None, typer.Option(help="firing or resolved")] = None,
    as_json: AsJson = False,
) -> None:
    """Every alert's newest state."""
    rows = gateway().alerts(status)
    table = Table("dedup key", "status", "severity", "summary", "since", "quiet", "acked by")
    for r in rows:
        quiet = r["labels"].get("suppressed", "")
        table.add_row(
            r["dedup_key"],
            r["status"],
            r["severity"],
            r["summary"],
            _when(r["started_at"]),
            f"{quiet}: {r['root_cause']}" if quiet else "",
            r["acknowledged_by"],
        )
    _out(rows, as_json, table, "no alerts")


@alerts.command("ack")
def alerts_ack(dedup_key: str, reason: Reason = "", actor: Actor = None) -> None:
    """Acknowledge an alert: you are on it (recorded in the governance log)."""
    gateway(actor).ack(dedup_key, reason)
    console.print(f"{dedup_key} acknowledged")


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d`` (or plain seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: expected e.g. 30m, 2h, 1d", param_hint="--for"
        ) from None


@alerts.command("silence")
def alerts_silence(
    match: Annotated[
        list[str], typer.Option("--match", help="label=glob, repeatable: agent_id=triage*")
    ],
    duration: Annotated[str, typer.Option("--for", help="required expiry: 30m, 2h, 1d")],
    reason: Annotated[str, typer.Option(help="why (required)")],
    actor: Actor = None,
) -> None:
    """Mute the notifications of alerts matching every matcher until the silence expires."""
    matchers = {}
    for m in match:
        key, sep, value = m.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{m!r}: expected label=glob", param_hint="--match")
        matchers[key.strip()] = value.strip()
    s = gateway(actor).silence(matchers, parse_duration(duration), reason)
    console.print(f"silence {s['silence_id']} until {_when(s['expires_at_us'])} UTC")


@alerts.command("unsilence")
def alerts_unsilence(silence_id: str, reason: Reason = "", actor: Actor = None) -> None:
    """End a silence before its expiry."""
    gateway(actor).unsilence(silence_id, reason)
    console.print(f"silence {silence_id} removed")


@alerts.command("silences")
def alerts_silences(
    include_ended: Annotated[bool, typer.Option("--all", help="expired and removed too")] = False,
    as_json: AsJson = False,
) -> None:
    """Active silences: matchers, expiry, author and reason."""
    rows = gateway().silences(include_ended)
    table = Table("id", "matchers", "until", "by", "reason", "removed by")
    for r in rows:
        matchers = ", ".join(f"{k}={v}" for k, v in r["matchers"].items())
        table.add_row(
            r["silence_id"], matchers, _when(r["expires_at_us"]), r["author"], r["reason"],
            r["removed_by"],
        )  # fmt: skip
    _out(rows, as_json, table, "no silences")


# -- audit and the API ------------------------------------------------------------------------


def audit(
    agent: Annotated[str | None, typer.Option(help="only actions on this agent")] = None,
    principal: Annotated[str | None, typer.Option(help="only actions by this principal")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time")] = None,
    limit: int = 1000,
    as_json: AsJson = False,
) -> None:
    """Who did what: from ClickHouse when the sink runs, else from the governance log."""
    from fleetpulse.control.audit import AuditQuery

    q = AuditQuery(agent, principal, parse_time(since), parse_time(until), limit)
    rows = gateway().audit(q)
    table = Table("at", "actor", "role", "action", "entity", "agent", "reason", "outcome")
    for r in rows:
        table.add_row(
            str(r["at"])[:26],
            r["actor"],
            r["actor_role"],
            r["action"],
            f"{r['entity_type']}:{r['entity_id']}",
            r["agent_id"],
            r["reason"],
            r["outcome"],
        )
    _out(rows, as_json, table, "no audit records match")


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time from the command line (UTC when it names no zone)."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time, e.g. 2026-11-24T02:00") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@api.command("run")
def api_run(
    host: Annotated[str | None, typer.Option(help="default FLEETPULSE_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default FLEETPULSE_API_PORT")] = None,
) -> None:
    """Serve the control API (OpenAPI docs at /docs) until interrupted."""
    from fleetpulse.console.server import run_api
    from fleetpulse.contract.policy import load_policy

    settings = load_settings(ControlSettings, api_host=host, api_port=port)
    policy = load_policy(settings.policy)  # a bad policy fails here, before anything starts
    console.print(f"control API on http://{settings.api_host}:{settings.api_port} (docs: /docs)")
    run_api(settings, policy)
