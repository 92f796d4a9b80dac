"""The SQL of the native ingest pass (``native.py`` runs it; ``reference.py`` says the same in
Python). Kept apart so that the arithmetic reads in one place.

``fp_ingest.raw`` holds one decoded batch, a row per record: the columns the scopes need and
``bad`` (``events/task_event.py``'s checks; the sentinel is bad too). The grouping queries
read it through a *source*: when no row of the batch can be late (the common case, decided
from per-partition bounds) a plain one; otherwise one that adds each row's running watermark
(a window function over the earlier rows of its partition) and whether the row is late.

Each scope kind is one scan with ``GROUPING SETS``; latency sketch bins are collected with
``groupArray``, sorted and run-length encoded in the engine (``sumMap`` costs 5x more here).
A bin is ``ceil(log(v) / log(2) * multiplier) + offset``, bit-identical to ``sketch.bin_key``
(``math.log(v, 2)`` is ``log(v) / log(2)``).
"""

from __future__ import annotations

from fleetpulse.contract.events.task_event import sql_accepts
from fleetpulse.contract.semantics import (
    ATTEMPTED_STATUSES,
    CALL_ERROR_STATUSES,
    FAILED_OUTCOMES,
    FAILING_CALL_STATUSES,
    sql_set,
)
from fleetpulse.processors.figures.aggregate import COUNTERS
from fleetpulse.processors.figures.sketch import _MIN_INDEXABLE, _MULTIPLIER, _OFFSET
from fleetpulse.processors.ingest.params import IngestParams

_ERR = sql_set(CALL_ERROR_STATUSES)


def _bin(v: str) -> str:
    # the engine computes the expression on every row, also those the If drops: keep log finite
    safe = f"if({_indexable(v)}, {v}, 1.0)"
    return f"toInt32(ceil(log({safe}) / log(2) * {_MULTIPLIER!r}) + {_OFFSET!r})"


def _indexable(v: str) -> str:
    return f"{v} > {_MIN_INDEXABLE!r}"


def raw_sql(path: str, params: IngestParams) -> str:
    """Decode the container at ``path`` into ``fp_ingest.raw``."""
    bad = f"NOT {sql_accepts(params.now_us, params.max_future_us)} OR _p < 0"
    return f"""
CREATE DATABASE IF NOT EXISTS fp_ingest;
CREATE OR REPLACE TABLE fp_ingest.raw ENGINE = Memory AS
SELECT _row AS row, _p AS p, bad, agent_id AS agent, agent_version AS version, task_type,
       ifNull(model, '') AS model, toString(outcome) AS outcome, ts, duration_ms AS dur,
       cost_micros AS cost, input_tokens AS tin, output_tokens AS tout,
       arrayMap(c -> c.integration, tool_calls) AS ci,
       arrayMap(c -> toString(c.status), tool_calls) AS cs,
       arrayMap(c -> c.latency_ms, tool_calls) AS cl,
       arrayMap(c -> c.cost_micros, tool_calls) AS cc,
       arrayMap(c -> c.error_type, tool_calls) AS ce,
       arrayMap(c -> toUnixTimestamp64Micro(c.started_at), tool_calls) AS cst,
       agent_role AS role, ifNull(upstream_agent_id, '') AS up,
       toUnixTimestamp64Micro(started_at) AS started,
       arrayMap(c -> c.operation, tool_calls) AS co,
       arrayMap(c -> toString(c.access), tool_calls) AS ca,
       arrayMap(c -> endsWith(attributes[concat('approval:', c.integration, '.', c.operation)],
                              ':approved'), tool_calls) AS capp
FROM (SELECT *, toUnixTimestamp64Micro(ended_at) AS ts, {bad} AS bad FROM file('{path}', 'Avro'))
"""


# rows came back as sent (see native.py), which rows the checks refused, and per partition
# the bounds that tell whether any row can be late
META_SQL = """
SELECT count() AS rows, sum(row) AS row_sum, argMax(p, row) AS last_p,
       groupArrayIf(row, bad AND p >= 0) AS bad_rows
FROM fp_ingest.raw
"""
BOUNDS_SQL = """
SELECT p, toInt64(count()) AS events, min(ts) AS oldest, max(ts) AS newest
FROM fp_ingest.raw WHERE NOT bad GROUP BY p ORDER BY p
"""

ON_TIME_SOURCE = "(SELECT *, toInt64(0) AS wm, false AS late FROM fp_ingest.raw WHERE NOT bad)"


def late_source(params: IngestParams) -> str:
    """The countable rows with their partition's watermark before them, and lateness."""
    marks = ", ".join(f"p = {p}, {w}" for p, w in sorted(params.watermarks.items()))
    prev = f"toInt64(multiIf({marks}, 0))" if marks else "toInt64(0)"
    return f"""(SELECT *, wm > 0 AND ts < wm - {params.lateness_us} AS late FROM (
  SELECT *, greatest({prev}, max(ts) OVER (PARTITION BY p ORDER BY row
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) AS wm
  FROM fp_ingest.raw WHERE NOT bad))"""


def late_bounds_sql(source: str) -> str:
    """Per partition: events, late events and the newest on-time event time."""
    return f"""
SELECT p, toInt64(count()) AS events, toInt64(countIf(late)) AS late_events,
       maxIf(ts, NOT late) AS newest
FROM {source} GROUP BY p ORDER BY p"""


def _rle(sorted_keys: str, name: str = "bin") -> str:
    """``<name>_keys``, ``<name>_counts`` of a sorted array, run-length encoded."""
    s = sorted_keys
    return (
        f"arrayCompact({s}) AS {name}_keys, arrayMap(a -> toInt64(length(a)), arraySplit("
        f"(x, f) -> f, {s}, arrayMap(i -> i = 1 OR {s}[i] != {s}[i - 1], arrayEnumerate({s}))))"
        f" AS {name}_counts"
    )


_TAIL = ", ".join(["scope", "d1", "d2", "p", "bucket", *COUNTERS, "zero"])


def task_cells_sql(source: str, bucket_us: int) -> str:
    """Cells of the task scopes (agent, agent x version, agent x task type, model)."""
    ok = f"NOT late AND {_indexable('dur')}"
    calls = "if(late, 0, length(cs))"
    return f"""
SELECT {_TAIL}, {_rle("s")} FROM (
SELECT multiIf(g = 7, 'agent', g = 3, 'agent_version', g = 5, 'agent_task_type', 'model') AS scope,
  if(g = 14, model, agent) AS d1, multiIf(g = 3, version, g = 5, task_type, '') AS d2, p, bucket,
  toInt64(countIf(NOT late)) AS task_count,
  toInt64(countIf(NOT late AND outcome = 'success')) AS success,
  toInt64(countIf(NOT late AND outcome = 'failure')) AS failure,
  toInt64(countIf(NOT late AND outcome = 'timeout')) AS timeout,
  toInt64(countIf(NOT late AND outcome = 'cancelled')) AS cancelled,
  toInt64(countIf(NOT late AND outcome = 'denied')) AS denied,
  toInt64(sumIf(cost, NOT late)) AS cost_micros,
  toInt64(sumIf(tin, NOT late)) AS input_tokens,
  toInt64(sumIf(tout, NOT late)) AS output_tokens,
  toInt64(sum({calls})) AS tool_calls,
  toInt64(sumIf(arrayCount(s -> s IN {_ERR}, cs), NOT late)) AS tool_errors,
  toInt64(sumIf(arrayCount(s -> s = 'denied', cs), NOT late)) AS tool_denied,
  toInt64(sumIf(arrayCount(s -> s = 'short_circuited', cs), NOT late)) AS tool_short_circuited,
  toInt64(countIf(late)) AS late_events,
  toInt64(countIf(NOT late AND NOT ({_indexable("dur")}))) AS zero,
  arraySort(groupArrayIf({_bin("dur")}, {ok})) AS s,
  grouping(agent, version, task_type, model) AS g
FROM (SELECT *, intDiv(if(late, wm, ts), {bucket_us}) * {bucket_us} AS bucket FROM {source})
GROUP BY GROUPING SETS ((agent, p, bucket), (agent, version, p, bucket),
                        (agent, task_type, p, bucket), (model, p, bucket))
HAVING NOT (scope = 'model' AND d1 = '')
)"""


def call_cells_sql(source: str, bucket_us: int) -> str:
    """Cells of the integration scopes (integration, agent x integration): one row per call
    in, each task counted once per integration it called (``first``)."""
    attempted = f"st IN {sql_set(ATTEMPTED_STATUSES)}"
    ok = f"NOT late AND {attempted} AND {_indexable('lat')}"
    return f"""
SELECT {_TAIL}, {_rle("s")} FROM (
SELECT if(g = 2, 'integration', 'agent_integration') AS scope,
  if(g = 2, integ, agent) AS d1, if(g = 2, '', integ) AS d2, p, bucket,
  toInt64(countIf(NOT late AND first)) AS task_count,
  toInt64(countIf(NOT late AND first AND outcome = 'success')) AS success,
  toInt64(countIf(NOT late AND first AND outcome = 'failure')) AS failure,
  toInt64(countIf(NOT late AND first AND outcome = 'timeout')) AS timeout,
  toInt64(countIf(NOT late AND first AND outcome = 'cancelled')) AS cancelled,
  toInt64(countIf(NOT late AND first AND outcome = 'denied')) AS denied,
  toInt64(sumIf(ccost, NOT late)) AS cost_micros,
  toInt64(0) AS input_tokens,
  toInt64(0) AS output_tokens,
  toInt64(countIf(NOT late)) AS tool_calls,
  toInt64(countIf(NOT late AND st IN {_ERR})) AS tool_errors,
  toInt64(countIf(NOT late AND st = 'denied')) AS tool_denied,
  toInt64(countIf(NOT late AND st = 'short_circuited')) AS tool_short_circuited,
  toInt64(countIf(late AND first)) AS late_events,
  toInt64(countIf(NOT late AND {attempted} AND NOT ({_indexable("lat")}))) AS zero,
  arraySort(groupArrayIf({_bin("lat")}, {ok})) AS s,
  grouping(agent, integ) AS g
FROM (SELECT p, agent, outcome, late, integ, st, lat, ccost, indexOf(ci, integ) = k AS first,
             intDiv(if(late, wm, ts), {bucket_us}) * {bucket_us} AS bucket
      FROM {source} ARRAY JOIN ci AS integ, cs AS st, cl AS lat, cc AS ccost,
                               arrayEnumerate(ci) AS k)
GROUP BY GROUPING SETS ((integ, p, bucket), (agent, integ, p, bucket))
)"""


def _slow(v: str, thresholds: tuple[float, ...]) -> str:
    """How many rows are at least as slow as each threshold, as an array."""
    if not thresholds:
        return "CAST([], 'Array(Int64)')"
    return "[" + ", ".join(f"toInt64(countIf({v} >= {t!r}))" for t in thresholds) + "]"


def breaker_calls_sql(thresholds: tuple[float, ...]) -> str:
    """Calls per (partition, agent, integration, status, error type, second of the call's end)
    for the breakers, late or not; ``int(latency_ms * 1000)`` truncates as ``toInt64`` does."""
    return f"""
SELECT p, agent, integ, st, et, intDiv(start + toInt64(lat * 1000), 1000000) AS sec,
       toInt64(count()) AS n, {_slow("lat", thresholds)} AS slow
FROM fp_ingest.raw ARRAY JOIN ci AS integ, cs AS st, cl AS lat, ce AS et, cst AS start
WHERE NOT bad AND st != 'short_circuited'
GROUP BY p, agent, integ, st, et, sec"""


def breaker_tasks_sql(thresholds: tuple[float, ...]) -> str:
    """Tasks per (partition, agent, outcome, second of the task's end) for agent breakers."""
    return f"""
SELECT p, agent, outcome, intDiv(ts, 1000000) AS sec, toInt64(count()) AS n,
       {_slow("dur", thresholds)} AS slow
FROM fp_ingest.raw WHERE NOT bad GROUP BY p, agent, outcome, sec"""


# -- the alert rules' groups (cells.AlertGroups) ----------------------------------------------

_ACCEPTED = "(SELECT *, intDiv(ts, 1000000) AS sec FROM fp_ingest.raw WHERE NOT bad)"


def alert_tasks_sql() -> str:
    """Per (agent | agent x version | agent x task type, second): tasks, failures, cost,
    latency bins, and what explains the failures (failing integrations, upstream agents)."""
    failed = f"outcome IN {sql_set(FAILED_OUTCOMES)}"
    failing = f"arrayDistinct(arrayFilter((i, s) -> s IN {sql_set(FAILING_CALL_STATUSES)}, ci, cs))"
    return f"""
SELECT scope, d1, d2, sec, tasks, failures, cost, zero, {_rle("s")}, {_rle("v", "via")},
       {_rle("u", "after")} FROM (
SELECT multiIf(g = 3, 'agent', g = 1, 'agent_version', 'agent_task_type') AS scope, agent AS d1,
  multiIf(g = 1, version, g = 2, task_type, '') AS d2, sec,
  toInt64(count()) AS tasks, toInt64(countIf(failed)) AS failures, toInt64(sum(cost)) AS cost,
  toInt64(countIf(NOT ({_indexable("dur")}))) AS zero,
  arraySort(groupArrayIf({_bin("dur")}, {_indexable("dur")})) AS s,
  arraySort(arrayFlatten(groupArrayIf(failing, failed))) AS v,
  arraySort(groupArrayIf(up, failed AND up != '')) AS u,
  grouping(version, task_type) AS g
FROM (SELECT *, {failed} AS failed, {failing} AS failing FROM {_ACCEPTED})
GROUP BY GROUPING SETS ((agent, sec), (agent, version, sec), (agent, task_type, sec)))"""


def alert_calls_sql() -> str:
    """Calls per (agent, integration, role, operation, access, approved, second)."""
    attempted = f"st IN {sql_set(ATTEMPTED_STATUSES)}"
    return f"""
SELECT agent, integ, role, op, acc, appr, sec,
  toInt64(countIf(first)) AS tasks, toInt64(countIf({attempted})) AS attempted,
  toInt64(countIf({attempted} AND st != 'ok')) AS errors,
  toInt64(countIf(st = 'denied')) AS denied, toInt64(count()) AS calls
FROM (SELECT agent, role, sec, integ, st, op, acc, appr, indexOf(ci, integ) = k AS first
      FROM {_ACCEPTED} ARRAY JOIN ci AS integ, cs AS st, co AS op, ca AS acc, capp AS appr,
                                  arrayEnumerate(ci) AS k)
GROUP BY agent, integ, role, op, acc, appr, sec"""


def alert_runs_sql(gap_us: int) -> str:
    """Per agent, the starts of its runs: in time order, a start more than ``gap_us`` after the
    previous run's start begins a new run."""
    return f"""
SELECT agent, arrayPopFront(arrayFold((acc, x) -> if(x - acc[-1] > {gap_us},
         arrayPushBack(acc, x), acc), arraySort(groupArray(started)), [toInt64(-4e18)])) AS runs
FROM fp_ingest.raw WHERE NOT bad GROUP BY agent"""


ALERT_VERSIONS_SQL = """
SELECT agent, version FROM fp_ingest.raw WHERE NOT bad GROUP BY agent, version ORDER BY min(row)
"""
