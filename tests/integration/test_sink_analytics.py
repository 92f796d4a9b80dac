"""The sink's other topics, its rollups, and the analysts' commands, against the real broker.

- alerts, control, governance and metrics records land in their tables field by field, and
  the rollups (per-minute agent and integration stats, daily per agent version) agree with
  the raw rows;
- ``fleetpulse report daily | agent | integration | audit`` give the known answers on a known
  data set, through the process that owns the embedded store and without it;
- ``fleetpulse sql`` is read-only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from fleetpulse.contract.clock import ManualClock
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.topics import Topics
from fleetpulse.sdk import Fleet
from fleetpulse.sink.migrate import migrate
from fleetpulse.sink.query import endpoint
from fleetpulse.sink.runner import SinkRunner

from .helpers import read_all
from .processors_support import produce_fleet
from .sink_support import Store, assert_rollups_match
from .test_sink import settings

NOW_US = int(time.time() * 1_000_000)


def alert(i: int, status: str) -> dict[str, Any]:
    return {
        "dedup_key": f"failure_rate|agent:a{i}", "rule": "failure_rate", "kind": "agent",
        "status": status, "severity": "critical", "scope_type": "agent", "scope_id": f"a{i}",
        "value": 0.4 + i / 100, "threshold": 0.2, "window_s": 300, "summary": f"a{i} fails",
        "description": "d", "runbook": "restart", "runbook_url": "https://runbooks/x",
        "labels": {"team": "billing", "i": str(i)}, "root_cause": None if i else "integration:crm",
        "started_at": NOW_US - 60_000_000, "ended_at": NOW_US if status == "resolved" else None,
        "emitted_at": NOW_US + i,
    }  # fmt: skip


def control(i: int) -> dict[str, Any]:
    return {
        "kind": "breaker", "target_id": "integration:crm", "scope": "integration",
        "agent_id": None, "integration": "crm", "state": ["OPEN", "HALF_OPEN", "CLOSED"][i],
        "reason": f"step {i}",
        "measurements": {"failure_rate": 0.5, "calls": 40.0} if i == 0 else {},
        "since": NOW_US + i * 1_000_000, "retry_at": NOW_US + 30_000_000 if i == 0 else None,
        "probe_allowance": 0.1 * i, "sequence": NOW_US + i, "actor": "processor:breakers",
    }  # fmt: skip


def governance(i: int) -> dict[str, Any]:
    return {
        "event_id": f"g{i}", "entity_type": "agent_version", "entity_id": f"billing-bot@{i + 1}",
        "action": "activate", "actor": "user:ada", "actor_role": "engineering",
        "agent_id": "billing-bot", "version": i + 1 if i else None, "content_hash": f"h{i}",
        "reason": "rollout", "payload_json": '{"label": "prod"}', "at": NOW_US + i,
        "sequence": i + 1,
    }  # fmt: skip


def snapshot(i: int) -> dict[str, Any]:
    return {
        "scope_type": "agent", "scope_id": f"a{i}", "dimensions": {"agent_id": f"a{i}"},
        "horizon_s": 300, "window_start": NOW_US - 300_000_000, "window_end": NOW_US,
        "emitted_at": NOW_US + i, "task_count": 10 + i, "success": 8, "failure": 1 + i,
        "timeout": 1, "cancelled": 0, "denied": 0, "failure_rate": 0.2, "latency_p50_ms": 12.5,
        "latency_p90_ms": 40.0, "latency_p95_ms": 55.0, "latency_p99_ms": 90.0,
        "cost_micros": 1234 + i, "input_tokens": 100, "output_tokens": 50, "tool_calls": 20,
        "tool_errors": 2, "tool_error_rate": 0.1, "tool_denied": 1, "tool_short_circuited": 0,
        "late_events": 0,
    }  # fmt: skip


TIME_FIELDS = {"started_at", "ended_at", "emitted_at", "since", "retry_at", "at",
               "window_start", "window_end"}  # fmt: skip


def table_rows(store: Store, table: str, order: str) -> list[dict[str, Any]]:
    b = store.backend()
    try:
        names = [r["name"] for r in b.rows(f"DESCRIBE TABLE {b.database}.{table}")]
        select = ", ".join(
            f"toUnixTimestamp64Micro({n}) AS {n}__us" if n in TIME_FIELDS else n for n in names
        )
        return b.rows(f"SELECT {select} FROM {b.database}.{table} ORDER BY {order}")
    finally:
        b.close()


def assert_same(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    assert len(rows) == len(records)
    for row, rec in zip(rows, records, strict=True):
        for f, want in rec.items():
            got = row[f"{f}__us"] if f in TIME_FIELDS else row[f]
            if want is None:
                want = 0 if f in TIME_FIELDS or f == "version" else ""
            if isinstance(want, float):
                assert got == pytest.approx(want), f
            elif isinstance(want, dict):
                assert {k: v for k, v in got.items()} == want, f
            else:
                assert str(got) == str(want), (f, got, want)


def test_every_topic_lands_in_its_table_and_the_rollups_add_up(
    kafka: Any, fresh_prefix: Topics, store: Store
) -> None:
    bootstrap = kafka.bootstrap_servers
    n = produce_fleet(bootstrap, fresh_prefix, agents=5, tasks=20, seed=7)
    codec = AvroCodec()
    alerts = [alert(0, "firing"), alert(1, "firing"), alert(1, "resolved")]
    controls = [control(i) for i in range(3)]
    governances = [governance(i) for i in range(2)]
    snapshots = [snapshot(i) for i in range(3)]
    p = Producer({"bootstrap.servers": bootstrap})
    for topic, name, records in (
        (fresh_prefix.alerts, "Alert", alerts),
        (fresh_prefix.control, "ControlMessage", controls),
        (fresh_prefix.governance, "GovernanceEvent", governances),
        (fresh_prefix.metrics, "MetricSnapshot", snapshots),
    ):
        for r in records:  # one key per topic: their order is kept
            p.produce(topic, codec.encode(name, r), b"k")
    p.produce(fresh_prefix.alerts, b"\xc3\x01garbage", b"k")  # to the DLQ, with its reason
    p.flush(10)
    total = n + len(alerts) + len(controls) + len(governances) + len(snapshots)
    backend = store.backend()
    migrate(backend)
    runner = SinkRunner(settings(bootstrap, fresh_prefix, store), backend)
    runner.run(max_events=total)
    backend.close()
    assert runner.counters["dlq"] == 1
    assert_same(table_rows(store, "alerts", "emitted_at"), alerts)
    assert_same(table_rows(store, "breaker_transitions", "sequence"), controls)
    assert_same(table_rows(store, "governance", "sequence"), governances)
    assert_same(table_rows(store, "metric_snapshots", "emitted_at"), snapshots)
    events = read_all(bootstrap, fresh_prefix.task_events, n, logical_types=False)
    assert_rollups_match(store, events)


# -- reports on a known data set ----------------------------------------------------------------

DAY = (datetime.now(UTC) - timedelta(days=1)).date()
T2AM = datetime(DAY.year, DAY.month, DAY.day, 2, 0, tzinfo=UTC)


def _us(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def produce_known(bootstrap: str, topics: Topics) -> int:
    """Yesterday at 02:00 UTC: billing-bot v1 reads customer/42 four times; v2 twice, the
    second time its CRM update fails; support-bot mails three times and times out once. One
    more billing-bot task today (not in yesterday's report)."""
    produced = 0

    def run(agent: str, version: str, start: datetime, plan: list[str]) -> None:
        nonlocal produced
        clock = ManualClock(_us(start))
        fleet = Fleet.connect(
            agent, agent_version=version, clock=clock, bootstrap_servers=bootstrap,
            topic_prefix=topics.prefix, spool_dir=Path(f"/tmp/fp-spool-{uuid.uuid4().hex[:8]}"),
        )  # fmt: skip
        with fleet:
            for step in plan:
                try:
                    with fleet.task("invoice", input={"step": step}) as task:
                        if agent == "billing-bot":
                            with task.tool("crm", "get", access="read", target="customer/42"):
                                clock.advance(ms=20)
                        if step == "crm-fails":
                            with task.tool(
                                "crm", "update", access="write", target="customer/42"
                            ) as call:
                                clock.advance(ms=50)
                                call.mark("error", "HTTP500")
                            raise RuntimeError("crm update failed")
                        if agent == "support-bot":
                            with task.tool("mail", "send", access="write", target="ticket/7"):
                                clock.advance(ms=30)
                            if step == "timeout":
                                raise TimeoutError("model")
                        clock.advance(ms=100)
                except (RuntimeError, TimeoutError):
                    pass
                produced += 1
                clock.advance(s=60)
            fleet.flush()

    run("billing-bot", "v1", T2AM, ["ok"] * 4)
    run("billing-bot", "v2", T2AM + timedelta(minutes=10), ["ok", "crm-fails"])
    run("support-bot", "v1", T2AM + timedelta(minutes=20), ["ok", "ok", "ok", "timeout"])
    run("billing-bot", "v2", datetime.now(UTC) - timedelta(minutes=5), ["ok"])
    codec = AvroCodec()
    p = Producer({"bootstrap.servers": bootstrap})
    crm_open = control(0) | {"since": _us(T2AM + timedelta(minutes=11)), "sequence": 1}
    p.produce(topics.control, codec.encode("ControlMessage", crm_open), b"integration:crm")
    rollback = governance(1) | {"at": _us(T2AM + timedelta(minutes=30)), "action": "rollback"}
    p.produce(topics.governance, codec.encode("GovernanceEvent", rollback), b"g1")
    p.flush(10)
    return produced + 2


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetpulse.cli", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def report_json(env: dict[str, str], *args: str) -> Any:
    out = cli(env, "report", *args, "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def check_reports(env: dict[str, str]) -> None:
    daily = report_json(env, "daily", "--day", DAY.isoformat())
    agents = {r["agent_id"]: r for r in daily[f"agents on {DAY.isoformat()} (UTC)"]}
    assert set(agents) == {"billing-bot", "support-bot"}
    bb, sb = agents["billing-bot"], agents["support-bot"]
    assert (bb["tasks"], bb["success"], bb["failed"], bb["versions"]) == (6, 5, 1, ["v1", "v2"])
    assert (sb["tasks"], sb["success"], sb["failed"]) == (4, 3, 1)
    assert sb["failure_rate"] == 0.25 and bb["tool_calls"] == 7 and sb["tool_calls"] == 4
    assert 100 <= float(bb["p50_ms"]) <= 200  # 120 ms per task; t-digest, so a range
    integrations = daily["integrations by errors"]
    assert [(r["integration"], r["calls"], r["errors"]) for r in integrations] == [
        ("crm", 7, 1), ("mail", 4, 0)
    ]  # fmt: skip

    agent = report_json(env, "agent", "billing-bot", "--days", "3")
    days = agent["billing-bot: days by version"]
    assert [(r["day"], r["agent_version"], r["tasks"], r["failed"]) for r in days[:2]] == [
        (DAY.isoformat(), "v1", 4, 0), (DAY.isoformat(), "v2", 2, 1)
    ]  # fmt: skip
    (failure,) = agent["billing-bot: latest tasks that did not succeed"]
    assert (failure["outcome"], failure["error_type"]) == ("failure", "RuntimeError")
    (crm,) = agent["billing-bot: integrations"]
    assert (crm["integration"], crm["calls"], crm["errors"]) == ("crm", 8, 1)

    since, until = T2AM.isoformat(), (T2AM + timedelta(hours=1)).isoformat()
    integ = report_json(env, "integration", "crm", "--since", since, "--until", until)
    (hour,) = integ["crm: by hour"]
    assert (hour["calls"], hour["failed"]) == (7, 1)
    (bb_calls,) = integ["crm: agents by failed calls"]
    assert (bb_calls["agent_id"], bb_calls["calls"], bb_calls["failed"]) == ("billing-bot", 7, 1)
    assert bb_calls["top_error_types"] == ["HTTP500"]
    (transition,) = integ["crm: breaker transitions"]
    assert transition["state"] == "OPEN"

    audit = report_json(env, "audit", "--agent", "billing-bot", "--target", "customer/42",
                        "--since", since, "--until", until)  # fmt: skip
    calls = audit["billing-bot on customer/42: calls"]
    assert [(c["operation"], c["status"], c["agent_version"]) for c in calls] == [
        *[("get", "ok", "v1")] * 4, ("get", "ok", "v2"), ("get", "ok", "v2"),
        ("update", "error", "v2"),
    ]  # fmt: skip
    assert calls[-1]["task_outcome"] == "failure" and calls[-1]["access"] == "write"
    (gov,) = audit["billing-bot: governance actions in the same span"]
    assert (gov["action"], gov["actor"]) == ("rollback", "user:ada")


def test_reports_give_the_known_answers_and_sql_is_read_only(
    kafka: Any, fresh_prefix: Topics, store: Store, tmp_path: Path
) -> None:
    bootstrap = kafka.bootstrap_servers
    n = produce_known(bootstrap, fresh_prefix)
    env = {
        **os.environ,
        "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
        "FLEETPULSE_TOPIC_PREFIX": fresh_prefix.prefix,
        "FLEETPULSE_HOME": str(tmp_path / "home"),
        "FLEETPULSE_SINK_BATCH_WAIT_S": "0.2",
        **store.env,
    }
    # the sink owns the store and serves the analysts' queries while it runs
    log = (tmp_path / "sink.log").open("ab")
    sink = subprocess.Popen([sys.executable, "-m", "fleetpulse.cli", "sink", "run"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        count = "SELECT count() AS n FROM " + store.database + ".task_events"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            out = cli(env, "sql", count, "--format", "json")
            if out.returncode == 0 and json.loads(out.stdout) == [{"n": n - 2}]:
                break
            time.sleep(0.5)
        assert json.loads(out.stdout) == [{"n": n - 2}], out.stderr
        if store.kind == "chdb":
            assert endpoint(Path(store.env["FLEETPULSE_DATA_DIR"])) is not None
        while True:  # the control and governance records are in too
            out = cli(env, "sql", "SELECT count() AS n FROM " + store.database +
                      ".governance", "--format", "csv")  # fmt: skip
            if out.stdout.strip().endswith("1") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        check_reports(env)
        denied = cli(env, "sql", f"DROP TABLE {store.database}.task_events")
        assert denied.returncode == 2 and "read-only" in denied.stderr
        sneaky = cli(env, "sql", f"SELECT 1; DROP TABLE {store.database}.task_events")
        assert sneaky.returncode == 2 and "Syntax error" in sneaky.stderr
        assert "Traceback" not in sneaky.stderr
    finally:
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0
    if store.kind == "chdb":  # no owner now: the CLI opens the store itself
        assert endpoint(Path(store.env["FLEETPULSE_DATA_DIR"])) is None
        check_reports(env)
