-- Rollups fed by materialized views as task_events and tool_calls are inserted.
-- Per-minute agent and integration stats keep -State aggregates (AggregatingMergeTree), so any
-- span (an hour, a day) merges exactly the way ClickHouse would compute it from raw rows,
-- latency quantiles included (t-digest, mergeable). Daily figures per agent version are exact
-- integer sums (SummingMergeTree). Query them through the *_v views or with -Merge functions.
--
-- A deduplicated insert (same insert_deduplication_token) is not pushed to the views, so the
-- rollups count each event once as long as the sink's watermarks and tokens hold.

CREATE TABLE IF NOT EXISTS {db}.agent_minute
(
    minute DateTime('UTC'),
    agent_id LowCardinality(String),
    tasks AggregateFunction(count),
    success AggregateFunction(sum, UInt64),
    failure AggregateFunction(sum, UInt64),
    timeout AggregateFunction(sum, UInt64),
    cancelled AggregateFunction(sum, UInt64),
    denied AggregateFunction(sum, UInt64),
    cost_micros AggregateFunction(sum, Int64),
    input_tokens AggregateFunction(sum, UInt64),
    output_tokens AggregateFunction(sum, UInt64),
    duration_ms AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (agent_id, minute)
TTL minute + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.agent_minute_mv TO {db}.agent_minute AS
SELECT
    toStartOfMinute(ended_at) AS minute,
    agent_id,
    countState() AS tasks,
    sumState(toUInt64(outcome = 'success')) AS success,
    sumState(toUInt64(outcome = 'failure')) AS failure,
    sumState(toUInt64(outcome = 'timeout')) AS timeout,
    sumState(toUInt64(outcome = 'cancelled')) AS cancelled,
    sumState(toUInt64(outcome = 'denied')) AS denied,
    sumState(cost_micros) AS cost_micros,
    sumState(input_tokens) AS input_tokens,
    sumState(output_tokens) AS output_tokens,
    quantilesTDigestState(0.5, 0.9, 0.99)(duration_ms) AS duration_ms
FROM {db}.task_events
GROUP BY minute, agent_id;

CREATE TABLE IF NOT EXISTS {db}.integration_minute
(
    minute DateTime('UTC'),
    integration LowCardinality(String),
    calls AggregateFunction(count),
    errors AggregateFunction(sum, UInt64),
    timeouts AggregateFunction(sum, UInt64),
    denied AggregateFunction(sum, UInt64),
    short_circuited AggregateFunction(sum, UInt64),
    cost_micros AggregateFunction(sum, Int64),
    latency_ms AggregateFunction(quantilesTDigestIf(0.5, 0.9, 0.99), Float64, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (integration, minute)
TTL minute + INTERVAL {ttl_days} DAY;

-- latency counts only attempted calls, as the processors do: denied and short-circuited calls
-- never reached the integration
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.integration_minute_mv TO {db}.integration_minute AS
SELECT
    toStartOfMinute(started_at) AS minute,
    integration,
    countState() AS calls,
    sumState(toUInt64(status = 'error')) AS errors,
    sumState(toUInt64(status = 'timeout')) AS timeouts,
    sumState(toUInt64(status = 'denied')) AS denied,
    sumState(toUInt64(status = 'short_circuited')) AS short_circuited,
    sumState(cost_micros) AS cost_micros,
    quantilesTDigestIfState(0.5, 0.9, 0.99)(latency_ms, toUInt8(status IN ('ok', 'error', 'timeout')))
        AS latency_ms
FROM {db}.tool_calls
GROUP BY minute, integration;

CREATE TABLE IF NOT EXISTS {db}.agent_version_daily
(
    day Date,
    agent_id LowCardinality(String),
    agent_version LowCardinality(String),
    tasks UInt64,
    success UInt64,
    failure UInt64,
    timeout UInt64,
    cancelled UInt64,
    denied UInt64,
    cost_micros Int64,
    input_tokens UInt64,
    output_tokens UInt64,
    tool_calls UInt64,
    duration_ms_sum Float64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, agent_id, agent_version)
TTL day + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.agent_version_daily_mv TO {db}.agent_version_daily AS
SELECT
    toDate(ended_at) AS day,
    agent_id,
    agent_version,
    count() AS tasks,
    countIf(outcome = 'success') AS success,
    countIf(outcome = 'failure') AS failure,
    countIf(outcome = 'timeout') AS timeout,
    countIf(outcome = 'cancelled') AS cancelled,
    countIf(outcome = 'denied') AS denied,
    sum(cost_micros) AS cost_micros,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(tool_call_count) AS tool_calls,
    sum(duration_ms) AS duration_ms_sum
FROM {db}.task_events
GROUP BY day, agent_id, agent_version;

-- the rollups as analysts read them: one row per key, merged
CREATE VIEW IF NOT EXISTS {db}.agent_minute_v AS
SELECT
    minute,
    agent_id,
    countMerge(tasks) AS tasks,
    sumMerge(success) AS success,
    sumMerge(failure) AS failure,
    sumMerge(timeout) AS timeout,
    sumMerge(cancelled) AS cancelled,
    sumMerge(denied) AS denied,
    sumMerge(cost_micros) AS cost_micros,
    sumMerge(input_tokens) AS input_tokens,
    sumMerge(output_tokens) AS output_tokens,
    quantilesTDigestMerge(0.5, 0.9, 0.99)(duration_ms) AS duration_ms_p50_p90_p99
FROM {db}.agent_minute
GROUP BY minute, agent_id;

CREATE VIEW IF NOT EXISTS {db}.integration_minute_v AS
SELECT
    minute,
    integration,
    countMerge(calls) AS calls,
    sumMerge(errors) AS errors,
    sumMerge(timeouts) AS timeouts,
    sumMerge(denied) AS denied,
    sumMerge(short_circuited) AS short_circuited,
    sumMerge(cost_micros) AS cost_micros,
    quantilesTDigestIfMerge(0.5, 0.9, 0.99)(latency_ms) AS latency_ms_p50_p90_p99
FROM {db}.integration_minute
GROUP BY minute, integration;

CREATE VIEW IF NOT EXISTS {db}.agent_version_daily_v AS
SELECT
    day,
    agent_id,
    agent_version,
    sum(tasks) AS tasks,
    sum(success) AS success,
    sum(failure) AS failure,
    sum(timeout) AS timeout,
    sum(cancelled) AS cancelled,
    sum(denied) AS denied,
    sum(cost_micros) AS cost_micros,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(tool_calls) AS tool_calls,
    sum(duration_ms_sum) AS duration_ms_sum
FROM {db}.agent_version_daily
GROUP BY day, agent_id, agent_version;
