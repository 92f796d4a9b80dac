-- Task events and their tool calls, as the sink writes them.
-- Conventions (from ClickHouse-backed observability projects): LowCardinality for small
-- vocabularies, cost as integer micro-USD, '' instead of Nullable, UTC DateTime64(6), month
-- partitions, ORDER BY led by what queries filter on, bloom filters on ids and target records.
-- ReplacingMergeTree on the ORDER BY key (which holds the event id) is the last line against
-- duplicates; the sink's offset watermarks and insert_deduplication_token come first.

CREATE TABLE IF NOT EXISTS {db}.task_events
(
    event_id String,
    agent_id LowCardinality(String),
    agent_version LowCardinality(String),
    agent_role LowCardinality(String),
    task_id String,
    task_type LowCardinality(String),
    trace_id String,
    parent_task_id String,
    upstream_agent_id LowCardinality(String),
    input_hash String,
    outcome LowCardinality(String),
    error_type LowCardinality(String),
    started_at DateTime64(6, 'UTC'),
    ended_at DateTime64(6, 'UTC'),
    duration_ms Float64,
    model LowCardinality(String),
    provider LowCardinality(String),
    input_tokens UInt64,
    output_tokens UInt64,
    cached_tokens UInt64,
    cost_micros Int64,
    price_table_version LowCardinality(String),
    tool_call_count UInt32,
    attributes Map(LowCardinality(String), String),
    _topic LowCardinality(String),
    _partition UInt32,
    _offset UInt64,
    _inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_task_id task_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_trace_id trace_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ended_at)
ORDER BY (agent_id, ended_at, event_id)
TTL toDateTime(ended_at) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.tool_calls
(
    event_id String,
    task_id String,
    call_id String,
    agent_id LowCardinality(String),
    agent_version LowCardinality(String),
    agent_role LowCardinality(String),
    integration LowCardinality(String),
    operation LowCardinality(String),
    access LowCardinality(String),
    target String,
    status LowCardinality(String),
    error_type LowCardinality(String),
    started_at DateTime64(6, 'UTC'),
    latency_ms Float64,
    cost_micros Int64,
    _topic LowCardinality(String),
    _partition UInt32,
    _offset UInt64,
    INDEX idx_target target TYPE bloom_filter GRANULARITY 4,
    INDEX idx_task_id task_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_agent agent_id TYPE set(1000) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(started_at)
ORDER BY (integration, started_at, call_id)
TTL toDateTime(started_at) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- what analysts query: duplicates (a replay the watermarks and tokens missed) hidden
CREATE VIEW IF NOT EXISTS {db}.task_events_v AS SELECT * FROM {db}.task_events FINAL;
CREATE VIEW IF NOT EXISTS {db}.tool_calls_v AS SELECT * FROM {db}.tool_calls FINAL;
