"""fleetpulse: keep control of fleets of AI agents.

Start reading here:
  sdk/fleet.py, sdk/task.py   what agent code calls (Fleet, fleet.task, task.tool, task.usage)
  contract/                   what every part shares, the bottom layer: events/codec.py (the
                              Avro wire format), topics.py and config.py (topic names and
                              FLEETPULSE_* settings), errors.py, the governance fold
  devstack/kafka.py           the real Apache Kafka the project runs locally, no Docker

The layers, each importing only those below it: contract, sdk, then processors | sink |
control | paging | devstack side by side, then console, sim and the CLI (docs/ARCHITECTURE.md).

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
        from fleetpulse.sdk.fleet import Fleet  # noqa: PLC0415  (lazy on purpose, see above)

        return Fleet
    raise AttributeError(f"module 'fleetpulse' has no attribute {name!r}")
