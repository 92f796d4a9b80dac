"""`fleetpulse demo` (`make demo`): the whole system on this machine, one incident, one report.

1. A fresh devstack under ``$FLEETPULSE_HOME/demo``: Apache Kafka (KRaft), then fleetpulse's
   processes as devstack services: the processors (metric windows, breaker stage, alert
   stage), the sink into embedded ClickHouse (chDB), the control API, and the paging bridge,
   delivering to Alertmanager when it is installed and to a local JSON-lines log otherwise.
2. The standard incident scenario (`scenarios/incident.yaml`) through the fleet simulator,
   with live progress: faults, breaker changes and alerts as they happen. The simulated
   on-call, release manager and approver act over the control API with their own tokens.
3. A report read from ClickHouse (`report.py`), and a check that ClickHouse holds exactly the
   task events the simulated agents produced.

The operations console is up all along at the API's ``/ui/``: the demo prints its URL and a
sign-in token for each console role (engineering, operations, compliance, approver).

It stops everything at the end, or with ``keep`` leaves the stack up and says how to stop it.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console

from fleetpulse.contract.config import DevstackSettings, SdkSettings, SinkSettings, load_settings
from fleetpulse.contract.errors import DevstackError
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.kafka_config import consumer_config
from fleetpulse.devstack import Devstack, free_port
from fleetpulse.devstack.kafka import port_free
from fleetpulse.devstack.services import (
    Service,
    check_alive,
    start_service,
    wait_http,
    wait_ready,
)
from fleetpulse.sim import report
from fleetpulse.sim.runner import SimResult, Simulator
from fleetpulse.sim.scenario import Scenario, load_scenario
from fleetpulse.sink.query import endpoint, open_analyst
from fleetpulse.tables import print_table

_WIDE = ("task_id", "trace_id", "call_id")  # ids the terminal report leaves to --report-json
CONSOLE_ROLES = ("engineering", "operations", "compliance", "approver")


@dataclass
class DemoResult:
    sim: SimResult
    report: report.DemoReport
    rows: int
    missing: int
    extra: int
    home: Path
    alerts: list[dict[str, Any]] = field(default_factory=list)
    pages: Path | None = None
    alertmanager_url: str | None = None
    console_url: str = ""
    console_tokens: dict[str, str] = field(default_factory=dict)  # role -> sign-in token


@dataclass
class DemoStack:
    home: Path
    bootstrap: str
    api_url: str
    services: dict[str, Service]
    pages: Path | None
    alertmanager_url: str | None


def run_demo(
    settings: DevstackSettings,
    *,
    scenario: str | Path = "incident",
    keep: bool = False,
    console: Console,
) -> DemoResult:
    sc = load_scenario(scenario)
    home = (Path(settings.home) / "demo").resolve()
    stack_settings = _fresh_stack_settings(settings, home, console)
    stack = Devstack(stack_settings)
    api_url = ""
    try:
        demo = _start(stack, stack_settings, sc, console)
        api_url = demo.api_url
        result = _run(demo, stack_settings, sc, console)
        return result
    finally:
        if keep:
            if api_url:
                console.print(f"\nThe console is up at {api_url}/ui/ (sign-in tokens above).")
            console.print(
                f"\nThe demo stack is still up (Kafka on {stack_settings.kafka_port}). Try:\n"
                f"  export FLEETPULSE_HOME={home}\n"
                "  fleetpulse dev status; fleetpulse alerts list; fleetpulse breakers list\n"
                "  fleetpulse report daily; fleetpulse report audit --agent support-01 "
                "--target customer/42\n"
                f"Stop it with: FLEETPULSE_HOME={home} fleetpulse dev down"
            )
        else:
            with console.status("stopping the demo stack..."):
                stack.down()
            console.print("demo stack stopped")


def _fresh_stack_settings(
    settings: DevstackSettings, home: Path, console: Console
) -> DevstackSettings:
    """The demo's own devstack: a clean home (a previous demo's stack is stopped and its data
    removed) on the configured ports, or free ones when those are taken."""
    old = Devstack(settings.model_copy(update={"home": home}))
    if old.down():
        console.print("stopped the previous demo stack")
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    ports = {
        "kafka_port": settings.kafka_port if port_free(settings.kafka_port) else free_port(),
        "kafka_controller_port": settings.kafka_controller_port
        if port_free(settings.kafka_controller_port)
        else free_port(),
    }
    return settings.model_copy(update={"home": home, **ports})


def _start(
    stack: Devstack, settings: DevstackSettings, sc: Scenario, console: Console
) -> DemoStack:
    home = stack.home
    t0 = time.monotonic()
    with console.status(f"starting Apache Kafka {settings.kafka_version} (KRaft)..."):
        status = stack.up()
    bootstrap = status["bootstrap_servers"]
    console.print(
        f"[green]✓[/] Kafka {settings.kafka_version} on {bootstrap} ({time.monotonic() - t0:.0f}s)"
    )
    (home / "policy.yaml").write_text(yaml.safe_dump(sc.policy, sort_keys=False))
    api_port = 8700 if port_free(8700) else free_port()
    env = {
        **os.environ,
        "FLEETPULSE_HOME": str(home),
        "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
        "FLEETPULSE_TOPIC_PREFIX": settings.topic_prefix,
        "FLEETPULSE_POLICY": str(home / "policy.yaml"),
        "FLEETPULSE_LOG_LEVEL": "INFO",
        "FLEETPULSE_PROCESSORS_WEB_PORT": str(free_port()),
        "FLEETPULSE_API_PORT": str(api_port),
    }
    for var in (
        "FLEETPULSE_API_URL",
        "FLEETPULSE_TOKEN",
        "FLEETPULSE_CLICKHOUSE_URL",
        "FLEETPULSE_DATA_DIR",
    ):
        env.pop(var, None)
    cli = [sys.executable, "-m", "fleetpulse.cli"]
    started: dict[str, Service] = {}
    am_url, pages = _pager_config(home, env, started)
    with console.status("starting the processors, the sink, the control API and the pager..."):
        started["processors"] = start_service(
            home, "processors", [*cli, "processors", "run", "--stage", "all"], env
        )
        started["sink"] = start_service(home, "sink", [*cli, "sink", "run"], env)
        started["api"] = start_service(home, "api", [*cli, "api", "run"], env)
        started["pager"] = start_service(
            home, "pager", [*cli, "pager", "run", "--config", str(home / "pager.yaml")], env
        )
        wait_ready(started["processors"], r"breaker stage assigned", timeout=90)
        wait_ready(started["processors"], r"alert stage: .*evaluating", timeout=90)
        wait_ready(started["pager"], r"pager: \d+ receivers", timeout=60)
        api_url = f"http://127.0.0.1:{api_port}"
        wait_http(started["api"], f"{api_url}/v1/whoami", timeout=60)
        _wait_sink(started["sink"], home / "clickhouse", timeout=90)
    where = f"Alertmanager at {am_url}" if am_url else f"a local log, {pages}"
    console.print(
        f"[green]✓[/] processors, sink (chDB), control API ({api_url}) and pager -> {where} "
        f"({time.monotonic() - t0:.0f}s)"
    )
    return DemoStack(home, bootstrap, api_url, started, pages, am_url)


def _pager_config(
    home: Path, env: dict[str, str], started: dict[str, Service]
) -> tuple[str | None, Path | None]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pages = home / "pages.jsonl"
        receiver = {"name": "local-log", "file": {"path": str(pages)}}
        (home / "pager.yaml").write_text(
            yaml.safe_dump({"receivers": [receiver], "default_receivers": ["local-log"]})
        )
        return None, pages
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # resolve_timeout longer than the rules' repeat interval: fleetpulse sends the resolve
    (home / "alertmanager.yml").write_text(
        "global: {resolve_timeout: 24h}\nroute: {receiver: 'null', group_wait: 1s}\n"
        "receivers: [{name: 'null'}]\n"
    )
    started["alertmanager"] = start_service(
        home,
        "alertmanager",
        [
            binary,
            f"--config.file={home / 'alertmanager.yml'}",
            f"--storage.path={home / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        env,
    )
    wait_http(started["alertmanager"], f"{url}/-/ready", timeout=30, ok_only=True)
    receiver = {"name": "alertmanager", "alertmanager": {"url": url}}
    (home / "pager.yaml").write_text(
        yaml.safe_dump({"receivers": [receiver], "default_receivers": ["alertmanager"]})
    )
    return url, None


def _wait_sink(svc: Service, store: Path, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while endpoint(store) is None:
        check_alive(svc)
        if time.monotonic() > deadline:
            raise DevstackError(
                f"the sink did not open ClickHouse after {timeout:.0f}s; see {svc.log}"
            )
        time.sleep(0.2)


# -- the run ----------------------------------------------------------------------------------


class AlertFeed(threading.Thread):
    """Follows the alerts topic from its start and prints each lifecycle event."""

    def __init__(self, bootstrap: str, topic: str, show: Any) -> None:
        super().__init__(name="alert-feed", daemon=True)
        self.consumer = Consumer(consumer_config(bootstrap, f"fleetpulse-demo-{os.getpid()}"))
        md = self.consumer.list_topics(topic, timeout=10).topics[topic]
        self.consumer.assign([TopicPartition(topic, p, 0) for p in md.partitions])
        self.codec = AvroCodec(logical_types=False)
        self.show = show
        self.events: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def firing(self) -> int:
        latest: dict[str, str] = {}
        for a in list(self.events):
            latest[a["dedup_key"]] = a["status"]
        return sum(1 for s in latest.values() if s == "firing")

    def run(self) -> None:
        while not self.stop.is_set():
            for msg in self.consumer.consume(500, timeout=0.2):
                if msg.error():
                    continue
                a = self.codec.decode(msg.value() or b"", "Alert")
                self.events.append(a)
                self.show(a)
        self.consumer.close()


def _run(demo: DemoStack, settings: DevstackSettings, sc: Scenario, console: Console) -> DemoResult:
    sdk = load_settings(
        SdkSettings,
        bootstrap_servers=demo.bootstrap,
        topic_prefix=settings.topic_prefix,
        home=demo.home,
        policy=demo.home / "policy.yaml",
    )
    sim = Simulator(sc, sdk, api_url=demo.api_url)
    since = datetime.now(UTC) - timedelta(seconds=5)

    def elapsed() -> float:
        return time.time() - sim.result.started if sim.result.started else 0.0

    def say(t: float, text: str) -> None:
        console.print(f"[dim]t+{t:5.1f}s[/]  {text}")

    def show_alert(a: dict[str, Any]) -> None:
        quiet = a["labels"].get("suppressed")
        if a["status"] == "firing":
            colour = "red" if a["severity"] == "critical" else "yellow"
            tag = f"[{colour}]FIRING {a['severity']}[/]"
        else:
            tag = "[green]RESOLVED[/]"
        why = f" [dim]({quiet}: {a['root_cause']})[/]" if quiet and a["status"] == "firing" else ""
        say(elapsed(), f"alert {tag} {a['dedup_key']}{why}")

    def show_breaker(target: str, state: str) -> None:
        colour = {"OPEN": "red", "FORCED_OPEN": "red", "HALF_OPEN": "yellow"}.get(state, "green")
        say(elapsed(), f"breaker [{colour}]{state}[/] {target} (as the agents' SDK sees it)")

    sim.enroll()
    tokens = console_tokens(sim)
    _print_console(console, demo.api_url, tokens)
    sim.publish_bundles(say)
    feed = AlertFeed(demo.bootstrap, settings.topics.alerts, show_alert)
    feed.start()
    console.print(
        f"[bold]scenario {sc.name}[/]: {len(sc.agent_ids())} agents for {sc.duration_s:.0f}s. "
        f"{sc.description.strip()}"
    )
    status = console.status("")
    status.start()
    ticker_stop = threading.Event()

    def tick() -> None:
        while not ticker_stop.wait(0.5):
            status.update(
                f"t+{elapsed():.0f}s of {sc.duration_s:.0f}s · {len(sim.result.emitted):,} task "
                f"events · {feed.firing()} alerts firing"
            )

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        result = sim.run(say, on_breaker=show_breaker)
    finally:
        ticker_stop.set()
        status.stop()
    produced = result.event_ids()
    console.print(
        f"{len(produced):,} task events produced; waiting for ClickHouse to have them all..."
    )
    sink = load_settings(SinkSettings, home=demo.home, bootstrap_servers=demo.bootstrap)
    analyst = open_analyst(sink)
    try:
        db = sink.clickhouse_database
        rows = _wait_rows(analyst, db, since, len(produced), timeout=90)
        stored = report.event_ids(analyst, db, since)
        feed.stop.set()
        _wait_alert_rows(analyst, db, since, len(feed.events), timeout=30)
        until = datetime.now(UTC) + timedelta(seconds=1)
        built = report.build(analyst, db, since, until, sc.audit)
    finally:
        analyst.close()
    out = DemoResult(
        sim=result,
        report=built,
        rows=rows,
        missing=len(produced - stored),
        extra=len(stored - produced),
        home=demo.home,
        alerts=feed.events,
        pages=demo.pages,
        alertmanager_url=demo.alertmanager_url,
        console_url=f"{demo.api_url}/ui/",
        console_tokens=tokens,
    )
    _print_report(out, console)
    return out


def console_tokens(sim: Simulator) -> dict[str, str]:
    """A principal (``console-<role>``) and its token for each console role, created by the
    simulated release manager (engineering) over the API."""
    gw = sim.gateway("release")
    return {r: gw.add_principal(f"console-{r}", r, "")["token"] for r in CONSOLE_ROLES}


def _print_console(console: Console, api_url: str, tokens: dict[str, str]) -> None:
    console.print(
        f"[bold]operations console[/]: {api_url}/ui/ (live while the scenario runs); "
        "sign in with the token of a role:"
    )
    for role, token in tokens.items():
        console.print(f"  {role:<12} {token}", soft_wrap=True)


def _wait_rows(analyst: Any, db: str, since: datetime, expected: int, *, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        rows, _ = report.count_events(analyst, db, since)
        if rows >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def _wait_alert_rows(
    analyst: Any, db: str, since: datetime, expected: int, *, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if report.count_alerts(analyst, db, since) >= expected:
            return
        time.sleep(0.5)


def _print_report(out: DemoResult, console: Console) -> None:
    console.rule("[bold]report, read from ClickHouse")
    for s in out.report.sections:
        if not s.table.rows:
            console.print(f"[bold]{s.title}[/]: no rows")
            continue
        shown = [i for i, c in enumerate(s.table.columns) if c not in _WIDE]
        columns = [s.table.columns[i] for i in shown]
        print_table(console, s.title, columns, [[r[i] for i in shown] for r in s.table.rows])
    produced = len(out.sim.event_ids())
    verdict = (
        "[bold green]exactly the events produced[/]"
        if out.missing == 0 and out.extra == 0 and out.rows == produced
        else f"[bold red]MISMATCH[/]: {out.missing} missing, {out.extra} unexpected"
    )
    console.print(
        f"ClickHouse holds {out.rows:,} task events; the agents produced {produced:,}: {verdict}"
    )
    approved = sum(1 for d in out.sim.decisions if d["approved"])
    console.print(
        f"approvals decided by the simulated approver: {approved} approved, "
        f"{len(out.sim.decisions) - approved} denied; tasks refused to paused agents: "
        f"{out.sim.paused_skips}"
    )
    if out.alertmanager_url:
        console.print(f"alerts were delivered to Alertmanager ({out.alertmanager_url})")
    elif out.pages is not None:
        n = len(out.pages.read_text().splitlines()) if out.pages.exists() else 0
        console.print(
            f"{n} alert events were paged to {out.pages} (install prometheus-alertmanager to "
            "page a real Alertmanager)"
        )
