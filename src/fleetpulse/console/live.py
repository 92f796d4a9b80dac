"""Live updates: what changed in the topics the API process follows, pushed to open pages.

The API process already follows ``fleetpulse.control`` (breakers, pauses),
``fleetpulse.alerts`` and ``fleetpulse.governance`` (approvals, versions) into memory. A
`snapshot` of what one viewer may see is cheap (no I/O); the server-sent event stream takes
one every ``every_s`` and sends it when it differs from the last one sent. Each section
carries a fingerprint: the page's script re-fetches only the regions marked with a section
whose fingerprint moved (``data-live="breakers alerts"``), and sets the counters in place.
``figures`` moves every ``FIGURES_S`` seconds so the ClickHouse figures refresh too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fleetpulse.control.access import Caller
from fleetpulse.control.plane import ControlPlane

FIGURES_S = 2
OPEN_STATES = ("OPEN", "FORCED_OPEN", "HALF_OPEN")


def _fp(data: Any) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def snapshot(plane: ControlPlane, caller: Caller, now_s: float | None = None) -> dict[str, Any]:
    """Counters and per-section fingerprints of what ``caller`` may see."""
    now_s = time.time() if now_s is None else now_s
    versions: dict[str, str] = {"figures": str(int(now_s // FIGURES_S))}
    counts: dict[str, int] = {}
    if caller.can("breakers.view"):
        breakers = [(b.id, str(b.state), b.sequence) for b in plane.breakers(caller)]
        versions["breakers"] = _fp(breakers)
        counts["open_breakers"] = sum(1 for _, s, _ in breakers if s in OPEN_STATES)
    if caller.can("agents.view"):
        pauses = [(p.agent_id, p.paused, p.sequence) for p in plane.pauses(caller)]
        versions["pauses"] = _fp(pauses)
        counts["paused"] = sum(1 for _, paused, _ in pauses if paused)
        agents = plane.log.read(
            lambda s: [(a, len(r.versions), sorted(r.labels.items())) for a, r in s.agents.items()]
        )
        versions["agents"] = _fp(agents)
    if caller.can("alerts.view"):
        alerts = plane.alerts(caller)
        versions["alerts"] = _fp(
            [(a["dedup_key"], a["status"], a["emitted_at"], a["acknowledged_by"]) for a in alerts]
        )
        counts["firing"] = sum(1 for a in alerts if a["status"] == "firing")
        silences = [s.silence_id for s in plane.silences(caller)]
        versions["silences"] = _fp(silences)
    if caller.can("approvals.view"):
        approvals = plane.approvals(caller, status=None)
        versions["approvals"] = _fp([(a.approval_id, a.status) for a in approvals])
        counts["pending"] = sum(1 for a in approvals if a.status == "pending")
    return {"versions": versions, "counts": counts}


async def stream(
    take: Callable[[], dict[str, Any]],
    disconnected: Callable[[], Any],
    *,
    every_s: float = 0.25,
    ping_s: float = 15.0,
    max_s: float = 15.0,
) -> AsyncIterator[str]:
    """Server-sent events: a ``live`` event whenever the snapshot changes, until the client
    goes away or ``max_s`` passed. The browser reconnects 250 ms later on its own and compares
    the first snapshot with the last it saw, so nothing is missed; the cap keeps a console
    left open from holding the API process's graceful shutdown (uvicorn waits for open
    responses) past the devstack's 20 s before SIGKILL."""
    last: dict[str, Any] | None = None
    quiet_since = started = time.monotonic()
    yield "retry: 250\n\n"
    while not await disconnected() and time.monotonic() - started < max_s:
        snap = await asyncio.to_thread(take)
        if snap != last:
            last = snap
            quiet_since = time.monotonic()
            yield f"event: live\ndata: {json.dumps(snap)}\n\n"
        elif time.monotonic() - quiet_since > ping_s:
            quiet_since = time.monotonic()
            yield ": ping\n\n"
        await asyncio.sleep(every_s)
