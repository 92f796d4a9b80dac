"""The control API's path and query parameters, with every bound stated (limits.py), so the
OpenAPI document describes what the API accepts and a value out of range is a 422 before the
service layer sees it. The request bodies are `control.models` (shared with `HttpGateway`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator

from fleetpulse.contract import limits


def _epoch(where: str) -> AfterValidator:
    return AfterValidator(lambda v: None if v is None else limits.check_epoch(v, where))


# -- path and query parameters --------------------------------------------------------------

AgentId = Annotated[
    str, Path(pattern=limits.ID_PATTERN, max_length=limits.ID_MAX, description="an agent id")
]
VersionNo = Annotated[int, Path(ge=1, le=limits.VERSION_MAX)]
BreakerId = Annotated[
    str,
    Path(
        pattern=limits.BREAKER_ID_PATTERN,
        max_length=300,
        description="integration:NAME, agent:AGENT|integration:NAME or agent:AGENT",
    ),
]
HexId = Annotated[str, Path(pattern=limits.HEX_ID_PATTERN, max_length=64)]
DedupKey = Annotated[str, Path(min_length=1, max_length=limits.KEY_MAX)]
PrincipalName = Annotated[
    str, Path(pattern=limits.ID_PATTERN, max_length=limits.ID_MAX, description="a principal")
]
Label = Annotated[str, Query(pattern=limits.ID_PATTERN, max_length=limits.ID_MAX)]
OptVersion = Annotated[int | None, Query(ge=1, le=limits.VERSION_MAX)]
OptIdent = Annotated[str | None, Query(max_length=limits.ID_MAX)]
Since = Annotated[
    datetime | None,
    Query(description="ISO 8601, between 2000 and 2200; naive times are UTC"),
    _epoch("since"),
]
Until = Annotated[
    datetime | None,
    Query(description="ISO 8601, between 2000 and 2200; naive times are UTC"),
    _epoch("until"),
]
Limit = Annotated[int, Query(ge=1, le=limits.LIMIT_MAX)]
OptReason = Annotated[str, Query(max_length=limits.TEXT_MAX)]
