"""Approval gates on the agent's side: publish a request, block until a human decides.

The request and its outcome are GovernanceEvents. The agent acts as ``agent:<agent_id>``, so
no principal can approve on its behalf and the approver is always someone else. When the
timeout passes the agent itself records ``approval_expired``; if a decision reached the log
first, the decision stands (one partition: the log's order settles the race).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, Protocol

from fleetpulse.contract.errors import ApprovalDeniedError, ApprovalExpiredError, ConflictError
from fleetpulse.contract.governance import Approval, new_event

if TYPE_CHECKING:
    from fleetpulse.contract.clock import Clock
    from fleetpulse.sdk.governance_log import GovernanceLog

logger = logging.getLogger(__name__)


class ApprovalsHost(Protocol):
    """What the approval gates need from the agent's ``Fleet`` (which owns them)."""

    @property
    def agent_id(self) -> str: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def governance(self) -> GovernanceLog | None: ...


class Approvals:
    def __init__(self, fleet: ApprovalsHost) -> None:
        self._fleet = fleet

    @property
    def actor(self) -> str:
        return f"agent:{self._fleet.agent_id}"

    def request(
        self,
        action: str,
        *,
        summary: str,
        details: dict[str, Any] | None = None,
        timeout: float = 900.0,
        task_id: str = "",
        trace_id: str = "",
    ) -> Approval:
        """Block until the request for ``action`` is approved (returned), denied or expired.

        Raises:
            ApprovalDeniedError: an approver denied it (``reason`` says why).
            ApprovalExpiredError: nobody decided within ``timeout`` seconds.
        """
        fleet = self._fleet
        log = fleet.governance
        assert log is not None
        approval_id = os.urandom(8).hex()
        now = fleet.clock.time_us()
        log.append(
            new_event(
                "approval",
                approval_id,
                "approval_requested",
                actor=self.actor,
                actor_role="agent",
                at_us=now,
                agent_id=fleet.agent_id,
                payload={
                    "action": action,
                    "summary": summary,
                    "details": details or {},
                    "expires_at_us": now + int(timeout * 1e6),
                    "task_id": task_id,
                    "trace_id": trace_id,
                },
            )
        )
        logger.info(
            "agent %s waits up to %.0fs for approval %s of %s",
            fleet.agent_id,
            timeout,
            approval_id,
            action,
        )

        def decided(s: Any) -> bool:
            return bool(s.approvals[approval_id].status != "pending")

        if not log.wait_for(decided, timeout):
            # a decision that reached the log first stands (the expiry is then rejected)
            with contextlib.suppress(ConflictError):
                log.append(
                    new_event(
                        "approval",
                        approval_id,
                        "approval_expired",
                        actor=self.actor,
                        actor_role="agent",
                        at_us=fleet.clock.time_us(),
                        agent_id=fleet.agent_id,
                        reason=f"not decided within {timeout:g}s",
                    )
                )
        a = log.read(lambda s: s.approvals[approval_id])
        if a.status == "approved":
            return a
        if a.status == "denied":
            raise ApprovalDeniedError(approval_id, action, a.decided_by, a.reason)
        raise ApprovalExpiredError(approval_id, action, timeout)
