"""The `fleetpulse` command line. Each verb builds its settings here, in main, and passes them on.

Verbs here: `dev up | down | status | fetch`, `processors run`, `pager run`,
`sink run | migrate`, `sql`, `report daily | agent | integration | audit`. The control plane's
verbs (`agents`, `breakers`, `principals`, `approvals`, `alerts`, `audit`, `api run`) live in
`cli_control.py`; `demo` and `sim` in `cli_sim.py`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fleetpulse.cli_control import parse_time
from fleetpulse.cli_control import register as register_control_verbs
from fleetpulse.cli_sim import register as register_sim_verbs
from fleetpulse.contract.config import DevstackSettings, ProcessorSettings, load_settings
from fleetpulse.contract.errors import FleetpulseError
from fleetpulse.extras import check, missing_extra_line

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Keep control of AI agent fleets.",
)
dev = typer.Typer(no_args_is_help=True, help="The local stack: real Kafka, no Docker.")
app.add_typer(dev, name="dev")
processors = typer.Typer(no_args_is_help=True, help="Rolling metrics from the task events.")
app.add_typer(processors, name="processors")
sink = typer.Typer(no_args_is_help=True, help="Kafka to ClickHouse (chDB embedded, or a server).")
app.add_typer(sink, name="sink")
pager = typer.Typer(
    no_args_is_help=True, help="Alerts to Alertmanager, PagerDuty, Slack, webhooks."
)
app.add_typer(pager, name="pager")
report = typer.Typer(no_args_is_help=True, help="Analysts' and compliance's standard questions.")
app.add_typer(report, name="report")
register_control_verbs(app)  # agents, breakers, principals, approvals, alerts, audit, api
register_sim_verbs(app)  # demo, sim
console = Console()
err_console = Console(stderr=True)


def _devstack_settings(**overrides: Any) -> DevstackSettings:
    return load_settings(DevstackSettings, **overrides)


@dev.command("up")
def dev_up(
    port: Annotated[int | None, typer.Option(help="broker port [FLEETPULSE_KAFKA_PORT]")] = None,
    controller_port: Annotated[
        int | None, typer.Option(help="KRaft controller port [FLEETPULSE_KAFKA_CONTROLLER_PORT]")
    ] = None,
    partitions: Annotated[
        int | None, typer.Option(help="task-events partitions [FLEETPULSE_TASK_EVENTS_PARTITIONS]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the status as JSON")] = False,
) -> None:
    """Fetch Kafka's jars (once), start a KRaft node on 127.0.0.1, create the topics."""
    from fleetpulse.devstack import Devstack

    settings = _devstack_settings(
        kafka_port=port, kafka_controller_port=controller_port, task_events_partitions=partitions
    )
    with console.status(f"starting Apache Kafka {settings.kafka_version} (KRaft)..."):
        status = Devstack(settings).up()
    _print_status(status, as_json)


@dev.command("down")
def dev_down() -> None:
    """Stop the devstack cleanly (controlled shutdown)."""
    from fleetpulse.devstack import Devstack

    stopped = Devstack(_devstack_settings()).down()
    console.print("devstack stopped" if stopped else "devstack was not running")


@dev.command("status")
def dev_status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Bootstrap servers, pids and topics of the devstack. Exit code 1 when it is not running."""
    from fleetpulse.devstack import Devstack

    status = Devstack(_devstack_settings()).status()
    _print_status(status, as_json)
    if not status["running"]:
        raise typer.Exit(1)


@dev.command("fetch")
def dev_fetch() -> None:
    """Only fetch the Kafka jars from Maven Central into the cache (CI does this first)."""
    from fleetpulse.devstack import ensure_jars

    settings = _devstack_settings()
    with console.status(f"fetching Apache Kafka {settings.kafka_version} jars..."):
        libs = ensure_jars(settings.kafka_cache, settings.kafka_version)
    console.print(f"Kafka {settings.kafka_version} jars in {libs}")


def _print_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(status, indent=2))
        return
    if not status["running"]:
        console.print(f"devstack is [bold red]not running[/] (home {status['home']})")
        if status.get("stale"):
            console.print(status["stale"])
        return
    k = status["kafka"]
    console.print(
        f"devstack [bold green]running[/]: Kafka {k['version']} pid {k['pid']} on "
        f"[bold]{status['bootstrap_servers']}[/]\n  log: {k['log']}"
    )
    table = Table("topic", "partitions")
    for t in status["topics"]:
        table.add_row(t["name"], str(t["partitions"]))
    console.print(table)
    if status.get("services"):
        svc = Table("service", "pid", "state", "log")
        for name, info in status["services"].items():
            state = "[green]running[/]" if info["alive"] else "[red]exited[/]"
            svc.add_row(name, str(info["pid"]), state, info["log"])
        console.print(svc)


@processors.command("run")
def processors_run(
    workers: Annotated[
        int | None, typer.Option(help="worker processes [FLEETPULSE_PROCESSORS_WORKERS]")
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(
            help="kafka (default): a confluent-kafka loop feeding the native ingest pass; "
            "faust: the same loop for task events, faust for the partials"
        ),
    ] = "kafka",
    web_port: Annotated[
        int | None,
        typer.Option(help="Prometheus /metrics port, +i per worker; 0 disables"),
    ] = None,
    stage: Annotated[
        str,
        typer.Option(help="all (default), metrics (windows), breakers (decisions) or alerts"),
    ] = "all",
    index: Annotated[int, typer.Option(hidden=True)] = 0,
) -> None:
    """Run the stream processors until interrupted (Ctrl-C or SIGTERM).

    The metric windows, the breaker stage and the alert stage run as separate processes
    (``--stage all`` starts the three), so breaker decisions and alerts never wait behind the
    windows' CPU.
    """
    overrides: dict[str, Any] = {}
    if workers is not None:
        overrides["processors_workers"] = workers
    if web_port is not None:
        overrides["processors_web_port"] = web_port
    settings = load_settings(ProcessorSettings, **overrides)
    if runtime not in ("faust", "kafka"):
        raise typer.BadParameter("expected faust or kafka", param_hint="--runtime")
    if stage not in ("all", "metrics", "breakers", "alerts"):
        raise typer.BadParameter("expected all, metrics, breakers or alerts", param_hint="--stage")
    from fleetpulse.contract.policy import load_policy

    policy = load_policy(settings.policy)  # a bad policy fails here, before anything starts
    from fleetpulse.devstack.topics import ensure_topics

    ensure_topics(settings.resolved_bootstrap(), settings.topics)
    if stage == "breakers":
        from fleetpulse.processors.breakers.stage import run_breaker_stage

        run_breaker_stage(settings, policy)
        return
    if stage == "alerts":
        from fleetpulse.processors.alerts.stage import run_alert_stage

        run_alert_stage(settings, policy)
        return
    side = ("breakers", "alerts") if stage == "all" else ()
    if settings.processors_workers > 1:
        from fleetpulse.processors.supervisor import run_workers

        sys.exit(
            run_workers(
                settings.processors_workers,
                runtime=runtime,
                side=side,
                alerts_workers=settings.alerts_workers,
            )
        )
    from fleetpulse.processors.supervisor import spawn_side

    side_procs = spawn_side(side, alerts_workers=settings.alerts_workers)
    if runtime == "kafka":
        from fleetpulse.processors.metrics.plain import PlainRunner
        from fleetpulse.processors.metrics.worker import ProcessorCore

        runner = PlainRunner(ProcessorCore(settings, policy=policy), settings, index=index)
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: runner.stop_event.set())
        runner.run()
    else:
        from fleetpulse.processors.metrics.faust_app import run_worker

        run_worker(settings, index=index)
    for proc in side_procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)


# -- paging -----------------------------------------------------------------------------------


@pager.command("run")
def pager_run(
    config: Annotated[
        Path | None, typer.Option(help="routing YAML [FLEETPULSE_PAGER_CONFIG]")
    ] = None,
) -> None:
    """Deliver fleetpulse.alerts to Alertmanager, PagerDuty, Slack and webhooks until
    interrupted; offsets are committed only after delivery (or the DLQ)."""
    from fleetpulse.contract.config import PagerSettings
    from fleetpulse.paging import load_pager_config, run_pager

    settings = load_settings(PagerSettings, pager_config=config)
    if settings.pager_config is None:
        raise typer.BadParameter(
            "no routing file: pass --config or set FLEETPULSE_PAGER_CONFIG (see the README)",
            param_hint="--config",
        )
    routing = load_pager_config(settings.pager_config)  # bad file or missing secret: fails now
    console.print(f"pager: {len(routing.receivers)} receivers, {len(routing.routes)} routes")
    run_pager(settings, routing)


# -- sink ---------------------------------------------------------------------------------------


@sink.command("migrate")
def sink_migrate(
    roles: Annotated[
        bool,
        typer.Option(
            help="also provision the server's roles: fleetpulse_writer (INSERT), "
            "fleetpulse_analyst (read-only SELECT, quota), fleetpulse_auditor (audit tables)"
        ),
    ] = False,
) -> None:
    """Create or upgrade the ClickHouse tables (idempotent)."""
    from fleetpulse.contract.config import SinkSettings
    from fleetpulse.sink.migrate import migrate
    from fleetpulse.sink.roles import provision_roles
    from fleetpulse.sink.runner import open_backend

    settings = load_settings(SinkSettings)
    backend = open_backend(settings)
    try:
        applied = migrate(backend, ttl_days=settings.clickhouse_ttl_days)
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing to apply"
        console.print(f"migrations: {names}")
        if roles:
            console.print("provisioned: " + ", ".join(provision_roles(backend)))
    finally:
        backend.close()


@sink.command("run")
def sink_run(
    drain: Annotated[
        bool, typer.Option(help="stop once every partition is written up to its end")
    ] = False,
    max_events: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Sink the task events into ClickHouse until interrupted (Ctrl-C or SIGTERM)."""
    import signal

    from fleetpulse.contract.config import SinkSettings
    from fleetpulse.devstack.topics import ensure_topics
    from fleetpulse.sink.migrate import migrate
    from fleetpulse.sink.query import open_query_server
    from fleetpulse.sink.runner import SinkRunner, open_backend

    settings = load_settings(SinkSettings)
    ensure_topics(settings.resolved_bootstrap(), settings.topics)
    backend = open_backend(settings)
    server = None
    try:
        migrate(backend, ttl_days=settings.clickhouse_ttl_days)
        if not settings.clickhouse_url:  # this process owns the embedded store: serve analysts
            server = open_query_server(settings)
        runner = SinkRunner(settings, backend)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: runner.stop_event.set())
        runner.run(max_events=max_events, drain=drain)
    finally:
        if server is not None:
            server.stop()
        backend.close()


# -- analysts ---------------------------------------------------------------------------------

Format = Annotated[str, typer.Option("--format", help="table, json or csv")]


def _analyst() -> Any:
    from fleetpulse.contract.config import SinkSettings
    from fleetpulse.sink.query import open_analyst

    settings = load_settings(SinkSettings)
    return settings.clickhouse_database, open_analyst(settings)


def _print_sections(sections: list[Any], fmt: str) -> None:
    """Query results as rich tables, one JSON document, or CSV blocks."""
    import csv

    from fleetpulse.tables import print_table

    if fmt not in ("table", "json", "csv"):
        raise ValueError(f"--format {fmt!r}: expected table, json or csv")
    if fmt == "json":
        doc: Any = (
            sections[0].table.records()
            if len(sections) == 1 and not sections[0].title
            else {s.title: s.table.records() for s in sections}
        )
        print(json.dumps(doc, indent=2, default=str))
        return
    for i, s in enumerate(sections):
        if fmt == "csv":
            if s.title:
                print(("\n" if i else "") + f"# {s.title}")
            w = csv.writer(sys.stdout)
            w.writerow(s.table.columns)
            w.writerows(s.table.rows)
            continue
        if not s.table.rows:
            console.print(f"[bold]{s.title}[/]: no rows")
            continue
        print_table(console, s.title or None, s.table.columns, s.table.rows)


@app.command("sql")
def sql(
    query: Annotated[str, typer.Argument(help="one read-only statement (SELECT, SHOW, ...)")],
    fmt: Format = "table",
) -> None:
    """Run a read-only query: through the process that owns the embedded store, or on the
    ClickHouse server (FLEETPULSE_CLICKHOUSE_URL, with the analyst's credentials)."""
    from fleetpulse.sink.reports import Section

    _db, analyst = _analyst()
    try:
        _print_sections([Section("", analyst.table(query))], fmt)
    finally:
        analyst.close()


def _when(value: str | None, default: datetime) -> datetime:
    return parse_time(value) or default


@report.command("daily")
def report_daily(
    day: Annotated[str | None, typer.Option(help="YYYY-MM-DD (UTC); default today")] = None,
    fmt: Format = "table",
) -> None:
    """Tasks per agent on a day (completed, failed, cost, latency); integrations by errors."""
    from fleetpulse.sink import reports

    d = _when(day, datetime.now(UTC)).date()
    db, analyst = _analyst()
    try:
        _print_sections(reports.daily(analyst, db, d), fmt)
    finally:
        analyst.close()


@report.command("agent")
def report_agent(
    agent_id: str,
    days: Annotated[int, typer.Option(min=1, help="days back, today included")] = 7,
    fmt: Format = "table",
) -> None:
    """One agent: its days by version, latest failures, the integrations it used."""
    from fleetpulse.sink import reports

    until = datetime.now(UTC).date()
    db, analyst = _analyst()
    try:
        sections = reports.agent(analyst, db, agent_id, until - timedelta(days=days - 1), until)
        _print_sections(sections, fmt)
    finally:
        analyst.close()


Since = Annotated[str | None, typer.Option(help="ISO 8601, UTC unless an offset is given")]


@report.command("integration")
def report_integration(
    name: str, since: Since = None, until: Since = None, fmt: Format = "table"
) -> None:
    """One integration: calls, failures and latency by hour; agents; breaker transitions.
    Default span: the last 24 hours."""
    from fleetpulse.sink import reports

    end = _when(until, datetime.now(UTC))
    start = _when(since, end - timedelta(hours=24))
    db, analyst = _analyst()
    try:
        _print_sections(reports.integration(analyst, db, name, start, end), fmt)
    finally:
        analyst.close()


@report.command("audit")
def report_audit(
    agent: Annotated[str, typer.Option(help="the agent id")],
    target: Annotated[str, typer.Option(help="the target record, as the tool call named it")],
    since: Since = None,
    until: Since = None,
    fmt: Format = "table",
) -> None:
    """What an agent did to a record between two instants, call by call (default: 24 h)."""
    from fleetpulse.sink import reports

    end = _when(until, datetime.now(UTC))
    start = _when(since, end - timedelta(hours=24))
    db, analyst = _analyst()
    try:
        _print_sections(reports.audit(analyst, db, agent, target, start, end), fmt)
    finally:
        analyst.close()


def main() -> None:
    # the one setting read before any command's settings exist: services the devstack starts
    # log at INFO to their files (readiness is read off them)
    level = os.environ.get("FLEETPULSE_LOG_LEVEL", "WARNING").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        err_console.print(
            f"[bold red]error:[/] FLEETPULSE_LOG_LEVEL={level!r}: use DEBUG, INFO, WARNING or ERROR"
        )
        sys.exit(2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    missing = check(sys.argv[1:])  # the verb's extra, before it does any work
    if missing is not None:
        print(missing, file=sys.stderr)  # one line, never wrapped: scripts grep it
        sys.exit(1)
    try:
        app()
    except (FleetpulseError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except ModuleNotFoundError as exc:
        # a verb imports its extra's packages when it runs: name the extra, not the module
        line = missing_extra_line(sys.argv[1:], exc.name)
        if line is None:
            raise
        print(line, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
