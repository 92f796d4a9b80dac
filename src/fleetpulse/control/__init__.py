"""The control plane: who may do what to which agent, what each agent runs, and what is paused.

Read in this order: ``contract/bundles.py`` (what a version is), ``contract/governance.py``
(the state folded from ``fleetpulse.governance``), ``access.py`` (roles, actions, tokens),
``plane.py`` (the service layer the CLI and the API share), ``client.py`` (the one client
protocol, reached in process or over HTTP by ``gateway.py``), ``api.py`` (HTTP). The state
topics are read by the SDK's followers (``sdk/topic_follower.py``, ``sdk/governance_log.py``,
``sdk/alerts_state.py``); ``service.py`` writes the control topic, ``watcher.py`` pages on
approvals left pending. ``fleetpulse api run`` is assembled on top, in ``console/server.py``.

The names below are loaded on first use (PEP 562), so a process that imports one module of
this package (the CLI's client, say) does not load the service layer with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetpulse.contract.bundles import AgentBundle, load_bundle
    from fleetpulse.contract.control_state import ControlView
    from fleetpulse.contract.governance import GovernanceState
    from fleetpulse.control.access import ROLES, Caller
    from fleetpulse.control.plane import ControlPlane
    from fleetpulse.control.service import ControlService
    from fleetpulse.sdk.governance_log import GovernanceLog
    from fleetpulse.sdk.topic_follower import ControlFollower, read_control

_HOME = {
    "ROLES": "fleetpulse.control.access",
    "Caller": "fleetpulse.control.access",
    "AgentBundle": "fleetpulse.contract.bundles",
    "load_bundle": "fleetpulse.contract.bundles",
    "ControlFollower": "fleetpulse.sdk.topic_follower",
    "read_control": "fleetpulse.sdk.topic_follower",
    "GovernanceState": "fleetpulse.contract.governance",
    "GovernanceLog": "fleetpulse.sdk.governance_log",
    "ControlPlane": "fleetpulse.control.plane",
    "ControlService": "fleetpulse.control.service",
    "ControlView": "fleetpulse.contract.control_state",
}

__all__ = [
    "ROLES",
    "AgentBundle",
    "Caller",
    "ControlFollower",
    "ControlPlane",
    "ControlService",
    "ControlView",
    "GovernanceLog",
    "GovernanceState",
    "load_bundle",
    "read_control",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'fleetpulse.control' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
