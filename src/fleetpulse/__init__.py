"""fleetpulse: keep control of fleets of AI agents.

Start reading here:
  sdk/fleet.py, sdk/task.py   what agent code calls (Fleet, fleet.task, task.tool, task.usage)
  events/codec.py             the Avro wire format every component shares
  topics.py, config.py        the public contract: topic names and FLEETPULSE_* settings
  devstack/kafka.py           the real Apache Kafka the project runs locally, no Docker
"""

from fleetpulse.errors import (
    AgentPausedError,
    ApprovalDeniedError,
    ApprovalExpiredError,
    CircuitOpenError,
    ConfigError,
    EventValidationError,
    FleetpulseError,
    PermissionDeniedError,
)
from fleetpulse.sdk.fleet import Fleet

__version__ = "0.1.0"

__all__ = [
    "AgentPausedError",
    "ApprovalDeniedError",
    "ApprovalExpiredError",
    "CircuitOpenError",
    "ConfigError",
    "EventValidationError",
    "Fleet",
    "FleetpulseError",
    "PermissionDeniedError",
    "__version__",
]
