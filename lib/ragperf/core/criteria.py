"""The users' success criteria: the service-level objective a load step must hold, and what each phase must reach."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slo:
    """What a load step must hold: p95 below ``p95_s`` and success rate at least ``success_rate_pct``.

    ``min_users`` is a capacity goal (the ladder must hold up to at least that many users); it is
    checked against the ladder verdict, not per step.
    """

    p95_s: float
    success_rate_pct: float
    min_users: int = 0


PHASE_CRITERIA: dict[str, Slo] = {
    "phase1": Slo(p95_s=5.0, success_rate_pct=70.0, min_users=25),
    "phase2": Slo(p95_s=3.0, success_rate_pct=85.0, min_users=40),
    "phase3": Slo(p95_s=2.0, success_rate_pct=90.0, min_users=60),
    "phase4": Slo(p95_s=1.5, success_rate_pct=95.0, min_users=100),
}
CRITERIA_USERS = 10  # the plan's "9.6 s" and "37 %" it wants to improve are its 10-user numbers


def phase_criteria(phase: str) -> Slo:
    """The users' success criteria of ``phase``; KeyError naming the known phases."""
    try:
        return PHASE_CRITERIA[phase]
    except KeyError:
        raise KeyError(f"no success criteria for phase {phase!r}: known are {', '.join(PHASE_CRITERIA)}") from None
