"""`fleetpulse demo` and `fleetpulse sim ...`: the one-command demo and the fleet simulator."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from fleetpulse.contract.config import DevstackSettings, SdkSettings, load_settings

sim = typer.Typer(no_args_is_help=True, help="A simulated fleet with fault injection.")
console = Console()
ScenarioArg = Annotated[
    str, typer.Argument(help="a scenario YAML file, or a built-in one by name (incident)")
]


def register(app: typer.Typer) -> None:
    app.add_typer(sim, name="sim")
    app.command("demo")(demo)


def demo(
    scenario: Annotated[str, typer.Option(help="scenario file or built-in name")] = "incident",
    keep: Annotated[bool, typer.Option(help="leave the demo stack running afterwards")] = False,
    report_json: Annotated[
        Path | None, typer.Option(help="also write the report's tables as JSON here")
    ] = None,
) -> None:
    """Start everything (Kafka, processors, sink, API, pager) under $FLEETPULSE_HOME/demo, run
    the incident scenario (about 2.5 minutes) with live progress, and report from ClickHouse."""
    from fleetpulse.sim.demo import run_demo

    out = run_demo(load_settings(DevstackSettings), scenario=scenario, keep=keep, console=console)
    if report_json is not None:
        doc = {s.title: s.table.records() for s in out.report.sections}
        report_json.write_text(json.dumps(doc, indent=2, default=str))
    if out.missing or out.extra:
        raise typer.Exit(1)


ScaleOpt = Annotated[
    int,
    typer.Option(
        min=1,
        max=10_000,
        help="multiply every agent group's count: the named agents keep their names and run "
        "through the SDK, the added ones are planned in bulk on one producer",
    ),
]


@sim.command("show")
def sim_show(scenario: ScenarioArg, scale: ScaleOpt = 1) -> None:
    """Validate a scenario and print its fleet and timeline."""
    from fleetpulse.sim.scenario import load_scenario

    sc = load_scenario(scenario).scaled(scale)
    title = f"{sc.name}: {len(sc.agent_ids()):,} agents"
    fleet = Table("agents", "role", "task type", "model", "tasks/s", "tools", title=title)
    for g in sc.agents:
        tools = ", ".join(f"{t.integration}.{t.operation}({t.access})" for t in g.tools)
        extra = len(g.extra_ids())
        names = ", ".join(g.named_ids()) + (f" + {extra:,} more" if extra else "")
        fleet.add_row(names, g.role, g.task_type, g.model, f"{g.rate:g}", tools)
    console.print(fleet)
    timeline = Table("at", "what", title=f"timeline ({sc.duration_s:.0f}s)")
    for step in sc.timeline:
        timeline.add_row(f"{step.at:g}s", step.describe())
    console.print(timeline)


@sim.command("policy")
def sim_policy(scenario: ScenarioArg) -> None:
    """Print the scenario's fleet policy (run the processors with it: FLEETPULSE_POLICY)."""
    from fleetpulse.sim.scenario import load_scenario

    typer.echo(yaml.safe_dump(load_scenario(scenario).policy, sort_keys=False), nl=False)


@sim.command("run")
def sim_run(scenario: ScenarioArg, scale: ScaleOpt = 1) -> None:
    """Run a scenario's fleet through the SDK against the configured Kafka (the running
    devstack, or FLEETPULSE_BOOTSTRAP_SERVERS). The processors should run with the scenario's
    policy: `fleetpulse sim policy FILE > policy.yaml; FLEETPULSE_POLICY=policy.yaml ...`.
    `--scale 72` runs the incident on 1,008 agents, `--scale 715` on 10,010."""
    from fleetpulse.sim.runner import Simulator
    from fleetpulse.sim.scenario import load_scenario

    sc = load_scenario(scenario).scaled(scale)
    settings = load_settings(SdkSettings)
    if settings.policy is None:
        path = Path(settings.home) / "sim" / f"{sc.name}.policy.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(sc.policy, sort_keys=False))
        settings = settings.model_copy(update={"policy": path})
        console.print(f"the agents' SDK uses the scenario's policy, written to {path}")

    def say(t: float, text: str) -> None:
        console.print(f"[dim]t+{t:5.1f}s[/]  {text}")

    simulator = Simulator(sc, settings)
    simulator.publish_bundles(say)

    def breaker(target: str, state: str) -> None:
        say(time.time() - simulator.result.started, f"breaker {target} {state}")

    try:
        result = simulator.run(say, on_breaker=breaker)
    except KeyboardInterrupt:
        simulator.stop.set()
        raise
    outcomes: dict[str, int] = {}
    for e in result.emitted:
        outcomes[e.event["outcome"]] = outcomes.get(e.event["outcome"], 0) + 1
    console.print(f"{len(result.emitted):,} task events produced: {outcomes}")
    if result.bulk is not None:
        b = result.bulk
        rate = b.events / max(result.ended - result.started, 1e-9)
        behind = f", fell behind {b.behind} times" if b.behind else ""
        console.print(
            f"{b.events:,} more from the added agents ({rate:,.0f}/s{behind}): {b.outcomes}"
        )
