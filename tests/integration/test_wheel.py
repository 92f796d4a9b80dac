"""The light install is complete: ``python -m build`` makes a wheel and an sdist; the wheel
installed alone (no extras) into a fresh virtual environment emits a task event to the real
broker and follows a breaker the fleet opened.

The environment is built once per session: pip fetches the SDK's few dependencies (from its
cache after the first run) and never the server side (chDB, pyarrow, FastAPI, faust).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer

from fleetpulse.contract.breakers import BreakerState, State, parse_breaker_id, to_control
from fleetpulse.contract.events.codec import AvroCodec
from fleetpulse.contract.kafka_config import producer_config
from fleetpulse.contract.topics import Topics

from .helpers import read_all

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVER_SIDE = {"chdb", "pyarrow", "fastapi", "uvicorn", "faust-streaming", "aiokafka", "typer"}


@dataclass
class SdkVenv:
    python: Path
    script: Path  # the `fleetpulse` console script
    packages: dict[str, str]  # name -> version, as pip lists them


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: hatchling comes with the dev extra, nothing to fetch for the build
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


@pytest.fixture(scope="session")
def sdk_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> SdkVenv:
    home = tmp_path_factory.mktemp("sdk-venv")
    # no pip of its own (ensurepip costs seconds): this environment's pip installs into it
    venv.create(home, with_pip=False)
    python = home / "bin" / "python"
    (wheel,) = dist.glob("fleetpulse-*.whl")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    install = [*pip, "install", "-q", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    listed = subprocess.run(
        [*pip, "list", "--format", "json"], check=True, capture_output=True, text=True, timeout=60
    )
    packages = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    return SdkVenv(python, home / "bin" / "fleetpulse", packages)


def test_build_makes_a_wheel_and_an_sdist_that_carry_the_schemas(dist: Path) -> None:
    (wheel,) = dist.glob("fleetpulse-*-py3-none-any.whl")
    (sdist,) = dist.glob("fleetpulse-*.tar.gz")
    assert sdist.stat().st_size > 0
    names = zipfile.ZipFile(wheel).namelist()
    assert "fleetpulse/_data/schemas/TaskEvent.v1.avsc" in names
    assert "fleetpulse/sdk/prices.json" in names


def test_the_wheel_alone_brings_no_server_side(sdk_venv: SdkVenv) -> None:
    assert "fleetpulse" in sdk_venv.packages
    assert SERVER_SIDE.isdisjoint(sdk_venv.packages), sorted(SERVER_SIDE & set(sdk_venv.packages))
    # the command line is an extra too: the console script says so in one line
    r = subprocess.run(
        [str(sdk_venv.script), "processors", "run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "fleetpulse processors needs the processors extra: pip install 'fleetpulse[processors]'"
    )


AGENT = textwrap.dedent(
    """
    import json, sys, time
    from fleetpulse import CircuitOpenError, Fleet

    server_side = [m for m in ("chdb", "pyarrow", "fastapi", "faust") if m in sys.modules]
    with Fleet.connect("wheel-agent", agent_version="1") as fleet:
        with fleet.task("triage", input={"ticket": 1}) as task:
            with task.tool("crm", "query", access="read", target="account/1"):
                pass
        assert fleet.flush(30) == 0
        print(json.dumps({"emitted": task.event["event_id"], "loaded": server_side}), flush=True)
        # wait until the guard sees the fleet's breaker, then make the call it must refuse
        deadline = time.monotonic() + 30
        while fleet.guard.state_of("integration:crm") != "OPEN" and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            with fleet.task("triage", input={"ticket": 2}) as task:
                with task.tool("crm", "query", access="read", target="account/2"):
                    print(json.dumps({"called": "crm"}), flush=True)
        except CircuitOpenError as exc:
            print(json.dumps({"refused": exc.integration, "state": exc.state}), flush=True)
    """
)


def test_the_wheel_alone_emits_and_follows_a_breaker(
    sdk_venv: SdkVenv, kafka, fresh_prefix: Topics, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "FLEETPULSE_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "FLEETPULSE_TOPIC_PREFIX": fresh_prefix.prefix,
        "FLEETPULSE_HOME": str(tmp_path / "home"),
        "PYTHONPATH": "",  # the venv's fleetpulse, never this checkout's
    }
    (tmp_path / "agent.py").write_text(AGENT)
    agent = subprocess.Popen(
        [str(sdk_venv.python), str(tmp_path / "agent.py")],
        cwd=tmp_path,  # not the repo: nothing importable from src/
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout is not None
        first = json.loads(agent.stdout.readline() or "{}")
        assert "emitted" in first, agent.stderr.read() if agent.stderr else ""
        assert first["loaded"] == []

        # the event is on the topic, as the SDK in the wheel encoded it
        (event,) = read_all(kafka.bootstrap_servers, fresh_prefix.task_events, 1, idle=0.5)
        assert event["event_id"] == first["emitted"]
        assert event["agent_id"] == "wheel-agent"
        assert [c["integration"] for c in event["tool_calls"]] == ["crm"]

        # the fleet opens the crm breaker (as the breaker stage would): the agent stops calling
        now = int(time.time() * 1_000_000)
        opened = BreakerState(
            key=parse_breaker_id("integration:crm"),
            state=State.OPEN,
            since_us=now,
            retry_at_us=now + 60_000_000,
            sequence=now,
            reason="failure rate 100% over 20 calls",
        )
        encode = AvroCodec().encoder("ControlMessage", fresh_prefix.control)
        producer = Producer(producer_config(kafka.bootstrap_servers, client_id="wheel-test"))
        producer.produce(fresh_prefix.control, encode(to_control(opened)), opened.id.encode())
        assert producer.flush(15) == 0

        second = json.loads(agent.stdout.readline() or "{}")
        why = agent.stderr.read() if agent.stderr else ""
        assert second == {"refused": "crm", "state": "OPEN"}, why
        assert agent.wait(30) == 0
        # the refused call was recorded, not made
        events = read_all(kafka.bootstrap_servers, fresh_prefix.task_events, 2, idle=0.5)
        (refused,) = [e for e in events if e["event_id"] != first["emitted"]]
        assert [c["status"] for c in refused["tool_calls"]] == ["short_circuited"]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
