-- Alerts, breaker and pause transitions, governance actions and metric snapshots: the other
-- four topics of ARCHITECTURE.md, one table each, with the same conventions as 0001.
-- Every row keeps its source _topic/_partition/_offset (the sink's watermarks).

-- fleetpulse.alerts: one row per lifecycle event (firing, resolved) of a dedup key
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    dedup_key String,
    rule LowCardinality(String),
    kind LowCardinality(String),
    status LowCardinality(String),
    severity LowCardinality(String),
    scope_type LowCardinality(String),
    scope_id String,
    value Float64,
    threshold Float64,
    window_s UInt32,
    summary String,
    description String,
    runbook String,
    runbook_url String,
    labels Map(LowCardinality(String), String),
    root_cause String,
    started_at DateTime64(6, 'UTC'),
    ended_at DateTime64(6, 'UTC'),
    emitted_at DateTime64(6, 'UTC'),
    _topic LowCardinality(String),
    _partition UInt32,
    _offset UInt64,
    INDEX idx_dedup dedup_key TYPE bloom_filter GRANULARITY 4,
    INDEX idx_scope scope_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(emitted_at)
ORDER BY (rule, dedup_key, emitted_at, status)
TTL toDateTime(emitted_at) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- fleetpulse.control: every breaker transition and agent pause/resume, as it happened
-- (the topic is compacted to the current state; this table keeps the history)
CREATE TABLE IF NOT EXISTS {db}.breaker_transitions
(
    kind LowCardinality(String),
    target_id String,
    scope LowCardinality(String),
    agent_id LowCardinality(String),
    integration LowCardinality(String),
    state LowCardinality(String),
    reason String,
    measurements Map(LowCardinality(String), Float64),
    since DateTime64(6, 'UTC'),
    retry_at DateTime64(6, 'UTC'),
    probe_allowance Float64,
    sequence Int64,
    actor LowCardinality(String),
    _topic LowCardinality(String),
    _partition UInt32,
    _offset UInt64,
    INDEX idx_target target_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(since)
ORDER BY (integration, agent_id, target_id, sequence)
TTL toDateTime(since) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- fleetpulse.governance: versions, activations, approvals, pauses, role changes
-- (the system of record: no TTL)
CREATE TABLE IF NOT EXISTS {db}.governance
(
    event_id String,
    entity_type LowCardinality(String),
    entity_id String,
    action LowCardinality(String),
    actor LowCardinality(String),
    actor_role LowCardinality(String),
    agent_id LowCardinality(String),
    version UInt64,
    content_hash String,
    reason String,
    payload_json String,
    at DateTime64(6, 'UTC'),
    sequence Int64,
    _topic LowCardinality(String),
    _partition UInt32,
    _offset UInt64,
    INDEX idx_entity entity_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (entity_type, entity_id, at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- fleetpulse.metrics: the processors' rolling-window snapshots
CREATE TABLE IF NOT EXISTS {db}.metric_snapshots
(
    scope_type LowCardinality(String),
    scope_id String,
    dimensions Map(LowCardinality(String), String),
    horizon_s UInt32,
    window_start DateTime64(6, 'UTC'),
    window_end DateTime64(6, 'UTC'),
    emitted_at DateTime64(6, 'UTC'),
    task_count UInt64,
    success UInt64,
    failure UInt64,
    timeout UInt64,
    cancelled UInt64,
    denied UInt64,
    failure_rate Float64,
    latency_p50_ms Float64,
    latency_p90_ms Float64,
    latency_p95_ms Float64,
    latency_p99_ms Float64,
    cost_micros Int64,
    input_tokens UInt64,
    output_tokens UInt64,
    tool_calls UInt64,
    tool_errors UInt64,
    tool_error_rate Float64,
    tool_denied UInt64,
    tool_short_circuited UInt64,
    late_events UInt64,
    _topic LowCardinality(String),
    _partition UInt32,
    _offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(emitted_at)
ORDER BY (scope_type, scope_id, horizon_s, emitted_at)
TTL toDateTime(emitted_at) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS {db}.alerts_v AS SELECT * FROM {db}.alerts FINAL;
CREATE VIEW IF NOT EXISTS {db}.breaker_transitions_v AS SELECT * FROM {db}.breaker_transitions FINAL;
CREATE VIEW IF NOT EXISTS {db}.governance_v AS SELECT * FROM {db}.governance FINAL;
CREATE VIEW IF NOT EXISTS {db}.metric_snapshots_v AS SELECT * FROM {db}.metric_snapshots FINAL;
