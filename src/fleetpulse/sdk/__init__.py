"""The agent SDK: connect, measure tasks and tool calls, emit TaskEvents without loss."""

from fleetpulse.sdk.fleet import Fleet
from fleetpulse.sdk.guard import Guard
from fleetpulse.sdk.pricing import PriceTable
from fleetpulse.sdk.spool import Spool
from fleetpulse.sdk.task import Task, ToolCall, current_task, input_hash
from fleetpulse.sdk.transport import KafkaTransport, Transport

__all__ = [
    "Fleet",
    "Guard",
    "KafkaTransport",
    "PriceTable",
    "Spool",
    "Task",
    "ToolCall",
    "Transport",
    "current_task",
    "input_hash",
]
