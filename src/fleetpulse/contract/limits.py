"""The bounds of every value a caller hands the control plane, in one place.

The API's request models state them (so the OpenAPI document carries them) and the service
layer checks them again (so the CLI acting directly gets the same refusal). A value out of
bounds is a ``ValueError`` whose message says what is allowed; the API answers it with 422.

Example:
    >>> check_json_value({"ticket": 42, "tags": ["a"]}, "details")   # returns None
    >>> check_epoch(datetime(1970, 1, 1, 0, 0, 0, 5, tzinfo=UTC), "until")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: until: 1970-01-01T00:00:00.000005+00:00 is not a time fleetpulse has seen; ...
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

# identifiers: agent ids (as bundles.py checks them), labels and principal names
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"
ID_MAX = 128
# integration:NAME, agent:AGENT|integration:NAME or agent:AGENT (processors/breakers/machine.py)
BREAKER_ID_PATTERN = (
    r"^(agent:[^|/\s]{1,128}\|integration:[^|/\s]{1,128}"
    r"|integration:[^|/\s]{1,128}|agent:[^|/\s]{1,128})$"
)
HEX_ID_PATTERN = r"^[0-9a-f]{1,64}$"  # approval and silence ids
KEY_MAX = 512  # alert dedup keys
TEXT_MAX = 2000  # reasons, summaries, messages
ACTION_MAX = 256  # integration.operation of an approval request
VERSION_MAX = 2**31 - 1
LIMIT_MAX = 100_000  # audit rows per query

MAX_TIMEOUT_S = 30 * 86400  # an approval request waits at most 30 days
MAX_SILENCE_S = 30 * 86400

# free-form JSON (an approval's details): what the governance event can carry
JSON_MAX_DEPTH = 8
JSON_MAX_ITEMS = 1000  # values in the whole document
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

# sensible times: nothing fleetpulse records is older than this or this far ahead
EPOCH_MIN = datetime(2000, 1, 1, tzinfo=UTC)
EPOCH_MAX = datetime(2200, 1, 1, tzinfo=UTC)


def check_json_value(value: Any, where: str) -> None:
    """Refuse what cannot be stored as JSON in a governance event: integers outside 64 bits,
    NaN and infinities, nesting deeper than 8, more than 1,000 values.

    Raises:
        ValueError: naming the path of the first offending value.
    """
    count = 0

    def walk(v: Any, path: str, depth: int) -> None:
        nonlocal count
        count += 1
        if count > JSON_MAX_ITEMS:
            raise ValueError(f"{where}: more than {JSON_MAX_ITEMS} values; send a summary")
        if depth > JSON_MAX_DEPTH:
            raise ValueError(f"{path}: nested deeper than {JSON_MAX_DEPTH} levels")
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return
        if isinstance(v, int):
            if not _LONG_MIN <= v <= _LONG_MAX:
                raise ValueError(f"{path}: {v} is outside the 64-bit integer range; send a string")
            return
        if isinstance(v, float):
            if not math.isfinite(v):
                raise ValueError(f"{path}: {v} is not a finite number")
            return
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise ValueError(f"{path}: keys must be strings, got {k!r}")
                walk(item, f"{path}.{k}", depth + 1)
            return
        if isinstance(v, list | tuple):
            for i, item in enumerate(v):
                walk(item, f"{path}[{i}]", depth + 1)
            return
        raise ValueError(f"{path}: {type(v).__name__} is not a JSON value")

    walk(value, where, 0)


def check_seconds(value: float, where: str, maximum: float) -> float:
    """A finite duration in (0, maximum] seconds."""
    if not (math.isfinite(value) and 0 < value <= maximum):
        raise ValueError(
            f"{where} must be more than 0 and at most {maximum:g} seconds, not {value}"
        )
    return value


def check_epoch(value: datetime, where: str) -> datetime:
    """A timezone-aware time between 2000 and 2200 (a naive one is taken as UTC)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EPOCH_MIN <= aware < EPOCH_MAX:
        raise ValueError(
            f"{where}: {aware.isoformat()} is not a time fleetpulse has seen; give an ISO 8601 "
            f"time between {EPOCH_MIN.year} and {EPOCH_MAX.year} (e.g. 2026-01-31T12:00:00Z)"
        )
    return aware
