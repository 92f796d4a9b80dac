"""What the fleet's figures mean, in one place: which outcomes and call statuses count as
failures, and how a scope is written as a key. The SDK, the ingest pass's SQL, the windows, the
breakers and the alert rules all read these; none defines its own.

Example:
    >>> scope_id({"agent_id": "triage", "integration": "crm|eu"})
    'agent=triage|integration=crm%7Ceu'
    >>> parse_scope_id("agent=triage|integration=crm%7Ceu")
    {'agent_id': 'triage', 'integration': 'crm|eu'}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

OUTCOMES = ("success", "failure", "timeout", "cancelled", "denied")
# a task failed: the failure rate's numerator, a failure for agent breakers and alert rules
FAILED_OUTCOMES = frozenset({"failure", "timeout"})
# a task that never really ran: agent breakers count it neither way
UNCOUNTED_OUTCOMES = frozenset({"denied", "cancelled"})

CALL_STATUSES = ("ok", "error", "timeout", "denied", "short_circuited")
# the call reached the integration: its latency is measured, it counts as an attempt
ATTEMPTED_STATUSES = frozenset({"ok", "error", "timeout"})
# the integration failed the call: the integration error rate's numerator
CALL_ERROR_STATUSES = frozenset({"error", "timeout"})
# the call failed the task, the integration's fault or its breaker's
FAILING_CALL_STATUSES = frozenset({"error", "timeout", "short_circuited"})

# dimension -> its short name in a scope id
SHORT_NAMES = {
    "agent_id": "agent",
    "agent_version": "version",
    "task_type": "task_type",
    "integration": "integration",
    "model": "model",
    "team": "team",
}
_LONG_NAMES = {v: k for k, v in SHORT_NAMES.items()}


def scope_id(dims: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """``agent=triage|task_type=refund``: dimensions in the order given, ``%``, ``|`` and ``=``
    in values escaped so that any value round-trips through ``parse_scope_id``."""
    pairs = dims.items() if isinstance(dims, Mapping) else dims
    return "|".join(f"{SHORT_NAMES[d]}={_escape(v)}" for d, v in pairs)


def parse_scope_id(sid: str) -> dict[str, str]:
    """The dimensions of a scope id written by ``scope_id``.

    Raises:
        ValueError: a part is not ``name=value`` with a known name.
    """
    out = {}
    for part in sid.split("|"):
        short, sep, value = part.partition("=")
        if not sep or short not in _LONG_NAMES:
            raise ValueError(f"{sid!r} is not a scope id (expected e.g. agent=triage|task_type=x)")
        out[_LONG_NAMES[short]] = _unescape(value)
    return out


def _escape(v: str) -> str:
    return v.replace("%", "%25").replace("|", "%7C").replace("=", "%3D")


def _unescape(v: str) -> str:
    return v.replace("%3D", "=").replace("%7C", "|").replace("%25", "%")


def sql_set(values: Iterable[str]) -> str:
    """``('error', 'timeout')``: a set of these constants for the ingest pass's SQL."""
    return "(" + ", ".join(f"'{v}'" for v in sorted(values)) + ")"
