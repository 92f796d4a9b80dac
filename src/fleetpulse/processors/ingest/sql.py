"""The SQL of the native ingest pass: one query that decodes a batch's Avro container into an
Arrow table, a row per record (``native.py`` runs it; ``columns.py`` groups what it returns;
``reference.py`` says the same in Python).

Besides the fields the scopes need, the engine computes per row what is cheap for it and
exact: ``bad`` (``events/task_event.py``'s checks; the sentinel is bad too) and the latency
sketch bins of the task (``dbin``) and of each call (``cbin``). A bin is
``ceil(log(v) / log(2) * multiplier) + offset``, bit-identical to ``sketch.bin_key``
(``math.log(v, 2)`` is ``log(v) / log(2)``); a latency too small to index gets the bin of 1.0,
which ``columns.py`` never reads (it counts it in the zero bin).
"""

from __future__ import annotations

from fleetpulse.contract.events.task_event import sql_accepts
from fleetpulse.processors.figures.sketch import _MIN_INDEXABLE, _MULTIPLIER, _OFFSET
from fleetpulse.processors.ingest.params import IngestParams


def _bin(v: str) -> str:
    # computed on every row: keep log finite where the bin is not read
    safe = f"if({v} > {_MIN_INDEXABLE!r}, {v}, 1.0)"
    return f"toInt32(ceil(log({safe}) / log(2) * {_MULTIPLIER!r}) + {_OFFSET!r})"


def decode_sql(path: str, params: IngestParams) -> str:
    """Decode the container at ``path``: a row per record, in the container's order."""
    bad = f"NOT {sql_accepts(params.now_us, params.max_future_us)} OR _p < 0"
    return f"""
SELECT _row AS row, _p AS p, {bad} AS bad, agent_id AS agent, agent_version AS version,
       task_type, ifNull(model, '') AS model, toString(outcome) AS outcome,
       toUnixTimestamp64Micro(ended_at) AS ts, duration_ms AS dur, {_bin("duration_ms")} AS dbin,
       cost_micros AS cost, input_tokens AS tin, output_tokens AS tout,
       arrayMap(c -> c.integration, tool_calls) AS ci,
       arrayMap(c -> toString(c.status), tool_calls) AS cs,
       arrayMap(c -> c.latency_ms, tool_calls) AS cl,
       arrayMap(c -> {_bin("c.latency_ms")}, tool_calls) AS cbin,
       arrayMap(c -> c.cost_micros, tool_calls) AS cc,
       arrayMap(c -> c.error_type, tool_calls) AS ce,
       arrayMap(c -> toUnixTimestamp64Micro(c.started_at), tool_calls) AS cst,
       agent_role AS role, ifNull(upstream_agent_id, '') AS up,
       toUnixTimestamp64Micro(started_at) AS started,
       arrayMap(c -> c.operation, tool_calls) AS co,
       arrayMap(c -> toString(c.access), tool_calls) AS ca,
       arrayMap(c -> endsWith(attributes[concat('approval:', c.integration, '.', c.operation)],
                              ':approved'), tool_calls) AS capp
FROM file('{path}', 'Avro')
"""
