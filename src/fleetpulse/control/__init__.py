"""The control plane: who may do what to which agent, what each agent runs, and what is paused.

Read in this order: ``bundles.py`` (what a version is), ``governance.py`` (the state folded
from ``fleetpulse.governance``), ``access.py`` (roles, actions, tokens), ``plane.py`` (the
service layer the CLI and the API share), ``client.py`` (the one client protocol, reached in
process or over HTTP by ``gateway.py``), ``api.py`` (HTTP). ``topic_follower.py`` reads the
state topics: ``fleetpulse.control`` (breakers and pauses) into ``control_state.py``,
``fleetpulse.governance`` into ``governance_log.py``, ``fleetpulse.alerts`` into
``alerts_state.py``; ``service.py`` writes the control topic.

The names below are loaded on first use (PEP 562): the SDK imports a few modules of this
package (bundles, the followers) and must not load the service layer with them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetpulse.control.access import ROLES, Caller
    from fleetpulse.control.bundles import AgentBundle, load_bundle
    from fleetpulse.control.control_state import ControlView
    from fleetpulse.control.governance import GovernanceState
    from fleetpulse.control.governance_log import GovernanceLog
    from fleetpulse.control.plane import ControlPlane
    from fleetpulse.control.service import ControlService
    from fleetpulse.control.topic_follower import ControlFollower, read_control

_HOME = {
    "ROLES": "access",
    "Caller": "access",
    "AgentBundle": "bundles",
    "load_bundle": "bundles",
    "ControlFollower": "topic_follower",
    "read_control": "topic_follower",
    "GovernanceState": "governance",
    "GovernanceLog": "governance_log",
    "ControlPlane": "plane",
    "ControlService": "service",
    "ControlView": "control_state",
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
    return getattr(importlib.import_module(f"fleetpulse.control.{module}"), name)
