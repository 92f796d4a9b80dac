"""The fleet simulator: seeded agents through the real SDK, with a scenario's faults and
operator actions (``fleetpulse sim run``), and the one-command demo (``fleetpulse demo``).

Read `scenario.py` (the file format), then `agents.py` (one agent), then `runner.py`."""

from fleetpulse.sim.runner import SimResult, Simulator
from fleetpulse.sim.scenario import Scenario, load_scenario

__all__ = ["Scenario", "SimResult", "Simulator", "load_scenario"]
