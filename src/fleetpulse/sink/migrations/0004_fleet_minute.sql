-- The console's fleet-wide reads over a period (overview, agents table): the per-minute agent
-- stats of agent_minute again, ordered by time first, so that the last hour reads the last
-- hour's rows; agent_minute (agent first) keeps serving one agent's pages. Created from
-- agent_minute's rows once (a store that had them keeps its history), then fed like it.

CREATE TABLE IF NOT EXISTS {db}.fleet_minute
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, agent_id)
TTL minute + INTERVAL {ttl_days} DAY
AS SELECT * FROM {db}.agent_minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.fleet_minute_mv TO {db}.fleet_minute AS
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

-- The whole fleet per minute (no agent): the console's fleet plots and tiles merge one row
-- per minute, not one per agent and minute. Filled once from agent_minute, then fed like it.
CREATE TABLE IF NOT EXISTS {db}.fleet_total_minute
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY minute
TTL minute + INTERVAL {ttl_days} DAY
AS SELECT
    minute,
    countMergeState(tasks) AS tasks,
    sumMergeState(success) AS success,
    sumMergeState(failure) AS failure,
    sumMergeState(timeout) AS timeout,
    sumMergeState(cancelled) AS cancelled,
    sumMergeState(denied) AS denied,
    sumMergeState(cost_micros) AS cost_micros,
    sumMergeState(input_tokens) AS input_tokens,
    sumMergeState(output_tokens) AS output_tokens,
    quantilesTDigestMergeState(0.5, 0.9, 0.99)(duration_ms) AS duration_ms
FROM {db}.agent_minute
GROUP BY minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.fleet_total_minute_mv TO {db}.fleet_total_minute AS
SELECT
    toStartOfMinute(ended_at) AS minute,
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
GROUP BY minute;
