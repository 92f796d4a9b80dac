"""One definition of scope keys and outcome classes, shared by the windows and the alerts."""

from __future__ import annotations

import pytest

from fleetpulse.contract.semantics import FAILED_OUTCOMES, OUTCOMES, parse_scope_id, scope_id
from fleetpulse.processors.windows.engine import scope_id as engine_scope_id


@pytest.mark.parametrize(
    "dims",
    [
        {"agent_id": "triage"},
        {"agent_id": "a|b", "integration": "crm=eu"},
        {"agent_id": "100%", "agent_version": "v=2|x"},
        {"team": "support", "model": ""},
    ],
)
def test_scope_ids_round_trip_whatever_the_values(dims):
    sid = scope_id(dims)
    assert sid.count("|") == len(dims) - 1
    assert parse_scope_id(sid) == dims


def test_the_windows_and_the_alerts_write_the_same_scope_id():
    dims = {"agent_id": "a|b", "integration": "x"}
    assert engine_scope_id(("agent_integration", tuple(dims.items()))) == scope_id(dims)


def test_a_scope_id_with_an_unknown_dimension_is_refused_with_the_expected_form():
    with pytest.raises(ValueError, match=r"expected e\.g\. agent=triage"):
        parse_scope_id("colour=red")


def test_failed_outcomes_are_outcomes():
    assert set(OUTCOMES) > FAILED_OUTCOMES
