"""Shared benchmark plumbing: a broker of the benchmark's own, timing, and result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fleetpulse.contract.config import DevstackSettings
from fleetpulse.devstack import KafkaNode, KafkaNodeConfig, ensure_jars, free_port

RESULTS = Path(__file__).parent / "results"


@contextmanager
def broker() -> Iterator[str]:
    """FLEETPULSE_BENCH_BOOTSTRAP, else a fresh devstack node in a temp dir on free ports."""
    external = os.environ.get("FLEETPULSE_BENCH_BOOTSTRAP")
    if external:
        yield external
        return
    settings = DevstackSettings()
    jars = ensure_jars(settings.kafka_cache, settings.kafka_version)
    with tempfile.TemporaryDirectory(prefix="fleetpulse-bench-") as home:
        node = KafkaNode(
            KafkaNodeConfig(
                home=Path(home), jars=jars, port=free_port(), controller_port=free_port()
            )
        )
        node.start()
        try:
            yield node.bootstrap_servers
        finally:
            node.stop()


@dataclass
class Measured:
    label: str
    count: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.count / self.wall_s

    @property
    def per_cpu_s(self) -> float:
        """Events per CPU-second of this process (all its threads, librdkafka's included)."""
        return self.count / self.cpu_s if self.cpu_s else float("inf")


@contextmanager
def measure(label: str, count: int, out: list[Measured]) -> Iterator[None]:
    cpu0, wall0 = _cpu(), time.perf_counter()
    yield
    out.append(Measured(label, count, time.perf_counter() - wall0, _cpu() - cpu0))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) another process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_json(path: str | None, figures: dict[str, object]) -> None:
    """``--json FILE``: the figures for machines, with when and where they were measured."""
    if not path:
        return
    doc = {
        **figures,
        "machine": machine(),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    Path(path).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def write_result(name: str, markdown: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(f"{markdown}\n_Run {stamp} on {machine()}._\n")
    return path


def keep_logs(logs: Iterable[Path]) -> None:
    """``FLEETPULSE_BENCH_LOGS=DIR``: copy the stages' logs there, to study them after the run
    (with ``FLEETPULSE_LOG_LEVEL=DEBUG`` they time every pass and snapshot round)."""
    where = os.environ.get("FLEETPULSE_BENCH_LOGS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        for log in logs:
            shutil.copy(log, where)
