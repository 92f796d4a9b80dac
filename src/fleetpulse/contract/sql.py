"""ClickHouse literals, written one way for every part that builds SQL (sink, audit, console)."""

from __future__ import annotations

from datetime import UTC, datetime


def quote(value: str) -> str:
    """A ClickHouse string literal.

    Example:
        >>> quote("it's")
        "'it\\\\'s'"
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def time_literal(t: datetime) -> str:
    """A ClickHouse DateTime64(6, 'UTC') literal of an aware datetime."""
    return f"toDateTime64({quote(t.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f'))}, 6, 'UTC')"
