"""Least privilege, checked again on the stream: a tool call the agent's role is not granted
that was made anyway (the SDK guard was bypassed, or an agent does not use the SDK) becomes a
``policy_violation`` Alert. Pure: the processors call it on every task event.
"""

from __future__ import annotations

from typing import Any

from fleetpulse.policy import Permissions


def unpermitted_calls(
    ev: dict[str, Any], permissions: Permissions, now_us: int
) -> list[dict[str, Any]]:
    """One firing Alert per call in ``ev`` made outside its role's grants.

    A call with status ``denied`` was stopped by the guard: it is recorded, not a bypass. The
    dedup key is stable per (agent, integration, access), so a repeat updates one alert.

    Example:
        >>> p = Permissions(roles={"support": {"crm": frozenset({"read"})}})
        >>> ev = {"agent_id": "a", "agent_role": "support", "task_id": "t", "ended_at": 5,
        ...       "tool_calls": [{"call_id": "c", "integration": "crm", "operation": "delete",
        ...                       "access": "write", "status": "ok", "target": "acct/1"}]}
        >>> [a["dedup_key"] for a in unpermitted_calls(ev, p, 9)]
        ['policy_violation:unpermitted_write:a:crm']
    """
    if not permissions.enforced:
        return []
    out = []
    role = ev.get("agent_role") or ""
    for call in ev.get("tool_calls") or ():
        if call["status"] == "denied":
            continue
        if permissions.allows(role, call["integration"], call["access"]):
            continue
        agent, integration, access = ev["agent_id"], call["integration"], call["access"]
        out.append(
            {
                "dedup_key": f"policy_violation:unpermitted_{access}:{agent}:{integration}",
                "rule": f"unpermitted_{access}",
                "kind": "policy_violation",
                "status": "firing",
                "severity": "critical" if access == "write" else "warning",
                "scope_type": "agent_integration",
                "scope_id": f"agent={agent}|integration={integration}",
                "value": 1.0,
                "threshold": 0.0,
                "window_s": 0,
                "summary": f"{agent} (role {role or 'none'}) made a {access} call to "
                f"{integration} its role is not granted: the permission guard was bypassed",
                "description": f"{call['operation']} on {call.get('target') or '-'} in task "
                f"{ev['task_id']}, status {call['status']}",
                "runbook": f"fleetpulse agents pause {agent} --reason 'unpermitted {access}'; "
                "then check how the agent calls the SDK",
                "runbook_url": "",
                "labels": {
                    "agent_id": agent,
                    "integration": integration,
                    "access": access,
                    "role": role,
                    "task_id": ev["task_id"],
                    "call_id": call["call_id"],
                },
                "root_cause": None,
                "started_at": ev["ended_at"],
                "ended_at": None,
                "emitted_at": now_us,
            }
        )
    return out
