"""The control plane: who may do what to which agent, what each agent runs, and what is paused.

Read in this order: ``bundles.py`` (what a version is), ``governance.py`` (the state folded
from ``fleetpulse.governance``), ``access.py`` (roles, actions, tokens), ``plane.py`` (the
service layer the CLI and the API share), ``api.py`` (HTTP). ``view.py`` and ``follower.py``
keep ``fleetpulse.control`` (breakers and pauses) current; ``service.py`` writes to it.
"""

from fleetpulse.control.access import ROLES, Caller
from fleetpulse.control.bundles import AgentBundle, load_bundle
from fleetpulse.control.follower import ControlFollower, read_control
from fleetpulse.control.governance import GovernanceState
from fleetpulse.control.log import GovernanceLog
from fleetpulse.control.plane import ControlPlane
from fleetpulse.control.service import ControlService
from fleetpulse.control.view import ControlView

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
