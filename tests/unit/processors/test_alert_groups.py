"""The alert rules' groups travel from the ingest pass to the alert stage as JSON records: split
into records of bounded size, read back unchanged, and a record that is not one is refused."""

from __future__ import annotations

import pytest

from fleetpulse.processors.ingest.cells import AlertGroups


def groups(n: int) -> AlertGroups:
    return AlertGroups(
        tasks=[
            ("agent", f"a{i}", "", 100 + i, 3, 1, 500, 0, [10, 12], [2, 1], ["crm"], [1], [], [])
            for i in range(n)
        ],
        calls=[
            ("a1", "crm", "support", "refund", "write", i % 2 == 0, 100, 1, 1, 0, 0, 1)
            for i in range(n)
        ],
        runs=[("a1", [1_700_000_000_000_000, 1_700_000_100_000_000])],
        versions=[("a1", "3"), ("a1", "4")],
        events=n,
    )


def test_records_are_bounded_and_read_back_unchanged() -> None:
    g = groups(2500)
    records = g.records(max_rows=1000)
    assert len(records) == 5
    back = [AlertGroups.from_record(r) for r in records]
    assert [t for b in back for t in b.tasks] == g.tasks
    assert [c for b in back for c in b.calls] == g.calls
    assert back[-1].runs == g.runs and back[-1].versions == g.versions
    assert sum(b.events for b in back) == 2500


def test_empty_groups_still_make_one_record() -> None:
    [record] = AlertGroups(versions=[("a", "1")], events=1).records()
    assert AlertGroups.from_record(record).versions == [("a", "1")]


@pytest.mark.parametrize("value", [b"", b"{}", b"[1]", b'{"tasks": 3, "calls": []}'])
def test_a_record_that_is_not_one_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match="not an alert-cells record"):
        AlertGroups.from_record(value)
