"""`fleetpulse dev up | status | down` as a user runs them, in a home of the test's own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fleetpulse.devstack import free_port

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "fleetpulse.cli"]


def _run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path: Path, kafka_jars: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FLEETPULSE_HOME": str(tmp_path / "home"),
        "FLEETPULSE_KAFKA_PORT": str(free_port()),
        "FLEETPULSE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "FLEETPULSE_KAFKA_HEAP": "384m",
        "COLUMNS": "200",
    }


def test_up_status_down(env: dict[str, str]) -> None:
    assert _run(["dev", "status"], env).returncode == 1  # nothing runs yet

    up = _run(["dev", "up", "--json"], env)
    assert up.returncode == 0, up.stderr
    status = json.loads(up.stdout)
    port = env["FLEETPULSE_KAFKA_PORT"]
    assert status["running"] and status["bootstrap_servers"] == f"127.0.0.1:{port}"
    topics = {t["name"]: t["partitions"] for t in status["topics"]}
    assert topics == {
        "fleetpulse.task-events": 6,
        "fleetpulse.metrics": 3,
        "fleetpulse.control": 1,
        "fleetpulse.alerts": 3,
        "fleetpulse.governance": 1,
        "fleetpulse.dlq": 1,
        "fleetpulse.processors.partials": 6,  # internal
        "fleetpulse.processors.breaker-counts": 6,  # internal
        "fleetpulse.processors.alert-cells": 6,  # internal
        "fleetpulse.processors.windows-state": 6,  # internal
        "fleetpulse.processors.windows-checkpoints": 1,  # internal
        "fleetpulse.processors.alert-scopes": 6,  # internal
        "fleetpulse.processors.alert-state": 1,  # internal
    }
    assert Path(env["FLEETPULSE_HOME"], "devstack.json").exists()
    pid = status["kafka"]["pid"]

    # compaction where the contract says so
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": status["bootstrap_servers"]})
    for name, policy in [
        ("control", "compact"),
        ("governance", "compact"),
        ("alerts", "delete"),
        ("processors.partials", "compact,delete"),
        ("processors.breaker-counts", "delete"),
        ("processors.alert-state", "compact"),
    ]:
        res = ConfigResource(ConfigResource.Type.TOPIC, f"fleetpulse.{name}")
        configs = admin.describe_configs([res])[res].result()
        assert configs["cleanup.policy"].value == policy

    again = _run(["dev", "up", "--json"], env)  # idempotent: same node
    assert json.loads(again.stdout)["kafka"]["pid"] == pid

    st = _run(["dev", "status", "--json"], env)
    assert st.returncode == 0 and json.loads(st.stdout)["kafka"]["pid"] == pid
    human = _run(["dev", "status"], env)
    assert "running" in human.stdout and "fleetpulse.task-events" in human.stdout

    down = _run(["dev", "down"], env)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert _run(["dev", "status"], env).returncode == 1
    assert "not running" in _run(["dev", "down"], env).stdout


def test_a_taken_port_is_a_clear_error(env: dict[str, str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = _run(["dev", "up", "--port", str(port)], env)
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "already taken" in result.stderr
    assert "FLEETPULSE_KAFKA_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_mvn_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "PATH": str(Path(sys.executable).parent), "FLEETPULSE_KAFKA_CACHE": str(tmp_path)}
    result = _run(["dev", "up"], env)
    assert result.returncode == 2
    assert "mvn was not found" in result.stderr and "apt-get install maven" in result.stderr


def test_missing_java_is_a_clear_error(env: dict[str, str]) -> None:
    env = {**env, "PATH": str(Path(sys.executable).parent)}  # the jars are cached already
    result = _run(["dev", "up"], env)
    assert result.returncode == 2
    assert "java was not found" in result.stderr and "openjdk" in result.stderr


def test_invalid_config_names_the_variable(env: dict[str, str]) -> None:
    result = _run(["dev", "status"], {**env, "FLEETPULSE_KAFKA_PORT": "http"})
    assert result.returncode == 2
    assert "FLEETPULSE_KAFKA_PORT" in result.stderr and "'http'" in result.stderr
