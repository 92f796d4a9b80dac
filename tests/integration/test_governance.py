"""Governance across processes on the real broker: the CLI publishes, activates and rolls back
while an SDK agent process picks each version up live; approvals block an agent process while
an approver decides from the CLI; least privilege in the SDK, and on the stream for an agent
that bypasses it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetpulse import Fleet, PermissionDeniedError
from fleetpulse.contract.events import AvroCodec
from fleetpulse.contract.topics import Topics

from .helpers import consumer_from_start, process_env, read_all, wait_for

pytestmark = pytest.mark.integration

AGENT_SCRIPT = Path(__file__).with_name("governance_agent.py")
BUNDLE = """
agent_id: {agent}
role: support
model: {{name: gpt-4o, parameters: {{temperature: {temperature}}}}}
prompt: "Triage {{ticket}}"
tools:
  - {{integration: zendesk, access: read}}
  - {{integration: zendesk, access: write, operations: [comment, close]}}
approvals: [zendesk.close]
"""
POLICY = """
permissions:
  support: {zendesk: [read, write], crm: [read]}
governance:
  production_requires_second_person: true
"""


class Setup:
    def __init__(self, bootstrap: str, topics: Topics, workdir: Path) -> None:
        self.bootstrap, self.topics, self.workdir = bootstrap, topics, workdir
        self.env = process_env(bootstrap, topics, workdir, POLICY)
        self.procs: list[subprocess.Popen[bytes]] = []

    def cli(self, *args: str, ok: bool | None = True, token: str | None = None) -> str:
        """Run the CLI; ``ok``: assert it succeeded (True) or failed (False), None: either."""
        env = self.env | ({"FLEETPULSE_TOKEN": token} if token else {})
        r = subprocess.run(
            [sys.executable, "-m", "fleetpulse.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if ok is not None:
            assert (r.returncode == 0) == ok, f"{args}: {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout + r.stderr

    def bundle(self, agent: str, temperature: float) -> Path:
        path = self.workdir / f"{agent}-{temperature}.yaml"
        path.write_text(BUNDLE.format(agent=agent, temperature=temperature))
        return path

    def agent(self, mode: str, agent: str, *args: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, str(AGENT_SCRIPT), mode, agent, str(self.workdir), *args],
            env=self.env,
            stdout=(self.workdir / f"{agent}-{mode}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.procs.append(p)
        return p

    def lines(self, agent: str, mode: str) -> list[dict[str, Any]]:
        path = self.workdir / f"{agent}-{mode}.jsonl"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]

    def token(self, name: str, role: str, *extra: str) -> str:
        out = self.cli("principals", "add", name, "--role", role, *extra)
        return next(line for line in out.splitlines() if line.startswith("fp_"))

    def close(self) -> None:
        (self.workdir / "stop").touch()  # agents stop on it; services on SIGTERM
        for p in self.procs:
            for stop in (lambda: None, p.terminate, p.kill):
                stop()
                try:
                    p.wait(3)
                    break
                except subprocess.TimeoutExpired:
                    continue


@pytest.fixture
def setup(kafka, fresh_prefix, tmp_path):
    s = Setup(kafka.bootstrap_servers, fresh_prefix, tmp_path)
    yield s
    s.close()


def test_publish_activate_rollback_picked_up_live(setup: Setup) -> None:
    s = setup
    agent = "triage"
    out = s.cli("agents", "publish", str(s.bundle(agent, 0.2)), "-m", "first", "--as", "alice")
    assert f"published {agent}@1" in out
    s.cli("agents", "publish", str(s.bundle(agent, 0.1)), "-m", "cooler", "--as", "alice")
    # same content again: refused, nothing recorded
    assert "already has this content" in s.cli(
        "agents", "publish", str(s.bundle(agent, 0.1)), "-m", "again", ok=False
    )
    # the policy wants a second person on production: alice may not promote her own version
    refused = s.cli("agents", "activate", agent, "--version", "1", "--as", "alice", ok=False)
    assert "another engineer" in refused
    s.cli("agents", "activate", agent, "--version", "1", "--as", "bob")

    s.agent("follow", agent)

    def seen(version: str, temperature: float) -> Callable[[], bool]:
        return lambda: any(
            x["version"] == version and x["temperature"] == temperature
            for x in s.lines(agent, "follow")[-3:]
        )

    wait_for(seen("1", 0.2), "the agent runs version 1")
    s.cli("agents", "activate", agent, "--version", "2", "--as", "bob", "--reason", "cooler")
    wait_for(seen("2", 0.1), "the agent picked version 2 up without a restart", timeout=10)

    diff = s.cli("agents", "diff", agent, "--from", "1", "--to", "2")
    assert "-    temperature: 0.2" in diff and "+    temperature: 0.1" in diff
    history = json.loads(s.cli("agents", "history", agent, "--json"))
    assert [(v["version"], v["author"], v["message"]) for v in history["versions"]] == [
        (1, "alice", "first"),
        (2, "alice", "cooler"),
    ]
    assert history["labels"] == {"production": 2, "latest": 2}

    s.cli("agents", "rollback", agent, "--reason", "v2 regressed", "--as", "bob")
    wait_for(seen("1", 0.2), "the agent is back on version 1", timeout=10)
    assert "no earlier production version" in s.cli("agents", "rollback", agent, ok=False)
    shown = s.cli("agents", "show", agent)  # production: version 1 again
    assert f"# {agent}@1 by alice: first" in shown and "temperature: 0.2" in shown

    # every event carries the version that was active when it ran, in order
    (s.workdir / "stop").touch()
    s.procs[0].wait(15)
    n = len(s.lines(agent, "follow"))
    versions = [e["agent_version"] for e in read_all(s.bootstrap, s.topics.task_events, n)]
    runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
    assert runs == ["1", "2", "1"]

    audit = json.loads(s.cli("audit", "--agent", agent, "--json"))
    assert [(r["action"], r["actor"], r["outcome"]) for r in audit] == [
        ("published", "alice", "ok"),
        ("published", "alice", "ok"),
        ("access_denied", "alice", "ok"),
        ("activated", "bob", "ok"),
        ("activated", "bob", "ok"),
        ("rolled_back", "bob", "ok"),
    ]


def _pending(s: Setup, agent: str) -> str:
    rows = json.loads(s.cli("approvals", "list", "--json"))
    mine = [r for r in rows if r["agent_id"] == agent]
    return mine[0]["approval_id"] if mine else ""


def test_approvals_across_processes(setup: Setup) -> None:
    s = setup
    abe = s.token("abe", "approver")
    for agent in ("a-yes", "a-no", "a-late"):
        s.cli("agents", "publish", str(s.bundle(agent, 0.2)), "-m", "v1", "--as", "alice")
        s.cli("agents", "activate", agent, "--version", "1", "--as", "bob")

    # approved: the agent was blocked until abe decided, then the gated call went through
    s.agent("approve", "a-yes", "zendesk.close", "60")
    approval = wait_for(lambda: _pending(s, "a-yes"), "a-yes asks for approval")
    assert s.lines("a-yes", "approve") == [{"r": "waiting"}]
    # nobody approves their own request, and an agent's role cannot decide at all
    svc = s.token("svc-a-yes", "agent", "--agent", "a-yes")
    assert "may not approvals.decide" in s.cli(
        "approvals", "approve", approval, token=svc, ok=False
    )
    s.cli("approvals", "approve", approval, "--reason", "looked fine", token=abe)
    done = wait_for(lambda: s.lines("a-yes", "approve")[1:], "a-yes proceeds")
    assert done == [{"r": "approved", "by": "abe", "called": True, "outcome": "success"}]

    # denied: the agent gets the reason
    s.agent("approve", "a-no", "zendesk.close", "60")
    approval = wait_for(lambda: _pending(s, "a-no"), "a-no asks for approval")
    assert "needs a reason" in s.cli("approvals", "deny", approval, "--reason", " ", ok=False)
    s.cli("approvals", "deny", approval, "--reason", "customer disputes it", token=abe)
    done = wait_for(lambda: s.lines("a-no", "approve")[1:], "a-no is told")
    assert done == [
        {"r": "denied", "by": "abe", "reason": "customer disputes it", "outcome": "denied"}
    ]

    # expired: nobody decided in time; a late decision is refused
    s.agent("approve", "a-late", "zendesk.close", "2")
    approval = wait_for(lambda: _pending(s, "a-late"), "a-late asks for approval")
    done = wait_for(lambda: s.lines("a-late", "approve")[1:], "a-late gives up", timeout=20)
    assert done == [{"r": "expired", "outcome": "timeout"}]
    assert "already expired" in s.cli("approvals", "approve", approval, token=abe, ok=False)

    rows = json.loads(s.cli("approvals", "list", "--status", "all", "--json"))
    assert sorted((r["agent_id"], r["status"], r["decided_by"]) for r in rows) == [
        ("a-late", "expired", "agent:a-late"),
        ("a-no", "denied", "abe"),
        ("a-yes", "approved", "abe"),
    ]
    actions = [r["action"] for r in json.loads(s.cli("audit", "--principal", "abe", "--json"))]
    assert actions == ["approval_decided", "approval_decided", "approval_decided"]


def test_least_privilege_in_the_sdk_and_on_the_stream(setup: Setup) -> None:
    s = setup
    agent = "perm-agent"
    s.cli("agents", "publish", str(s.bundle(agent, 0.2)), "-m", "v1", "--as", "alice")
    s.cli("agents", "activate", agent, "--version", "1", "--as", "bob")
    for stage in ("alerts", "metrics"):  # the metric worker's ingest pass feeds the alerts
        processors = subprocess.Popen(
            [sys.executable, "-m", "fleetpulse.cli", "processors", "run", "--stage", stage],
            env={**s.env, "FLEETPULSE_PROCESSORS_WEB_PORT": "0"},
            stdout=(s.workdir / f"{stage}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        s.procs.append(processors)
    made: list[str] = []
    with Fleet.connect(
        agent,
        bootstrap_servers=s.bootstrap,
        topic_prefix=s.topics.prefix,
        policy=s.workdir / "policy.yaml",
        spool_dir=s.workdir / "spool",
    ) as fleet:
        assert fleet.agent_role == "support" and fleet.agent_version == "1"
        with fleet.task("sync", input={"n": 1}) as task:
            with task.tool("zendesk", "comment", access="write", target="ticket/1"):
                made.append("zendesk.comment")
            with pytest.raises(PermissionDeniedError, match="may not write crm"):
                with task.tool("crm", "update", access="write", target="acct/7"):
                    made.append("crm.update")  # never reached: checked before the call
            with pytest.raises(PermissionDeniedError, match="needs a human's approval"):
                with task.tool("zendesk", "close", access="write", target="ticket/1"):
                    made.append("zendesk.close")
        fleet.flush(10)
    assert made == ["zendesk.comment"]
    calls = [(c["integration"], c["operation"], c["status"]) for c in task.event["tool_calls"]]
    assert calls == [
        ("zendesk", "comment", "ok"),
        ("crm", "update", "denied"),
        ("zendesk", "close", "denied"),
    ]

    # an agent that does not use the SDK's guard writes to crm anyway: the stream catches it
    rogue = {
        **task.event,
        "event_id": uuid.uuid4().hex,
        "task_id": uuid.uuid4().hex,
        "agent_id": "rogue",
        "agent_version": "",
        "tool_calls": [
            {**task.event["tool_calls"][1], "call_id": "c-rogue", "status": "ok",
             "error_type": None},
        ],
    }  # fmt: skip
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": s.bootstrap})
    producer.produce(s.topics.task_events, AvroCodec().encode("TaskEvent", rogue), b"rogue")
    producer.flush(10)

    consumer = consumer_from_start(s.bootstrap, s.topics.alerts)
    codec = AvroCodec()
    alerts: dict[str, dict[str, Any]] = {}

    def flagged() -> bool:
        for m in consumer.consume(100, 0.5):
            a = codec.decode(m.value(), "Alert")
            alerts[a["dedup_key"]] = a
        return "unpermitted-calls:agent=rogue|integration=crm" in alerts

    try:
        wait_for(flagged, "the alert stage flags the rogue write", timeout=60)
    finally:
        consumer.close()
    rogue_alert = alerts["unpermitted-calls:agent=rogue|integration=crm"]
    assert (rogue_alert["kind"], rogue_alert["severity"], rogue_alert["status"]) == (
        "policy_violation",
        "critical",
        "firing",
    )
    # the guarded agent's denials are recorded as such, never as bypasses
    assert not any(k.startswith("unpermitted-calls:agent=" + agent) for k in alerts)


def test_cli_through_the_api_and_the_audit_from_clickhouse(setup: Setup) -> None:
    from fleetpulse.contract.config import SinkSettings
    from fleetpulse.control.audit import AuditQuery, from_clickhouse, from_state
    from fleetpulse.devstack.kafka import free_port
    from fleetpulse.sdk.governance_log import GovernanceLog
    from fleetpulse.sink.query import open_analyst

    s = setup
    eve, ed = s.token("eve", "engineering"), s.token("ed", "engineering")
    carla = s.token("carla", "compliance")
    port = free_port()
    s.procs.append(
        subprocess.Popen(
            [sys.executable, "-m", "fleetpulse.cli", "api", "run", "--port", str(port)],
            env=s.env,
            stdout=(s.workdir / "api.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
    )
    s.env["FLEETPULSE_API_URL"] = f"http://127.0.0.1:{port}"
    wait_for(lambda: "eve" in s.cli("principals", "list", token=eve, ok=None), "the API answers")

    s.cli("agents", "publish", str(s.bundle("api-agent", 0.3)), "-m", "via api", token=eve)
    assert "another engineer" in s.cli(
        "agents", "activate", "api-agent", "--version", "1", token=eve, ok=False
    )
    s.cli("agents", "activate", "api-agent", "--version", "1", token=ed)
    assert "--as is for acting without a token" in s.cli(
        "agents", "pause", "api-agent", "--reason", "x", "--as", "mallory", token=ed, ok=False
    )
    assert "may not agents.pause" in s.cli(
        "agents", "pause", "api-agent", "--reason", "x", token=carla, ok=False
    )
    assert "unknown or revoked token" in s.cli("agents", "list", token=eve + "x", ok=False)
    listed = json.loads(s.cli("agents", "list", "--json", token=carla))
    assert [(a["agent_id"], a["labels"]) for a in listed] == [
        ("api-agent", {"production": 1, "latest": 1})
    ]
    via_api = json.loads(s.cli("audit", "--agent", "api-agent", "--json", token=carla))
    assert [(r["action"], r["actor"]) for r in via_api] == [
        ("published", "eve"),
        ("access_denied", "eve"),
        ("activated", "ed"),
    ]

    # the sink writes the same log to ClickHouse, where the audit reads the same answer
    env = s.env | {"FLEETPULSE_DATA_DIR": str(s.workdir / "ch")}
    del env["FLEETPULSE_API_URL"]
    drained = subprocess.run(
        [sys.executable, "-m", "fleetpulse.cli", "sink", "run", "--drain"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert drained.returncode == 0, drained.stderr
    settings = SinkSettings(
        bootstrap_servers=s.bootstrap,
        topic_prefix=s.topics.prefix,
        data_dir=s.workdir / "ch",
        home=s.workdir / "home",
    )
    log = GovernanceLog.open(settings, background=False)
    analyst = open_analyst(settings)
    try:
        for q in (AuditQuery(), AuditQuery(agent_id="api-agent"), AuditQuery(principal="carla")):
            columns = ("action", "actor", "actor_role", "entity_type", "entity_id", "agent_id")
            stored = [
                tuple(r[c] for c in columns) for r in from_clickhouse(analyst, "fleetpulse", q)
            ]
            folded = [tuple(r[c] for c in columns) for r in from_state(log.state, q)]
            assert stored == folded and folded
    finally:
        analyst.close()
        log.close()
