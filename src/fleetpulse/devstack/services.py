"""fleetpulse's own processes in the devstack: processors, sink, pager, API (and Alertmanager).

Each service is a detached process (its own session, so it outlives the command that started
it, as Kafka does) logging to ``$FLEETPULSE_HOME/logs/<name>.log``; its pid is recorded in
``devstack.json`` so that `fleetpulse dev status` shows it and `fleetpulse dev down` stops it.
Readiness is read off the service's log, as testcontainers' log-message wait strategy does.

Example:
    >>> svc = start_service(home, "sink", ["fleetpulse", "sink", "run"], env)  # doctest: +SKIP
    >>> wait_ready(svc, "query server on", timeout=60)                         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetpulse.contract.errors import DevstackError
from fleetpulse.contract.stack_state import pid_alive, read_state, write_state

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    name: str
    pid: int
    log: Path
    argv: tuple[str, ...]


def start_service(home: Path, name: str, argv: list[str], env: dict[str, str]) -> Service:
    """Start ``argv`` detached, logging to ``home/logs/<name>.log``; record it in the state."""
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    svc = Service(name, proc.pid, log, tuple(argv))
    state = read_state(home) or {}
    state.setdefault("services", {})[name] = {
        "pid": proc.pid,
        "log": str(log),
        "argv": argv,
        "started_at": time.time(),
    }
    write_state(home, state)
    logger.info("started %s (pid %d), log %s", name, proc.pid, log)
    return svc


def wait_ready(svc: Service, pattern: str, *, timeout: float, offset: int = 0) -> None:
    """Wait until the service's log (from byte ``offset``) matches ``pattern``.

    Raises:
        DevstackError: the service exited, or did not get ready in time; with its log's tail.
    """
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        text = _read_from(svc.log, offset)
        if rx.search(text):
            return
        if not pid_alive(svc.pid):
            raise DevstackError(f"{svc.name} exited while starting; its log:\n{_tail(text)}")
        if time.monotonic() > deadline:
            raise DevstackError(
                f"{svc.name} not ready after {timeout:.0f}s (waiting for {pattern!r} in "
                f"{svc.log}); its log:\n{_tail(text)}"
            )
        time.sleep(0.2)


def wait_http(svc: Service, url: str, *, timeout: float, ok_only: bool = False) -> None:
    """Wait until ``url`` answers (any status, or 200 with ``ok_only``) while ``svc`` runs."""
    import httpx  # noqa: PLC0415  (lazy on purpose: the `cli` extra, for the services' probes)

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200 or not ok_only:
                return
        except httpx.HTTPError:
            pass
        check_alive(svc)
        if time.monotonic() > deadline:
            raise DevstackError(
                f"{svc.name} does not answer {url} after {timeout:.0f}s; see {svc.log}"
            )
        time.sleep(0.2)


def check_alive(svc: Service) -> None:
    """Raise DevstackError with the log's tail when the service has exited."""
    if not pid_alive(svc.pid):
        raise DevstackError(
            f"{svc.name} exited while starting; its log:\n{_tail(_read_from(svc.log, 0))}"
        )


def services(home: Path) -> dict[str, dict[str, Any]]:
    """The recorded services with an ``alive`` flag each."""
    found = (read_state(home) or {}).get("services", {})
    return {name: {**info, "alive": pid_alive(info.get("pid"))} for name, info in found.items()}


def stop_services(home: Path, timeout: float = 20.0) -> list[str]:
    """Stop every recorded service, newest first (SIGTERM, then SIGKILL); return their names."""
    state = read_state(home) or {}
    found: dict[str, dict[str, Any]] = state.get("services", {})
    stopped = []
    for name in sorted(found, key=lambda n: -found[n].get("started_at", 0)):
        if stop_process(found[name].get("pid"), timeout=timeout, what=name):
            stopped.append(name)
    if found:
        state.pop("services", None)
        write_state(home, state)
    return stopped


def stop_process(pid: int | None, *, timeout: float, what: str) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout``, then SIGKILL; True when it was running."""
    if not pid or not pid_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        reap(pid)
        if time.monotonic() > deadline:
            logger.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing it", what, pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.1)
    reap(pid)
    return True


def reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
