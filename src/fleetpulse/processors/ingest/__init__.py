"""Phase 1 of the processors: a batch of raw task events in, partial aggregates out, decoded
and grouped in one native columnar pass (``native.py``); ``reference.py`` is the same in plain
Python, the oracle the native pass is tested against."""

from fleetpulse.processors.ingest.cells import Partials, PartitionProgress
from fleetpulse.processors.ingest.native import NativeIngest
from fleetpulse.processors.ingest.params import IngestParams
from fleetpulse.processors.ingest.reference import aggregate_events, reference_partials

__all__ = [
    "IngestParams",
    "NativeIngest",
    "Partials",
    "PartitionProgress",
    "aggregate_events",
    "reference_partials",
]
