"""Phase 1's helpers, without a server: the app's filter, ef_search, the impact table, who may change the host.

The role settings are chosen on a real database in test_langchain_deployment.py."""

from __future__ import annotations

import ast
import unicodedata
from pathlib import Path

import pandas as pd

from ragperf.core import criteria
from ragperf.core.params import Params
from ragperf.core.target import Target
from ragperf.phases import phase, phase1

LEGACY_APP = Path(__file__).resolve().parents[3] / "lab" / "legacy" / "app.py"


def test_the_apps_filter_words_and_result_sizes_are_copied_verbatim():
    tree = ast.parse(LEGACY_APP.read_text(encoding="utf-8"))
    constants = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                 and node.targets[0].id in ("DOC_TYPES", "TOP_K")}  # fmt: skip
    assert constants == {"DOC_TYPES": phase1.LEGACY_DOC_TYPES, "TOP_K": phase1.LEGACY_TOP_K}


def test_the_filter_is_found_as_the_app_finds_it():
    assert phase1.legacy_filter("Điều 5 Luật Đấu thầu quy định gì?") == "luat"
    assert phase1.legacy_filter(unicodedata.normalize("NFD", "Nghị định 24/2024 nói gì?")) == "nghi_dinh"
    assert phase1.legacy_filter("Gói thầu là gì?") is None


def recall_frame() -> pd.DataFrame:
    rows = [(10, "off", 0.80, 1.0, 10.0), (40, "off", 0.96, 2.0, 10.0), (100, "off", 0.99, 5.0, 10.0),
            (10, "strict_order", 0.85, 3.0, 10.0), (40, "strict_order", 0.97, 4.0, 10.0)]  # fmt: skip
    return pd.DataFrame(rows, columns=["ef_search", "iterative_scan", "recall", "p95_ms", "returned_mean"])


def test_the_smallest_ef_search_reaching_the_target_is_chosen():
    assert phase1.choose_ef_search(recall_frame(), 0.95) == 40
    assert phase1.choose_ef_search(recall_frame(), 0.5) == 10
    assert phase1.choose_ef_search(recall_frame(), 0.999) == 100  # none reaches it: the largest measured


def test_iterative_scans_only_when_the_filter_starves_the_result():
    full = recall_frame()
    assert phase1.choose_iterative_scan(full, 40, 10) is None
    starved = full.copy()
    starved.loc[(starved["iterative_scan"] == "off"), "returned_mean"] = 1.7
    assert phase1.choose_iterative_scan(starved, 40, 10) == "strict_order"


def timings(fast: float, quality: float) -> dict:
    return {"fast": {"median_ms": fast, "index": None, "rows": 4.0, "k": 4},
            "quality": {"median_ms": quality, "index": "ragperf_embedding_hnsw", "rows": 8.0, "k": 8}}  # fmt: skip


def test_search_stages_are_compared_with_the_first():
    table = phase1.searches_table({"before": timings(20.0, 10.0), "after": timings(1.0, 4.0)})
    assert list(table["change_pct"]) == [0.0, -95.0, 0.0, -60.0]
    assert table.iloc[0]["index"] == "none (sequential scan)"


def test_expected_impact_says_met_or_not_for_each_line_of_the_plan():
    final = {"response_time_10_users": {"value": 4.2, "unit": "s"}, "success_rate_10_users": {"value": 92.0},
             "max_concurrent_users": {"value": 25}}  # fmt: skip
    table = phase1.expected_impact(final, {"before": timings(20.0, 10.0), "after": timings(1.0, 4.0)},
                                   criteria.phase_criteria("phase1"))  # fmt: skip
    assert list(table["met"]) == ["met", "met", "met", "met", "not met"]
    assert "10.0 → 4.0 ms (-60 %)" in table.iloc[4]["measured"]
    starved = timings(1.0, 0.5)
    starved["quality"]["rows"] = 0.02
    table = phase1.expected_impact(final, {"before": timings(20.0, 10.0), "after": starved},
                                   criteria.phase_criteria("phase1"))  # fmt: skip
    assert table.iloc[4]["met"] == "not met" and "but returns 0.02 of 8 rows" in table.iloc[4]["measured"]


def test_a_faster_search_that_hnsw_does_not_serve_is_not_counted_as_met():
    final = {"response_time_10_users": {"value": 1.0}, "success_rate_10_users": {"value": 100.0}}
    after = timings(1.0, 0.5)
    after["fast"].update(index="ragperf_embedding_collection_id", method="btree")
    table = phase1.expected_impact(final, {"before": timings(20.0, 10.0), "after": after},
                                   criteria.phase_criteria("phase1"))  # fmt: skip
    vector = table.iloc[3]
    assert vector["met"] == "not met" and "HNSW does not serve it (ragperf_embedding_collection_id does)" in (
        vector["measured"])  # fmt: skip


def _ctx(kind: str, mode: str | None, allow: bool) -> phase.PhaseContext:
    p = Params.model_validate({"changes": {"mode": mode, "allow_host_changes": allow}})
    return phase.PhaseContext("phase1", p, None, Path("."), Target(kind, "http://h"))  # type: ignore[arg-type]


def test_the_host_is_changed_only_on_a_deployment_when_applying_and_allowed():
    assert phase1.host_changes_allowed(_ctx("deployment", "apply", True))
    assert not phase1.host_changes_allowed(_ctx("lab", "apply", True))  # the lab shares this machine
    assert not phase1.host_changes_allowed(_ctx("deployment", "plan", True))
    assert not phase1.host_changes_allowed(_ctx("deployment", "apply", False))
