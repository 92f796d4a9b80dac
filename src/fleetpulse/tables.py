"""Query results as terminal tables that fit the terminal (80 columns included).

Every column name shows in full and timestamps stay on one line: when the columns do not fit
side by side, the table is split into several, each repeating the first (key) column. Cells
read as values, not Python: a list prints ``3, 4`` (not ``['3', '4']``), a timestamp to the
second. Only a long free-text column (a summary, a reason) wraps, within `TEXT_WIDTH`.

Example:
    >>> column_groups(["agent", "a_long_name", "another"], [[1, 2, 3]], width=30)
    [[0, 1], [0, 2]]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

TEXT_WIDTH = 36  # free text wraps at this width
_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$")
_EDGE = 2  # a table's left and right edge
_PAD = 3  # a cell's padding and the gap to the next


def cell(value: Any) -> str:
    """A value as a person reads it."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    text = str(value)
    m = _TIMESTAMP.match(text)
    return m.group(1).replace("T", " ") if m else text


def _widths(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    out = []
    for i, name in enumerate(columns):
        longest = max((len(r[i]) for r in rows), default=0)
        out.append(max(len(name), min(longest, TEXT_WIDTH)))
    return out


def column_groups(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int
) -> list[list[int]]:
    """Indexes of the columns of each table to print, so that each fits ``width``; the first
    column is in every group."""
    text = [[cell(v) for v in r] for r in rows]
    widths = _widths(columns, text)
    if not columns:
        return []
    groups: list[list[int]] = []
    current, used = [0], _EDGE + widths[0] + _PAD
    for i in range(1, len(columns)):
        need = widths[i] + _PAD
        if used + need > width and len(current) > 1:
            groups.append(current)
            current, used = [0], _EDGE + widths[0] + _PAD
        current.append(i)
        used += need
    groups.append(current)
    return groups


def print_table(
    console: Console, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """``rows`` under ``columns`` on ``console``, split to fit its width."""
    text = [[cell(v) for v in r] for r in rows]
    widths = _widths(columns, text)
    groups = column_groups(columns, rows, console.width)
    for n, group in enumerate(groups):
        suffix = f" ({n + 1}/{len(groups)})" if len(groups) > 1 else ""
        t = Table(
            title=f"{title or ''}{suffix}" or None,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for i in group:
            free = widths[i] >= TEXT_WIDTH
            t.add_column(
                columns[i],
                no_wrap=not free,
                overflow="fold" if free else "ellipsis",
                min_width=widths[i] if not free else len(columns[i]),
                max_width=TEXT_WIDTH if free else None,
            )
        for r in text:
            t.add_row(*(r[i] for i in group))
        console.print(t)
