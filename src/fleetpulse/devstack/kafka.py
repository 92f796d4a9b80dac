"""A real Apache Kafka node for development and tests, without Docker.

`KafkaNode.start()` renders `server.properties` from `infra/kafka/`, formats KRaft storage on
first start, launches ``java -cp 'libs/*' kafka.Kafka`` detached (it outlives the CLI that
started it), and waits until the broker answers metadata requests. Everything lives under
one directory: ``config/``, ``data/``, ``logs/``.

Example:
    >>> node = KafkaNode(KafkaNodeConfig(home=Path("/tmp/k"), jars=ensure_jars(cache, "4.1.1")))
    >>> node.start()                     # doctest: +SKIP
    >>> node.bootstrap_servers           # doctest: +SKIP
    '127.0.0.1:9092'
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import socket
import string
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from fleetpulse.contract.errors import DevstackError, PortInUseError
from fleetpulse.contract.kafka_config import admin_config
from fleetpulse.contract.resources import resource_dir
from fleetpulse.contract.stack_state import pid_alive
from fleetpulse.devstack.jars import require_tool
from fleetpulse.devstack.services import reap, stop_process

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaNodeConfig:
    """Where one node lives and how it listens."""

    home: Path  # the node's own directory (config, data, logs)
    jars: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "768m"
    port_setting: str = "FLEETPULSE_KAFKA_PORT"
    controller_port_setting: str = "FLEETPULSE_KAFKA_CONTROLLER_PORT"


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port the OS says is free now (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KafkaNode:
    """One KRaft broker+controller process."""

    def __init__(self, config: KafkaNodeConfig, pid: int | None = None):
        self.config = config
        self.pid = pid
        self.config_dir = config.home / "config"
        self.data_dir = config.home / "data"
        self.log_dir = config.home / "logs"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.config.port}"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "server.log"

    def is_running(self) -> bool:
        return pid_alive(self.pid)

    # -- start ----------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        """Start the node and wait until it serves metadata; raise DevstackError otherwise."""
        if self.is_running():
            return
        java = require_tool("java")
        for port, what, setting in (
            (self.config.port, "Kafka broker", self.config.port_setting),
            (self.config.controller_port, "KRaft controller", self.config.controller_port_setting),
        ):
            if not port_free(port):
                raise PortInUseError(port, what, setting)
        for d in (self.config_dir, self.data_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        props = self._render_properties()
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, props)
        cmd = [
            java,
            f"-Xms{self.config.heap}",
            f"-Xmx{self.config.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.log_dir}",
            f"-Dlog4j2.configurationFile={resource_dir('kafka') / 'log4j2.xml'}",
            "-cp",
            f"{self.config.jars}/*",
            "kafka.Kafka",
            str(props),
        ]
        out = open(self.log_dir / "kafka.out", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI, and Ctrl-C in its terminal
            )
        finally:
            out.close()
        self.pid = proc.pid
        logger.info("started Kafka pid %d on %s", proc.pid, self.bootstrap_servers)
        self._wait_ready(proc, timeout)

    def _render_properties(self) -> Path:
        template = string.Template((resource_dir("kafka") / "server.properties.tmpl").read_text())
        text = template.substitute(
            port=self.config.port,
            controller_port=self.config.controller_port,
            log_dirs=self.data_dir,
        )
        path = self.config_dir / "server.properties"
        path.write_text(text)
        return path

    def _format(self, java: str, props: Path) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = [
            java,
            "-Xmx256m",
            f"-Dkafka.logs.dir={self.log_dir}",
            f"-Dlog4j2.configurationFile={resource_dir('kafka') / 'log4j2.xml'}",
            "-cp",
            f"{self.config.jars}/*",
            "kafka.tools.StorageTool",
            "format",
            # `--cluster-id=<id>`, not `-t <id>`: a URL-safe base64 id may start with "-",
            # which argparse then reads as an option (1 format in 64 failed that way)
            f"--cluster-id={cluster_id}",
            "-c",
            str(props),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DevstackError(
                f"formatting KRaft storage in {self.data_dir} failed:\n"
                f"{(proc.stdout + proc.stderr).strip()[-2000:]}"
            )

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        admin = AdminClient(admin_config(self.bootstrap_servers))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DevstackError(
                    f"Kafka exited with code {proc.returncode} while starting. "
                    f"Last lines of {self.log_dir / 'kafka.out'} and server.log:\n{self.tail()}"
                )
            try:
                md = admin.list_topics(timeout=1.0)
                if md.brokers:
                    return
            except Exception:  # not up yet: KafkaException / transport errors
                time.sleep(0.2)
        self.stop()
        raise DevstackError(
            f"Kafka did not answer on {self.bootstrap_servers} within {timeout:.0f}s:\n"
            f"{self.tail()}"
        )

    def tail(self, lines: int = 20) -> str:
        chunks = []
        for f in (self.log_dir / "kafka.out", self.log_file):
            if f.exists():
                chunks.append("\n".join(f.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(chunks)

    # -- stop -----------------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM), then SIGKILL if it does not exit in time."""
        stop_process(self.pid, timeout=timeout, what="Kafka")
        self.pid = None

    def kill(self) -> None:
        """SIGKILL, for failure tests."""
        if self.pid and pid_alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
            while pid_alive(self.pid):
                reap(self.pid)
                time.sleep(0.05)
        self.pid = None
