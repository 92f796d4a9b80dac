"""What the alert rules read: per-scope figures over sliding windows, and cost per calendar
period. Pure: times are passed in.

A ``Rolling`` window keeps about 60 buckets and a running total: an event is added to its
bucket and to the total, and a bucket leaving the window is subtracted from the total, so
reading a window costs nothing however long it is. Everything is an integer except the
latency sketch's bins (integers too), so the total never drifts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fleetpulse.processors.figures.sketch import LatencySketch

US = 1_000_000


class Cell:
    """Figures of one scope over one bucket or window.

    ``failed_via`` counts failed tasks per integration that had a failing call in them (what an
    open breaker on that integration explains); ``failed_after`` counts failed tasks per
    upstream agent named by the event (cascades).
    """

    __slots__ = (
        "attempted",
        "cost_micros",
        "denied",
        "errors",
        "failed_after",
        "failed_via",
        "failures",
        "latency",
        "tasks",
        "unapproved",
        "unpermitted",
    )

    def __init__(self) -> None:
        self.tasks = self.failures = self.cost_micros = 0
        self.attempted = self.errors = self.denied = self.unpermitted = self.unapproved = 0
        self.latency = LatencySketch()
        self.failed_via: dict[str, int] = {}
        self.failed_after: dict[str, int] = {}

    _INTS = (
        "tasks",
        "failures",
        "cost_micros",
        "attempted",
        "errors",
        "denied",
        "unpermitted",
        "unapproved",
    )

    def merge(self, other: Cell, sign: int = 1) -> None:
        for name in self._INTS:
            setattr(self, name, getattr(self, name) + sign * getattr(other, name))
        if sign > 0:
            self.latency.merge(other.latency)
        else:
            self.latency.subtract(other.latency)
        for mine, theirs in (
            (self.failed_via, other.failed_via),
            (self.failed_after, other.failed_after),
        ):
            for k, n in theirs.items():
                left = mine.get(k, 0) + sign * n
                if left:
                    mine[k] = left
                else:
                    mine.pop(k, None)

    def copy(self) -> Cell:
        c = Cell()
        c.merge(self)
        return c

    def minus(self, other: Cell) -> Cell:
        c = self.copy()
        c.merge(other, -1)
        return c

    @property
    def failure_rate(self) -> float:
        return self.failures / self.tasks if self.tasks else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.attempted if self.attempted else 0.0

    def p95(self) -> float:
        return self.latency.quantile(0.95) if self.latency.count else 0.0

    def is_empty(self) -> bool:
        return not (self.tasks or self.attempted or self.denied or self.unpermitted)


def bucket_s(window_s: int) -> int:
    """The bucket width of a rolling window of ``window_s`` seconds: ~60 buckets."""
    return max(1, window_s // 60)


def outside(ts_s: int, now_s: int, window_s: int) -> bool:
    """Whether an event at ``ts_s`` falls in a bucket a window of ``window_s`` seconds has
    already left at ``now_s`` (such an event is not counted)."""
    width = bucket_s(window_s)
    return ts_s - ts_s % width + width <= now_s - window_s


class Rolling:
    """One scope's figures over the last ``window_s`` seconds, in ~60 buckets."""

    __slots__ = ("bucket_s", "buckets", "total", "window_s")

    def __init__(self, window_s: int) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s(window_s)
        self.buckets: dict[int, Cell] = {}
        self.total = Cell()

    def cells(self, ts_s: int, now_s: int) -> tuple[Cell, Cell] | None:
        """The bucket holding ``ts_s`` and the total, to add one event to both; None when the
        event is already outside the window."""
        if outside(ts_s, now_s, self.window_s):
            return None
        start = ts_s - ts_s % self.bucket_s
        cell = self.buckets.get(start)
        if cell is None:
            cell = self.buckets[start] = Cell()
        return cell, self.total

    def advance(self, now_s: int) -> None:
        """Subtract the buckets the window has left."""
        edge = now_s - self.window_s
        for start in [s for s in self.buckets if s + self.bucket_s <= edge]:
            self.total.merge(self.buckets.pop(start), -1)


def period_key(period: str, ts_us: int) -> str:
    """``2026-11-24`` (day) or ``2026-11`` (month), UTC."""
    d = datetime.fromtimestamp(ts_us / US, UTC)
    return d.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


def period_bounds(period: str, ts_us: int) -> tuple[int, int]:
    """[start, end) of the UTC day or month holding ``ts_us``, in epoch microseconds."""
    d = datetime.fromtimestamp(ts_us / US, UTC)
    if period == "day":
        start = d.replace(hour=0, minute=0, second=0, microsecond=0)
        end_s = start.timestamp() + 86400
    else:
        start = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        end_s = nxt.timestamp()
    return int(start.timestamp() * US), int(end_s * US)


class Ledger:
    """Cost per (scope, period) in micro-USD; periods other than the current ones are dropped.

    A month of cost outlives the alert groups it was counted from (kept 7 days), so the alert
    stage saves each scope's totals (``record``) and a restarted one adopts them (``adopt``)
    instead of replaying the month. Costs are added with their *source* (the alert-cells
    partition and offset they came from); what the adopted totals already hold (up to the
    offsets they name) is not added again when the replay reads it."""

    def __init__(self) -> None:
        self.spent: dict[tuple[str, str, str], int] = {}  # (scope id, period, key) -> micros
        self._day = (0, 0, "", "")  # the day last seen: start, end, day key, month key
        self.seen: dict[tuple[str, int], int] = {}  # (scope, source partition) -> last offset
        self.floor: dict[tuple[str, int], int] = {}  # adopted: counted up to these offsets
        self.changed: set[str] = set()  # scopes whose totals moved since the last records

    def add(
        self, scope_id: str, ts_us: int, micros: int, source: tuple[int, int] | None = None
    ) -> None:
        if source is not None:
            src = (scope_id, source[0])
            if source[1] <= self.floor.get(src, -1):
                return  # in the adopted totals already
            if source[1] > self.seen.get(src, -1):
                self.seen[src] = source[1]
        start, end, day, month = self._day
        if not start <= ts_us < end:
            start, end = period_bounds("day", ts_us)
            day, month = period_key("day", ts_us), period_key("month", ts_us)
            self._day = (start, end, day, month)
        spent = self.spent
        for k in ((scope_id, "day", day), (scope_id, "month", month)):
            spent[k] = spent.get(k, 0) + micros
        self.changed.add(scope_id)

    def get(self, scope_id: str, period: str, now_us: int) -> int:
        return self.spent.get((scope_id, period, period_key(period, now_us)), 0)

    def evict(self, now_us: int) -> None:
        current = {period_key("day", now_us), period_key("month", now_us)}
        for k in [k for k in self.spent if k[2] not in current]:
            del self.spent[k]

    def record(self, scope_id: str, now_us: int) -> dict[str, Any]:
        """One scope's current totals and the sources they count up to (JSON-able)."""
        return {
            "spent": {
                f"{period}/{key}": micros
                for (sid, period, key), micros in self.spent.items()
                if sid == scope_id and key == period_key(period, now_us)
            },
            "seen": {str(p): o for (sid, p), o in self.seen.items() if sid == scope_id},
        }

    def adopt(self, scope_id: str, record: dict[str, Any], now_us: int) -> None:
        """Take one scope's saved totals (``record``), of the current periods only.

        Raises:
            ValueError: the record is not a ledger record.
        """
        try:
            for name, micros in record["spent"].items():
                period, key = name.split("/", 1)
                if key == period_key(period, now_us):
                    self.spent[(scope_id, period, key)] = int(micros)
            for p, o in record["seen"].items():
                self.floor[(scope_id, int(p))] = self.seen[(scope_id, int(p))] = int(o)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a ledger record: {exc!r}") from None
