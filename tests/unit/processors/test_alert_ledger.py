"""The budgets' cost ledger across a restart: adopted totals plus a replay of groups it
already counts equal the totals before (nothing counted twice), and later groups add."""

from __future__ import annotations

import pytest

from fleetpulse.processors.alerts.windows import US, Ledger

T0 = 1_800_000_000 * US


def test_adopted_totals_do_not_count_the_replayed_groups_again() -> None:
    before = Ledger()
    rows = [("agent=a", T0 + i * US, 100 + i, (i % 2, i)) for i in range(20)]
    for sid, ts, micros, source in rows:
        before.add(sid, ts, micros, source)
    record = before.record("agent=a", T0)

    after = Ledger()
    after.adopt("agent=a", record, T0)
    for sid, ts, micros, source in rows:  # the restart's replay reads them all again
        after.add(sid, ts, micros, source)
    assert after.get("agent=a", "day", T0) == before.get("agent=a", "day", T0)
    assert after.get("agent=a", "month", T0) == before.get("agent=a", "month", T0)
    after.add("agent=a", T0 + 30 * US, 7, (0, 20))  # a group after the saved offsets
    assert after.get("agent=a", "day", T0) == before.get("agent=a", "day", T0) + 7


def test_totals_of_a_past_period_are_not_adopted() -> None:
    old = Ledger()
    old.add("team=red", T0, 500, (0, 1))
    later = T0 + 40 * 86_400 * US  # another month
    fresh = Ledger()
    fresh.adopt("team=red", old.record("team=red", T0), later)
    assert fresh.get("team=red", "month", later) == 0


def test_a_malformed_ledger_record_is_refused() -> None:
    with pytest.raises(ValueError, match="not a ledger record"):
        Ledger().adopt("agent=a", {"spent": {"day": "x"}}, T0)
