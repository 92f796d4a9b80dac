"""fleetpulse: keep control of fleets of AI agents.

Start reading here:
  sdk/fleet.py, sdk/task.py   what agent code calls (Fleet, fleet.task, task.tool, task.usage)
  events/codec.py             the Avro wire format every component shares
  topics.py, config.py        the public contract: topic names and FLEETPULSE_* settings
  devstack/kafka.py           the real Apache Kafka the project runs locally, no Docker

``import fleetpulse`` loads only the errors; ``Fleet`` (the SDK) is imported on first use, so a
process that only catches fleetpulse errors, or runs one CLI verb, pays for nothing else.
"""

from typing import TYPE_CHECKING, Any

from fleetpulse.contract.errors import (
    AgentPausedError,
    ApprovalDeniedError,
    ApprovalExpiredError,
    CircuitOpenError,
    ConfigError,
    EventValidationError,
    FleetpulseError,
    PermissionDeniedError,
)

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    # PEP 562: the SDK is loaded when `Fleet` is first asked for, not by `import fleetpulse`
    if name == "Fleet":
        from fleetpulse.sdk.fleet import Fleet

        return Fleet
    raise AttributeError(f"module 'fleetpulse' has no attribute {name!r}")
