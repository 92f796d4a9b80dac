"""Simulated agents for the demo, the benchmarks and the tests (the full simulator with fault
injection comes with the demo issue)."""

from fleetpulse.sim.agents import AgentProfile, run_agent, standard_profiles

__all__ = ["AgentProfile", "run_agent", "standard_profiles"]
