-- Each rollup deduplicates a retried block by itself. The sink inserts with an
-- insert_deduplication_token and deduplicate_blocks_in_dependent_materialized_views = 1: if a
-- SIGKILL lands after a block reached task_events but before every view had written it, the
-- retry is dropped by task_events, still pushed to the views, and each view keeps what it
-- already holds and adds what it missed. That needs a deduplication window on the views'
-- tables too (non-replicated MergeTree has none by default).

ALTER TABLE {db}.agent_minute MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.integration_minute MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.agent_version_daily MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.fleet_minute MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.fleet_total_minute MODIFY SETTING non_replicated_deduplication_window = 10000;
