"""The devstack: the local infrastructure `fleetpulse dev up | down | status` manages.

One Apache Kafka node plus fleetpulse's topics; fleetpulse's own processes (processors, sink,
pager, API) register as services (``devstack/services.py``) so that `dev down` stops them too.
State lives in ``$FLEETPULSE_HOME/devstack.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from fleetpulse.contract.config import DevstackSettings
from fleetpulse.contract.errors import DevstackError
from fleetpulse.contract.kafka_config import admin_config
from fleetpulse.contract.stack_state import clear_state, pid_alive, read_state, write_state
from fleetpulse.devstack.jars import ensure_jars
from fleetpulse.devstack.kafka import KafkaNode, KafkaNodeConfig
from fleetpulse.devstack.services import services, stop_services
from fleetpulse.devstack.topics import ensure_topics

logger = logging.getLogger(__name__)


class Devstack:
    """Start, stop and describe the local stack for one ``FLEETPULSE_HOME``."""

    def __init__(self, settings: DevstackSettings):
        self.settings = settings
        self.home = Path(settings.home).resolve()

    def _new_node(self, jars: Path) -> KafkaNode:
        s = self.settings
        return KafkaNode(
            KafkaNodeConfig(
                home=self.home / "kafka",
                jars=jars,
                port=s.kafka_port,
                controller_port=s.kafka_controller_port,
                heap=s.kafka_heap,
            )
        )

    def running_node(self) -> KafkaNode | None:
        state = read_state(self.home)
        if not state or not pid_alive(state.get("kafka", {}).get("pid")):
            return None
        k = state["kafka"]
        return KafkaNode(
            KafkaNodeConfig(
                home=Path(k["home"]),
                jars=Path(k["jars"]),
                port=k["port"],
                controller_port=k["controller_port"],
            ),
            pid=k["pid"],
        )

    def up(self, timeout: float = 90.0) -> dict[str, Any]:
        """Fetch jars if needed, start Kafka, create topics. Idempotent."""
        node = self.running_node()
        if node is None:
            jars = ensure_jars(self.settings.kafka_cache, self.settings.kafka_version)
            node = self._new_node(jars)
            started = time.monotonic()
            node.start(timeout=timeout)
            logger.info("Kafka ready in %.1fs", time.monotonic() - started)
            write_state(
                self.home,
                {
                    "kafka": {
                        "pid": node.pid,
                        "bootstrap_servers": node.bootstrap_servers,
                        "port": node.config.port,
                        "controller_port": node.config.controller_port,
                        "version": self.settings.kafka_version,
                        "home": str(node.config.home),
                        "jars": str(node.config.jars),
                        "log": str(node.log_file),
                    },
                    "started_at": time.time(),
                },
            )
        ensure_topics(
            node.bootstrap_servers,
            self.settings.topics,
            partitions={"task-events": self.settings.task_events_partitions},
        )
        return self.status()

    def down(self, timeout: float = 30.0) -> bool:
        """Stop everything, services first; True when something was running."""
        stopped = stop_services(self.home)
        node = self.running_node()
        if node is None:
            clear_state(self.home)  # a stale file from a crashed stack
            return bool(stopped)
        node.stop(timeout=timeout)
        clear_state(self.home)
        return True

    def status(self) -> dict[str, Any]:
        state = read_state(self.home)
        kafka = (state or {}).get("kafka", {})
        alive = pid_alive(kafka.get("pid"))
        report: dict[str, Any] = {
            "home": str(self.home),
            "running": alive,
            "bootstrap_servers": kafka.get("bootstrap_servers") if alive else None,
            "kafka": {
                "pid": kafka.get("pid") if alive else None,
                "version": kafka.get("version"),
                "log": kafka.get("log"),
                "alive": alive,
            },
            "topics": [],
            "services": services(self.home),
        }
        if state and not alive:
            report["stale"] = (
                f"Kafka (pid {kafka.get('pid')}) stopped without `dev down`: it crashed or was "
                "killed. Run `fleetpulse dev up` to start it again on the same data (or "
                "`fleetpulse dev down` to forget it)"
            )
        if alive:
            try:
                md = AdminClient(admin_config(kafka["bootstrap_servers"])).list_topics(timeout=5)
            except Exception as exc:
                raise DevstackError(
                    f"Kafka pid {kafka['pid']} runs but does not answer: {exc}"
                ) from exc
            report["topics"] = [
                {"name": t, "partitions": len(md.topics[t].partitions)}
                for t in sorted(md.topics)
                if not t.startswith("__")
            ]
        return report
