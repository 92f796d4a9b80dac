"""The metric worker's web server: on 127.0.0.1 by default, and only our routes (faust's own
``/router/``, ``/table/``, ``/graph`` and index are not served). No broker needed."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from fleetpulse.contract.config import ProcessorSettings
from fleetpulse.contract.topics import Topics
from fleetpulse.devstack import free_port
from fleetpulse.processors.metrics.faust_app import build_app
from fleetpulse.processors.metrics.prom import ProcessorCollector, new_registry

pytestmark = pytest.mark.integration


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_only_metrics_is_served_and_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    settings = ProcessorSettings(home=tmp_path, processors_web_port=port)
    assert settings.processors_web_host == "127.0.0.1"
    # build_app needs only these of the core to set up its web server
    core = SimpleNamespace(
        group_id="g",
        bootstrap="127.0.0.1:9",
        topics=Topics("web."),
        registry=new_registry(ProcessorCollector(5)),
    )
    app = build_app(core, settings)  # type: ignore[arg-type]
    assert app.conf.web_bind == "127.0.0.1"

    async def probe() -> dict[str, int]:
        await app.web.start_server()
        loop = asyncio.get_running_loop()
        try:
            return {
                path: await loop.run_in_executor(None, _status, f"http://127.0.0.1:{port}{path}")
                for path in ("/metrics", "/router/", "/table/", "/graph/", "/")
            }
        finally:
            await app.web.stop_server()

    got = asyncio.run(probe())
    assert got == {"/metrics": 200, "/router/": 404, "/table/": 404, "/graph/": 404, "/": 404}
