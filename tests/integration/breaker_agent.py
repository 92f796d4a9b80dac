"""One SDK agent process for the breaker tests: calls the `flaky` integration in a loop and
writes what happened to each attempt as JSON lines.

Usage: python breaker_agent.py AGENT_ID WORKDIR   (env: FLEETPULSE_BOOTSTRAP_SERVERS, ...)
The integration fails while WORKDIR/healthy does not exist; the loop ends when WORKDIR/stop
exists. Each line: {"t": wall seconds, "r": ok|error|short|paused, "s": guard's state}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fleetpulse import AgentPausedError, CircuitOpenError, Fleet


def main() -> None:
    agent_id, workdir = sys.argv[1], Path(sys.argv[2])
    healthy, stop = workdir / "healthy", workdir / "stop"
    out = (workdir / f"{agent_id}.jsonl").open("a", buffering=1)
    spool = workdir / f"spool-{agent_id}"
    with Fleet.connect(agent_id, agent_version="v1", spool_dir=spool) as fleet:
        assert fleet.guard is not None
        out.write(json.dumps({"t": time.time(), "r": "ready"}) + "\n")
        while not stop.exists():
            result = "ok"
            try:
                with fleet.task("work", input={"t": time.time()}) as task:
                    try:
                        with task.tool("flaky", "call"):
                            if not healthy.exists():
                                raise ConnectionError("flaky is down")
                    except ConnectionError:
                        result = "error"
                    except CircuitOpenError:
                        result = "short"
            except AgentPausedError:
                result = "paused"
            state = fleet.guard.state_of("integration:flaky")
            out.write(json.dumps({"t": time.time(), "r": result, "s": state}) + "\n")
            time.sleep(0.02)


if __name__ == "__main__":
    main()
