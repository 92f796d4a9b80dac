"""A broker outage under load: how soon the SDK, the processors, the sink and the control API
are back.

    python bench/outage.py [--json FILE] [--outage-s 20] [--rate 200]

A Kafka node of its own (devstack jars, temp dir, free ports), and four processes, each
logging to its own file at WARNING: an agent (the SDK: ``Fleet.connect``, a task every
1/rate s calling an integration that always fails, printing each increase of its acknowledged
deliveries with the time), ``fleetpulse processors run`` (metric worker, breaker stage, alert
stage), ``fleetpulse sink run`` (embedded chDB) and ``fleetpulse api run``. The policy keeps
every stage talking: the failing integration's breaker cycles OPEN -> HALF_OPEN -> OPEN about
every second, its error-rate alert repeats every second while firing, snapshots go out every
second. After a warm-up the broker is SIGKILLed, stays down ``--outage-s`` seconds, and is
started again on the same data and ports (what ``dev up`` does after a crash).

Figures:

* ``recover_s`` per stage: the broker answering again (it serves metadata) -> that stage's
  next correct output. sdk: the next delivery acknowledged; sink: the row count visible through
  the query endpoint grows; api: the next ``POST /v1/silences`` answered 201; metrics,
  breakers, alerts: the next MetricSnapshot, breaker transition, Alert written to its topic
  (by the record's produce time) after the broker answered.
  ``recover_s_max``: the slowest.
* ``error_lines`` per process: its log lines at WARNING or above, from the kill until every
  stage is back; ``error_lines_max``.

Targets (issue 21): recover_s <= 5 for every stage, error_lines <= 20 per process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from fleetpulse.contract.config import ControlSettings, DevstackSettings, SinkSettings
from fleetpulse.contract.policy import FleetPolicy
from fleetpulse.contract.topics import Topics
from fleetpulse.control.plane import ControlPlane, local_caller
from fleetpulse.devstack import KafkaNode, KafkaNodeConfig, ensure_jars, ensure_topics, free_port
from fleetpulse.sdk.governance_log import GovernanceLog
from fleetpulse.sink.query import QueryError, RemoteStore, endpoint

POLICY = """
breakers:
  defaults: {failure_rate_threshold: 0.5, minimum_calls: 5, sliding_window_s: 5,
             wait_in_open_s: 1, permitted_calls_in_half_open: 2}
alerts:
  rules:
    - {name: down-errors, kind: integration_error_rate, threshold: 0.5, min_volume: 2,
       window_s: 10, for_s: 0, repeat_interval_s: 1, severity: critical}
"""
PROCESSOR_OUTPUTS = {"metrics": "metrics", "breakers": "control", "alerts": "alerts"}


class Outputs(threading.Thread):
    """Produce times (ms) of every record the processors write to their three topics."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "outage-watch",
                "enable.auto.commit": False,
                "reconnect.backoff.max.ms": 500,
                "log_level": 0,  # the watcher's own connection failures are not the figures
            }
        )
        parts = []
        self.names: dict[str, str] = {}
        for stage, attr in PROCESSOR_OUTPUTS.items():
            topic = getattr(topics, attr)
            self.names[topic] = stage
            md = self.consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, 0) for p in md.partitions]
        self.consumer.assign(parts)
        self.seen: dict[str, list[float]] = {stage: [] for stage in PROCESSOR_OUTPUTS}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for m in self.consumer.consume(1000, 0.2):
                if m.error() is None:
                    self.seen[self.names[m.topic() or ""]].append(m.timestamp()[1] / 1000)
        self.consumer.close()


AGENT = """
import json, logging, sys, time
logging.basicConfig(level=logging.WARNING, filename=sys.argv[1],
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
from fleetpulse import Fleet
fleet = Fleet.connect(agent_id="outage-agent", agent_version="1")
last = -1
while True:
    try:
        with fleet.task("probe") as task:
            with task.tool("down", "call", access="read"):
                raise RuntimeError("down")
    except Exception:
        pass
    n = fleet.transport.delivered
    if n != last:
        print(json.dumps({"t": time.time(), "delivered": n}), flush=True)
        last = n
    time.sleep(1 / float(sys.argv[2]))
"""


def _warnings(path: Path, since: float, until: float) -> int:
    """Lines at WARNING or above logged in [since, until] (asctime is local time)."""
    n = 0
    if not path.exists():
        return 0
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3 or parts[2] not in ("WARNING", "ERROR", "CRITICAL"):
            continue
        try:
            t = time.mktime(time.strptime(f"{parts[0]} {parts[1][:8]}", "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            continue
        if since - 1 <= t <= until + 1:
            n += 1
    return n


def _answering(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    while True:
        try:
            admin.list_topics(timeout=1)
            return
        except Exception:
            time.sleep(0.05)


def run(outage_s: float, rate: float, work: Path) -> dict[str, Any]:
    settings = DevstackSettings()
    node = KafkaNode(
        KafkaNodeConfig(
            home=work / "kafka",
            jars=ensure_jars(settings.kafka_cache, settings.kafka_version),
            port=free_port(),
            controller_port=free_port(),
        )
    )
    node.start()
    bootstrap = node.bootstrap_servers
    topics = Topics("outage.")
    ensure_topics(bootstrap, topics)
    api_port = free_port()
    env = {
        **os.environ,
        "FLEETPULSE_BOOTSTRAP_SERVERS": bootstrap,
        "FLEETPULSE_TOPIC_PREFIX": topics.prefix,
        "FLEETPULSE_HOME": str(work / "home"),
        "FLEETPULSE_DATA_DIR": str(work / "ch"),
        "FLEETPULSE_API_PORT": str(api_port),
        "FLEETPULSE_LOG_LEVEL": "WARNING",
        "FLEETPULSE_POLICY": str(work / "policy.yaml"),
        "FLEETPULSE_PROCESSORS_CADENCE_S": "1",
        "FLEETPULSE_PROCESSORS_LONG_CADENCE_S": "1",
        "FLEETPULSE_PROCESSORS_WEB_PORT": "0",
    }
    (work / "policy.yaml").write_text(POLICY)
    control = ControlSettings(
        bootstrap_servers=bootstrap, topic_prefix=topics.prefix, home=work / "home"
    )
    log = GovernanceLog.open(control)
    _, issued = ControlPlane(control, FleetPolicy(), log).add_principal(
        local_caller(), "bench-ops", "operations"
    )
    log.close()
    logs = {name: work / f"{name}.log" for name in ("sdk", "processors", "sink", "api")}
    procs = {
        "sdk": subprocess.Popen(
            [sys.executable, "-c", AGENT, str(logs["sdk"]), str(rate)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=logs["sdk"].open("ab"),
            text=True,
        ),
        "processors": subprocess.Popen(
            [sys.executable, "-m", "fleetpulse.cli", "processors", "run", "--stage", "all"],
            env=env,
            stdout=logs["processors"].open("ab"),
            stderr=subprocess.STDOUT,
        ),
        "sink": subprocess.Popen(
            [sys.executable, "-m", "fleetpulse.cli", "sink", "run"],
            env=env,
            stdout=logs["sink"].open("ab"),
            stderr=subprocess.STDOUT,
        ),
        "api": subprocess.Popen(
            [sys.executable, "-m", "fleetpulse.cli", "api", "run"],
            env=env,
            stdout=logs["api"].open("ab"),
            stderr=subprocess.STDOUT,
        ),
    }
    deliveries: list[tuple[float, int]] = []
    sdk_out = procs["sdk"].stdout
    assert sdk_out is not None

    def read_sdk() -> None:
        for line in sdk_out:
            d = json.loads(line)
            deliveries.append((d["t"], d["delivered"]))

    threading.Thread(target=read_sdk, daemon=True).start()
    sink_settings = SinkSettings(
        bootstrap_servers=bootstrap, topic_prefix=topics.prefix, data_dir=work / "ch"
    )
    counts: list[tuple[float, int]] = []
    api_ok: list[float] = []
    stop = threading.Event()

    def poll_sink() -> None:
        while not stop.is_set():
            info = endpoint(sink_settings.store_dir)  # only the sink's endpoint: never the store
            try:
                if info is not None:
                    remote = RemoteStore(info["url"], info["token"])
                    n = int(remote.table("SELECT count() FROM task_events").rows[0][0])
                    counts.append((time.time(), n))
            except (QueryError, OSError, IndexError):
                pass
            time.sleep(0.1)

    def poll_api() -> None:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {issued.token}"},
            timeout=5,
        )
        body = {"matchers": {"agent_id": "nobody"}, "duration_s": 60, "reason": "probe"}
        while not stop.is_set():
            try:
                if client.post("/v1/silences", json=body).status_code == 201:
                    api_ok.append(time.time())
            except httpx.HTTPError:
                pass
            time.sleep(0.1)

    for target in (poll_sink, poll_api):
        threading.Thread(target=target, daemon=True).start()
    outputs = Outputs(bootstrap, topics)
    outputs.start()
    try:
        deadline = time.time() + 120
        while not (
            api_ok and counts and counts[-1][1] > 0 and deliveries and all(outputs.seen.values())
        ):
            assert time.time() < deadline, "the stack did not start; see the logs in " + str(work)
            time.sleep(0.2)
        time.sleep(5)  # steady state
        killed = time.time()
        node.kill()
        time.sleep(outage_s)
        node.start()
        _answering(bootstrap)
        back = time.time()
        recover: dict[str, float | None] = dict.fromkeys(("sdk", *PROCESSOR_OUTPUTS, "sink", "api"))
        at_back = max((n for t, n in counts if t <= back), default=0)
        delivered_at_back = max((n for t, n in deliveries if t <= back), default=0)
        deadline = back + 120
        while None in recover.values() and time.time() < deadline:
            time.sleep(0.2)
            if recover["sdk"] is None:
                after = [t for t, n in deliveries if t > back and n > delivered_at_back]
                recover["sdk"] = after[0] - back if after else None
            if recover["sink"] is None:
                grown = [t for t, n in counts if t > back and n > at_back]
                recover["sink"] = grown[0] - back if grown else None
            if recover["api"] is None:
                ok = [t for t in api_ok if t > back]
                recover["api"] = ok[0] - back if ok else None
            for stage in PROCESSOR_OUTPUTS:
                if recover[stage] is None:
                    out = [t for t in outputs.seen[stage] if t > back]
                    recover[stage] = min(out) - back if out else None
        done = time.time()
    finally:
        stop.set()
        outputs.stop.set()
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        node.stop()
    error_lines = {name: _warnings(path, killed, done) for name, path in logs.items()}
    return {
        "outage_s": outage_s,
        "rate": rate,
        "recover_s": recover,
        "recover_s_max": max((v for v in recover.values() if v is not None), default=None)
        if None not in recover.values()
        else None,
        "error_lines": error_lines,
        "error_lines_max": max(error_lines.values()),
        "targets": {"recover_s": 5, "error_lines": 20},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--outage-s", type=float, default=20)
    ap.add_argument("--rate", type=float, default=200, help="the agent's tasks per second")
    ap.add_argument("--workdir", type=Path, help="keep the processes' logs and data here")
    args = ap.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args.outage_s, args.rate, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="fp-bench-outage-") as tmp:
            result = run(args.outage_s, args.rate, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
