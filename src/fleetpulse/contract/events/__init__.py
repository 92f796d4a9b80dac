"""The event contract: Avro schemas, the codec at the Kafka boundary, validation."""

from fleetpulse.contract.events.codec import SINGLE_OBJECT_MARKER, AvroCodec
from fleetpulse.contract.events.compat import check_backward_compatible
from fleetpulse.contract.events.schemas import RECORD_NAMES, SchemaStore, SchemaVersion
from fleetpulse.contract.events.task_event import check_task_event, read_task_event
from fleetpulse.contract.events.validate import validator

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
