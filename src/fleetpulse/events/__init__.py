"""The event contract: Avro schemas, the codec at the Kafka boundary, validation."""

from fleetpulse.events.codec import SINGLE_OBJECT_MARKER, AvroCodec
from fleetpulse.events.compat import check_backward_compatible
from fleetpulse.events.schemas import RECORD_NAMES, SchemaStore, SchemaVersion
from fleetpulse.events.task_event import check_task_event, read_task_event
from fleetpulse.events.validate import validator

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
