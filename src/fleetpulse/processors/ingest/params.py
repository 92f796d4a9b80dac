"""The inputs of one ingest pass besides the records themselves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class IngestParams:
    """``watermarks``: each source partition's newest accepted event time before the batch.
    ``bucket_us``: the finest bucket width; ``lateness_us``: how far behind its partition's
    watermark an event may end and still count; ``max_future_us``: how far ahead of ``now_us``
    an event may end."""

    now_us: int
    bucket_us: int = 5_000_000
    lateness_us: int = 120_000_000
    max_future_us: int = 300_000_000
    watermarks: Mapping[int, int] = field(default_factory=dict)
    breakers: BreakerSpec | None = None
    alerts: AlertSpec | None = None


@dataclass(frozen=True)
class Where:
    """Where a batch's records came from, so that a rejected record's reason names it
    (``topic[partition]@offset``) exactly as every other consumer's does."""

    topic: str
    offsets: Sequence[int]


@dataclass(frozen=True)
class BreakerSpec:
    """What the breakers need counted, per second: ``call_slow_ms``, the distinct slow-call
    thresholds of the enabled call breakers (integration, agent x integration), and
    ``task_slow_ms``, those of the enabled agent breakers. Empty: that kind is not counted."""

    call_slow_ms: tuple[float, ...] = ()
    task_slow_ms: tuple[float, ...] = ()


@dataclass(frozen=True)
class AlertSpec:
    """The alert rules' groups are wanted, per ``step_s`` seconds of the task's end (a group's
    ``sec`` is its step's first second). ``run_gap_us``: task starts no further than this
    from a run's start belong to that run (schedules); None: no schedule rule, no runs."""

    run_gap_us: int | None = None
    step_s: int = 1
