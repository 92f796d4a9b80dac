"""The Kafka topics of ARCHITECTURE.md: names (public contract) and their settings."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PREFIX = "fleetpulse."
_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its suffix after the prefix, partitions and topic-level configs."""

    suffix: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


# Partitions are devstack defaults sized for one 2-core machine; production sizes them per
# throughput (task-events' partitions bound how many processor and sink workers can share it).
TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec("task-events", 6, {"retention.ms": str(7 * _DAY_MS)}),
    TopicSpec("metrics", 3, {"retention.ms": str(1 * _DAY_MS)}),
    # the current state of every breaker and pause: compaction keeps the last message per key
    TopicSpec(
        "control",
        1,
        {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "3600000"},
    ),
    TopicSpec("alerts", 3, {"retention.ms": str(30 * _DAY_MS)}),
    # the system of record: keys are immutable entities (an agent version, an approval),
    # so compaction never drops history; retention is unlimited
    TopicSpec("governance", 1, {"cleanup.policy": "compact", "retention.ms": "-1"}),
    TopicSpec("dlq", 1, {"retention.ms": str(30 * _DAY_MS)}),
    # internal: the processors' partial aggregates of global scopes (integration, model), keyed
    # per cell. Compaction keeps the newest value of each cell; deletion drops cells older than
    # the longest window (24 h) plus margin.
    TopicSpec(
        "processors.partials",
        6,
        {
            "cleanup.policy": "compact,delete",
            "retention.ms": str(26 * 3600 * 1000),
            "min.compaction.lag.ms": "0",
            "segment.ms": "3600000",
        },
    ),
    # internal: per-second call counts of every breaker from each task-events partition, sent
    # to the worker that owns the breaker (partition = crc32(breaker id) % partitions). Only
    # the last few minutes matter: the breaker stage reads from now minus its longest window.
    TopicSpec(
        "processors.breaker-counts",
        6,
        {"retention.ms": str(3600 * 1000), "segment.ms": str(600 * 1000)},
    ),
    # internal: what the alert rules count, per scope and second, from each ingest pass (the
    # alert stage reads these instead of the task events); kept as long as the task events
    TopicSpec("processors.alert-cells", 6, {"retention.ms": str(7 * _DAY_MS)}),
    # internal: checkpoints of the metric workers' windows (processors/windows/checkpoint.py):
    # the chunks, kept a few hours (a restart reads the newest), and the manifests naming them,
    # compacted to the newest per worker group and task-events partition
    TopicSpec(
        "processors.windows-state",
        6,
        {"retention.ms": str(6 * 3600 * 1000), "segment.ms": str(600 * 1000)},
    ),
    TopicSpec(
        "processors.windows-checkpoints",
        1,
        {"cleanup.policy": "compact", "retention.ms": "-1", "segment.ms": str(600 * 1000)},
    ),
    # internal: the alert workers' shares of the cross-agent scopes (integration, team), keyed
    # by scope id, sent to the scope's owner (``processors/alerts/split.py``)
    TopicSpec("processors.alert-scopes", 6, {"retention.ms": str(7 * _DAY_MS)}),
    # internal: every alert's phase (pending since, firing; a tombstone once inactive), keyed
    # by dedup key: pending `for` timers survive restarts, and every alert worker sees which
    # alerts the others hold active (cascades)
    # internal: each budget scope's cost totals of the current day and month and the alert
    # groups they count up to, keyed by group and scope; a restarted alert worker adopts them
    # instead of replaying a month of groups (kept only 7 days)
    TopicSpec(
        "processors.alert-ledger",
        1,
        {"cleanup.policy": "compact", "retention.ms": "-1", "segment.ms": str(600 * 1000)},
    ),
    TopicSpec(
        "processors.alert-state",
        1,
        {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "3600000"},
    ),
)


@dataclass(frozen=True)
class Topics:
    """Topic names for one prefix.

    Example:
        >>> Topics("acme.").task_events
        'acme.task-events'
    """

    prefix: str = DEFAULT_PREFIX

    @property
    def task_events(self) -> str:
        return f"{self.prefix}task-events"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}metrics"

    @property
    def control(self) -> str:
        return f"{self.prefix}control"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def governance(self) -> str:
        return f"{self.prefix}governance"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def partials(self) -> str:
        """Internal: the processors' repartitioned partial aggregates."""
        return f"{self.prefix}processors.partials"

    @property
    def breaker_counts(self) -> str:
        """Internal: per-second breaker call counts, routed to each breaker's owner."""
        return f"{self.prefix}processors.breaker-counts"

    @property
    def alert_cells(self) -> str:
        """Internal: the alert rules' groups (per step of a few seconds) from every ingest pass."""
        return f"{self.prefix}processors.alert-cells"

    @property
    def windows_state(self) -> str:
        """Internal: the chunks of the metric workers' window checkpoints."""
        return f"{self.prefix}processors.windows-state"

    @property
    def windows_checkpoints(self) -> str:
        """Internal: the newest window checkpoint's manifest per group and partition."""
        return f"{self.prefix}processors.windows-checkpoints"

    @property
    def alert_scopes(self) -> str:
        """Internal: the alert workers' shares of the integration and team scopes."""
        return f"{self.prefix}processors.alert-scopes"

    @property
    def alert_ledger(self) -> str:
        """Internal, compacted: the budgets' cost totals per alert group and scope."""
        return f"{self.prefix}processors.alert-ledger"

    @property
    def alert_state(self) -> str:
        """Internal, compacted: every alert's phase, keyed by dedup key."""
        return f"{self.prefix}processors.alert-state"

    def name(self, spec: TopicSpec) -> str:
        return f"{self.prefix}{spec.suffix}"

    def all(self) -> list[str]:
        return [self.name(s) for s in TOPIC_SPECS]


def dlq_headers(
    reason: str, topic: str, partition: int, offset: int, stage: str
) -> list[tuple[str, str | bytes | None]]:
    """The headers every record sent to ``fleetpulse.dlq`` carries: why, from where, and which
    stage gave up on it (public contract: tools that re-drive the DLQ read them)."""
    return [
        ("fleetpulse.reason", reason.encode()),
        ("fleetpulse.source.topic", topic.encode()),
        ("fleetpulse.source.partition", str(partition).encode()),
        ("fleetpulse.source.offset", str(offset).encode()),
        ("fleetpulse.stage", stage.encode()),
    ]
