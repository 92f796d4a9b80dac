"""Fetch the Apache Kafka jars from Maven Central, once, into a cache outside the repo."""

from __future__ import annotations

import fcntl
import logging
import shutil
import subprocess
from pathlib import Path

from fleetpulse.contract.errors import DevstackError, MissingToolError
from fleetpulse.contract.resources import resource_dir

logger = logging.getLogger(__name__)

_COMPLETE = ".complete"


def require_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        fixes = {
            "java": "install a Java 17+ runtime, e.g. `apt-get install openjdk-17-jre-headless`",
            "mvn": "install Apache Maven, e.g. `apt-get install maven`",
        }
        raise MissingToolError(tool, fixes.get(tool, f"install {tool}"))
    return path


def jars_dir(cache: Path, version: str) -> Path:
    return cache / f"kafka-{version}" / "libs"


def ensure_jars(cache: Path, version: str) -> Path:
    """Return the directory of Kafka's runtime jars, fetching them with mvn if needed.

    Safe to call from several processes at once (a file lock serialises the fetch).
    """
    libs = jars_dir(cache, version)
    if (libs / _COMPLETE).exists():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / _COMPLETE).exists():
            return libs
        mvn = require_tool("mvn")
        pom = resource_dir("kafka") / "pom.xml"
        logger.info("fetching Apache Kafka %s jars from Maven Central into %s", version, libs)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise DevstackError(
                f"mvn could not fetch Apache Kafka {version} (exit {proc.returncode}):\n{tail}\n"
                "Fix: check that Maven Central is reachable, or try the fallback "
                "FLEETPULSE_KAFKA_VERSION=3.9.1"
            )
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise DevstackError(f"mvn finished but no kafka_2.13 jar is in {libs}")
        (libs / _COMPLETE).write_text(version)
    return libs
