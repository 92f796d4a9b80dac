"""When an agent is expected to run, and what its runs say about that. Pure: times are
passed in (epoch seconds), so schedules are tested without a clock.

A schedule is a cron expression (evaluated in its ``timezone``, so ``0 2 * * *`` in
Europe/Paris is 02:00 Paris time on both sides of a DST change) or an interval, plus a grace
period. Three conditions are derived from the runs seen (a *run* is a burst of tasks: tasks
starting within ``run_gap_s`` of the previous one belong to the same run):

* ``missed``: a slot's grace has passed and no run started from ``slot - grace`` on;
* ``late``: the newest run started more than ``grace`` after its slot, with no on-time run for
  that slot (for intervals: the newest gap exceeded ``interval + grace``);
* ``too_often``: more runs in the window than ``ratio`` times the slots it holds, plus one.

Example:
    >>> s = Schedule(interval_s=60, grace_s=10)
    >>> check(s, runs=[0.0, 60.0], now=200.0, since=0.0, window_s=600, ratio=2.0)["missed"]
    (True, 80.0)
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_MAX_SLOTS = 10_000  # counting slots in a window stops here (a per-minute cron over a week)


@cache
def _cron() -> Any:
    """croniter, loaded with the first cron schedule: with dateutil and pytz it costs ~35 ms of
    import, which `from fleetpulse import Fleet` should not pay for agents without one."""
    from croniter import croniter  # noqa: PLC0415  (lazy on purpose, see above)

    return croniter


class Schedule(BaseModel):
    """When the agent is expected to run: a cron expression or an interval, plus grace."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    cron: str | None = None
    interval_s: float | None = Field(default=None, gt=0)
    grace_s: float = Field(default=60, ge=0)
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one_of(self) -> Schedule:
        if (self.cron is None) == (self.interval_s is None):
            raise ValueError("give exactly one of cron or interval_s")
        if self.cron is not None and not _cron().is_valid(self.cron):
            raise ValueError(f"cron {self.cron!r} is not a valid cron expression (5 fields)")
        return self

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone, e.g. UTC, Europe/Paris") from None
        return v

    def prev_slot(self, t: float) -> float:
        """The latest cron slot at or before ``t`` (cron schedules only)."""
        assert self.cron is not None
        tz = ZoneInfo(self.timezone)
        # croniter's get_prev is strictly before its start: start a second later, so a slot
        # exactly at ``t`` counts (slots are whole minutes)
        p = float(_cron()(self.cron, datetime.fromtimestamp(t + 1, tz)).get_prev(float))
        if p > t:
            p = float(_cron()(self.cron, datetime.fromtimestamp(t, tz)).get_prev(float))
        return p

    def next_slot(self, t: float) -> float:
        assert self.cron is not None
        when = datetime.fromtimestamp(t, ZoneInfo(self.timezone))
        return float(_cron()(self.cron, when).get_next(float))

    def slots_between(self, start: float, end: float) -> int:
        """How many runs the schedule expects in ``(start, end]``."""
        if self.interval_s is not None:
            return int((end - start) // self.interval_s)
        it = _cron()(self.cron or "", datetime.fromtimestamp(start, ZoneInfo(self.timezone)))
        n = 0
        while n < _MAX_SLOTS and it.get_next(float) <= end:
            n += 1
        return n


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    daily_usd: float | None = Field(default=None, gt=0)
    monthly_usd: float | None = Field(default=None, gt=0)


Status = dict[str, tuple[bool, float]]


def check(
    schedule: Schedule,
    *,
    runs: list[float],
    now: float,
    since: float,
    window_s: float,
    ratio: float,
) -> Status:
    """``missed``, ``late`` and ``too_often``, each as (active, value in seconds or runs).

    ``runs`` are run start times, oldest first; ``since`` is when watching began (nothing can
    be called missed before anyone looked).
    """
    g = schedule.grace_s
    last = runs[-1] if runs else None
    if schedule.interval_s is not None:
        iv = schedule.interval_s
        due = (last if last is not None else since) + iv + g
        missed = (now > due, max(0.0, now - due + g))
        gap = runs[-1] - runs[-2] if len(runs) >= 2 else 0.0
        late = (gap > iv + g, max(0.0, gap - iv))
    else:
        slot = schedule.prev_slot(now - g)
        covered = last is not None and last >= slot - g
        missed = (slot >= since and not covered, max(0.0, now - slot))
        late = (False, 0.0)
        if last is not None:
            s = schedule.prev_slot(last)
            early_for_next = schedule.next_slot(last) - last <= g
            on_time_before = len(runs) >= 2 and runs[-2] >= s - g
            delay = last - s
            if delay > g and not early_for_next and not on_time_before:
                late = (True, delay)
    start = now - window_s
    recent = sum(1 for r in runs if r > start)
    expected = schedule.slots_between(max(start, since), now)
    too_often = (recent > ratio * max(expected, 1) + 1, float(recent))
    return {"missed": missed, "late": late, "too_often": too_often}


def add_run(runs: list[float], started: float, *, gap_s: float, keep_s: float) -> bool:
    """Record a task start in ``runs`` (sorted); True when it began a new run. Tasks within
    ``gap_s`` of a known run belong to it; runs older than ``keep_s`` before it are dropped."""
    for r in reversed(runs[-8:]):
        if abs(started - r) <= gap_s:
            return False
    i = len(runs)
    while i and runs[i - 1] > started:
        i -= 1
    runs.insert(i, started)
    cut = runs[-1] - keep_s
    while runs and runs[0] < cut:
        runs.pop(0)
    return True
