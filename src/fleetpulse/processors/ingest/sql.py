"""The SQL of the native ingest pass: one query that decodes a batch's Avro container into an
Arrow table, a row per record (``native.py`` runs it; ``columns.py`` checks and groups what it
returns; ``reference.py`` says the same in Python).

It only decodes and flattens: every computed column costs the engine query analysis on each
pass (the checks and the sketch bins as SQL lambdas doubled a small pass's ~10 ms), and numpy
does the same work in microseconds.
"""

from __future__ import annotations

# how the engine reads a batch: see ``decode_sql``
DECODE_BLOCK_ROWS = 8192
DECODE_SETTINGS = f"SETTINGS max_threads = 1, max_block_size = {DECODE_BLOCK_ROWS}"


def decode_sql(path: str) -> str:
    """Decode the container at ``path``: a row per record, in the container's order.

    One thread: the Avro reader is sequential anyway, and a single stream keeps the rows in
    the container's order (``columns.aggregate`` checks it at every block's edges by the
    event id, the body's first field). Blocks of 8,192 rows: a pass
    of 50,000 sparse events peaked 67-132 MB higher in one block and 45 MB in these, and ran
    faster (126-144 ms against 170-354 ms).
    """
    return f"""
SELECT _h AS head, event_id AS eid, agent_id AS agent, agent_version AS version, task_type,
       ifNull(model, '') AS model, toString(outcome) AS outcome,
       toUnixTimestamp64Micro(ended_at) AS ts, duration_ms AS dur, cost_micros AS cost,
       input_tokens AS tin, output_tokens AS tout, cached_tokens AS tcached,
       tool_calls.integration AS ci, CAST(tool_calls.status, 'Array(String)') AS cs,
       tool_calls.latency_ms AS cl, tool_calls.cost_micros AS cc, tool_calls.error_type AS ce,
       arrayMap(t -> toUnixTimestamp64Micro(t), tool_calls.started_at) AS cst,
       agent_role AS role, ifNull(upstream_agent_id, '') AS up,
       toUnixTimestamp64Micro(started_at) AS started, tool_calls.operation AS co,
       CAST(tool_calls.access, 'Array(String)') AS ca,
       arrayMap((i, o) -> endsWith(attributes[concat('approval:', i, '.', o)], ':approved'),
                tool_calls.integration, tool_calls.operation) AS capp
FROM file('{path}', 'Avro')
{DECODE_SETTINGS}
"""
