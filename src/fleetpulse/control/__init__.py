"""The control plane: what is paused or forced, by whom and why.

Today: the view of ``fleetpulse.control`` (breakers and pauses), the follower that keeps it
current, and the operator service behind ``fleetpulse breakers ...`` and ``fleetpulse agents
pause|resume``. Versioned agent bundles, roles and approvals join it with the governance issue.
"""

from fleetpulse.control.follower import ControlFollower, read_control
from fleetpulse.control.service import ControlService
from fleetpulse.control.view import ControlView

__all__ = ["ControlFollower", "ControlService", "ControlView", "read_control"]
