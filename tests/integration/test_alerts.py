"""The alert stage on the real broker: incidents produced through the SDK fire the expected
alerts under the expected dedup keys and resolve after recovery; a restart does not page again;
an open breaker inhibits what it explains and a failing upstream agent groups its cascade."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetpulse import CircuitOpenError, Fleet
from fleetpulse.contract.config import ProcessorSettings
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.policy import load_policy
from fleetpulse.contract.topics import Topics
from fleetpulse.control.service import ControlService
from fleetpulse.processors.alerts.stage import AlertStage

from .helpers import consumer_from_start, metric_worker, running

POLICY = """
alerts:
  rules:
    - {name: fail, kind: failure_rate, threshold: 0.5, min_volume: 10, window_s: 60}
    - {name: crm-errors, kind: integration_error_rate, threshold: 0.5, min_volume: 10,
       window_s: 60}
"""


class Alerts:
    """Everything on the alerts topic, read as it arrives."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = consumer_from_start(bootstrap, topic)
        self.codec = AvroCodec(logical_types=False)
        self.seen: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        for m in self.consumer.consume(500, 0.2):
            self.seen.append(self.codec.decode(m.value(), "Alert"))
        return self.seen

    def latest(self) -> dict[str, dict[str, Any]]:
        return {a["dedup_key"]: a for a in self.poll()}

    def wait(
        self, check: Callable[[dict[str, dict[str, Any]]], bool], what: str, timeout: float = 60
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self.latest()):
                return
        raise AssertionError(
            f"timed out waiting until {what}; saw {[(a['dedup_key'], a['status']) for a in self.seen]}"
        )


def running_stage(settings: ProcessorSettings) -> Any:
    return running(AlertStage(settings, load_policy(settings.policy)))


def wait_caught_up(stage: AlertStage) -> None:
    assert stage.caught_up.wait(60), "the alert stage did not finish its replay"


@pytest.fixture
def setup(
    kafka: Any, fresh_prefix: Topics, tmp_path: Path
) -> Iterator[tuple[ProcessorSettings, Callable[[str], Fleet]]]:
    """Settings for an alert stage run in the test, and a metric worker process (its ingest
    pass sends the alert stage what the rules count) for the whole test."""
    settings = ProcessorSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        topic_prefix=fresh_prefix.prefix,
        home=tmp_path,
        policy=tmp_path / "policy.yaml",
        alerts_eval_interval_s=0.1,
    )

    def fleet(agent: str) -> Fleet:
        return Fleet.connect(
            agent,
            bootstrap_servers=kafka.bootstrap_servers,
            topic_prefix=fresh_prefix.prefix,
            spool_dir=tmp_path / "spool" / agent,
            governance=False,
        )

    with metric_worker(kafka.bootstrap_servers, fresh_prefix, tmp_path, POLICY):
        yield settings, fleet


def run_tasks(
    fleet: Fleet, n: int, *, fail: bool, integration: str | None = "crm", **task: Any
) -> None:
    for _ in range(n):
        with contextlib.suppress(RuntimeError, CircuitOpenError):
            with fleet.task("work", **task) as t:
                if integration:
                    with t.tool(integration, "update", access="write"):
                        if fail:
                            raise RuntimeError("503 from crm")
                elif fail:
                    raise RuntimeError("bad output")
    fleet.flush(10)


def test_incident_fires_resolves_and_a_restart_does_not_page_again(setup: Any) -> None:
    settings, make_fleet = setup
    alerts = Alerts(settings.resolved_bootstrap(), settings.topics.alerts)
    keys = {"fail:agent=billing", "crm-errors:integration=crm"}
    with make_fleet("billing") as billing:
        with running_stage(settings) as stage:
            wait_caught_up(stage)
            run_tasks(billing, 20, fail=True)
            alerts.wait(
                lambda a: keys <= {k for k, v in a.items() if v["status"] == "firing"}, "both fire"
            )
        fired = {a["dedup_key"]: a for a in alerts.seen}
        assert fired["fail:agent=billing"]["value"] == 1.0
        assert fired["fail:agent=billing"]["labels"]["agent_id"] == "billing"
        assert fired["crm-errors:integration=crm"]["kind"] == "integration_error_rate"
        assert all(a["status"] == "firing" and a["ended_at"] is None for a in fired.values())
        sent = len(alerts.seen)

        # restart: the firing alerts are adopted from the topic, not sent again
        with running_stage(settings) as stage:
            wait_caught_up(stage)
            time.sleep(1.0)  # ten evaluation rounds
            assert len(alerts.poll()) == sent, "a restart paged again"
            # recovery: 40 good tasks bring the failure rate to 1/3 < 1/2
            run_tasks(billing, 40, fail=False)
            alerts.wait(lambda a: all(a[k]["status"] == "resolved" for k in keys), "both resolve")
    resolved = alerts.latest()
    for k in keys:
        assert resolved[k]["started_at"] == fired[k]["started_at"]
        assert resolved[k]["ended_at"] >= resolved[k]["started_at"]
    assert len(alerts.seen) == sent + 2


def test_open_breaker_inhibits_and_upstream_groups_its_cascade(setup: Any) -> None:
    settings, make_fleet = setup
    alerts = Alerts(settings.resolved_bootstrap(), settings.topics.alerts)
    ControlService(settings, actor="user:test").force_open("integration:crm", reason="vendor down")
    with running_stage(settings) as stage:
        wait_caught_up(stage)
        with make_fleet("orders") as orders:  # its SDK refuses crm calls: the breaker is open
            run_tasks(orders, 12, fail=False)
        with (
            make_fleet("upstream") as up,
            make_fleet("downstream") as down,
            make_fleet("solo") as solo,
        ):
            run_tasks(up, 12, fail=True, integration=None)
            run_tasks(down, 12, fail=True, integration=None, upstream_agent_id="upstream")
            run_tasks(solo, 12, fail=True, integration=None)
        want = {f"fail:agent={a}" for a in ("orders", "upstream", "downstream", "solo")}
        alerts.wait(lambda a: want <= set(a), "the four agents' failure alerts")
    got = alerts.latest()
    assert got["fail:agent=orders"]["labels"]["suppressed"] == "inhibited"
    assert got["fail:agent=orders"]["root_cause"] == "breaker:integration:crm"
    assert got["fail:agent=downstream"]["labels"]["suppressed"] == "grouped"
    assert got["fail:agent=downstream"]["root_cause"] == "fail:agent=upstream"
    for agent in ("upstream", "solo"):  # nothing else is suppressed
        assert "suppressed" not in got[f"fail:agent={agent}"]["labels"]
        assert got[f"fail:agent={agent}"]["root_cause"] is None
    # short-circuited calls never reached crm: no integration error alert either
    assert "crm-errors:integration=crm" not in got
