"""The `fleetpulse` command line. Each verb builds its settings here, in main, and passes them on.

Verbs today: `dev up | down | status | fetch`, `demo`. Later issues add processors, sink, api,
pager, sql, sim, agents, breakers, alerts and approvals (names fixed in ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fleetpulse.config import DevstackSettings, load_settings
from fleetpulse.errors import FleetpulseError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Keep control of AI agent fleets.",
)
dev = typer.Typer(no_args_is_help=True, help="The local stack: real Kafka, no Docker.")
app.add_typer(dev, name="dev")
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


@app.command("demo")
def demo(
    agents: Annotated[int, typer.Option(help="simulated agents")] = 6,
    seconds: Annotated[float, typer.Option(help="how long the fleet runs")] = 8.0,
    keep: Annotated[bool, typer.Option(help="leave the devstack running afterwards")] = False,
) -> None:
    """Start the devstack, run a small fleet through the SDK, read the events back."""
    from fleetpulse.sim.demo import run_demo

    run_demo(_devstack_settings(), agents=agents, seconds=seconds, keep=keep, console=console)


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app()
    except FleetpulseError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
