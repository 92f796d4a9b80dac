"""``fleetpulse.events``: the public names of the event contract (``fleetpulse.contract.events``).

Kept at this path because users import it (tests/unit/test_public_api.py pins the names);
fleetpulse's own code imports ``fleetpulse.contract.events``.
"""

from fleetpulse.contract.events import (
    RECORD_NAMES,
    SINGLE_OBJECT_MARKER,
    AvroCodec,
    SchemaStore,
    SchemaVersion,
    check_backward_compatible,
    check_task_event,
    read_task_event,
    validator,
)

__all__ = [
    "RECORD_NAMES",
    "SINGLE_OBJECT_MARKER",
    "AvroCodec",
    "SchemaStore",
    "SchemaVersion",
    "check_backward_compatible",
    "check_task_event",
    "read_task_event",
    "validator",
]
