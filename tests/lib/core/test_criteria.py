"""The users' success criteria: the plan's numbers for each of its four phases, and an unknown phase refused."""

from __future__ import annotations

import dataclasses

import pytest

from ragperf.core.criteria import CRITERIA_USERS, PHASE_CRITERIA, Slo, phase_criteria


@pytest.mark.parametrize(
    ("phase", "p95_s", "success_rate_pct", "min_users"),
    [("phase1", 5.0, 70.0, 25), ("phase2", 3.0, 85.0, 40), ("phase3", 2.0, 90.0, 60), ("phase4", 1.5, 95.0, 100)],
)
def test_each_phase_has_the_plans_numbers(phase: str, p95_s: float, success_rate_pct: float, min_users: int):
    assert phase_criteria(phase) == Slo(p95_s=p95_s, success_rate_pct=success_rate_pct, min_users=min_users)


def test_the_plan_has_four_phases_each_stricter_than_the_one_before():
    slos = [PHASE_CRITERIA[p] for p in ("phase1", "phase2", "phase3", "phase4")]
    assert list(PHASE_CRITERIA) == ["phase1", "phase2", "phase3", "phase4"]
    for before, after in zip(slos, slos[1:], strict=False):
        assert after.p95_s < before.p95_s
        assert after.success_rate_pct > before.success_rate_pct
        assert after.min_users > before.min_users


def test_the_criteria_are_judged_at_ten_users():
    assert CRITERIA_USERS == 10


def test_an_unknown_phase_names_itself_and_the_known_phases():
    with pytest.raises(KeyError) as err:
        phase_criteria("phase5")
    message = err.value.args[0]
    assert "'phase5'" in message and "known are phase1, phase2, phase3, phase4" in message


def test_criteria_cannot_be_changed_by_accident():
    with pytest.raises(dataclasses.FrozenInstanceError):
        phase_criteria("phase1").p95_s = 60.0  # type: ignore[misc]
    assert Slo(p95_s=1.0, success_rate_pct=50.0).min_users == 0
