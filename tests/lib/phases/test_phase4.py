"""Phase 4's own helpers, on numbers made up for them (the phase end to end is in tests/test_phases.py)."""

from __future__ import annotations

import pandas as pd

from ragperf.phases import phase4


def _curve(throughputs: dict[int, float]) -> phase4.Curve:
    rows = [{"pgbouncer": False, "instances": n, "users": 20, "throughput_rps": tp, "p95_s": 1.0}
            for n, tp in throughputs.items()]  # fmt: skip
    return phase4.Curve(pd.DataFrame(rows))


def test_the_curve_says_where_it_flattens():
    text = _curve({1: 10.0, 2: 19.0, 3: 20.0}).text()
    assert "1: 10.0/s (×1.00), 2: 19.0/s (×1.90), 3: 20.0/s (×2.00)" in text
    assert "it flattens from 3 instances on" in text


def test_a_curve_whose_first_count_answered_nothing_is_still_told():
    text = _curve({1: 0.0, 2: 8.0}).text()
    assert "1: 0.0/s, 2: 8.0/s;" in text
