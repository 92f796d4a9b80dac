"""One SDK agent process for the governance tests; writes what it sees as JSON lines.

Usage: python governance_agent.py MODE AGENT_ID WORKDIR [ARGS]   (env: FLEETPULSE_*)

* ``follow``: run a task every 50 ms until WORKDIR/stop exists; each line holds the version
  stamped on the event and the temperature of the active bundle (``fleet.config``).
* ``approve ACTION TIMEOUT``: one task that asks for approval of ACTION; the line says
  approved, denied (with the reason) or expired, and whether the gated call then went through.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fleetpulse import ApprovalDeniedError, ApprovalExpiredError, Fleet


def follow(fleet: Fleet, out, workdir: Path) -> None:
    while not (workdir / "stop").exists():
        with fleet.task("work", input={"t": time.time()}) as task:
            pass
        cfg = fleet.config
        temp = cfg.model.parameters.get("temperature") if cfg and cfg.model else None
        out.write(json.dumps({"version": task.event["agent_version"], "temperature": temp}) + "\n")
        time.sleep(0.05)


def approve(fleet: Fleet, out, action: str, timeout: float) -> None:
    integration, operation = action.split(".", 1)
    line: dict[str, object] = {}
    try:
        with fleet.task("close-ticket", input={"ticket": 42}) as task:
            out.write(json.dumps({"r": "waiting"}) + "\n")
            a = task.require_approval(action, summary="close ticket 42", timeout=timeout)
            line = {"r": "approved", "by": a.decided_by}
            with task.tool(integration, operation, access="write", target="ticket/42"):
                line["called"] = True
    except ApprovalDeniedError as exc:
        line = {"r": "denied", "by": exc.approver, "reason": exc.reason}
    except ApprovalExpiredError:
        line = {"r": "expired"}
    line["outcome"] = task.event["outcome"] if task.event else None
    out.write(json.dumps(line) + "\n")


def main() -> None:
    mode, agent_id, workdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    out = (workdir / f"{agent_id}-{mode}.jsonl").open("a", buffering=1)
    with Fleet.connect(agent_id, spool_dir=workdir / f"spool-{agent_id}") as fleet:
        if mode == "follow":
            follow(fleet, out, workdir)
        else:
            approve(fleet, out, sys.argv[4], float(sys.argv[5]))


if __name__ == "__main__":
    main()
