"""Per-role settings planned from what the role has: only what differs, undone to what it was (pure part)."""

from __future__ import annotations

from ragperf.core.changes import Change
from ragperf.systems.postgres.roles import ROLE_KIND, RoleSettingApplier, plan_role_settings

REASON = "the app gets ef_search without a code change"


def test_a_new_setting_is_planned_from_nothing():
    (change,) = plan_role_settings("rag_app", {}, {"hnsw.ef_search": 80}, REASON)
    assert change == Change(
        ROLE_KIND,
        "rag_app.hnsw.ef_search",
        None,
        "80",
        REASON,
        details={"role": "rag_app", "setting": "hnsw.ef_search"},
    )
    assert change.key == "role_setting:rag_app.hnsw.ef_search"


def test_a_setting_the_role_already_has_is_not_planned_again():
    assert plan_role_settings("rag_app", {"hnsw.ef_search": "80"}, {"hnsw.ef_search": 80}, REASON) == []


def test_a_changed_setting_keeps_what_it_replaces_for_the_undo():
    current = {"hnsw.ef_search": "40", "work_mem": "64MB"}
    desired = {"hnsw.ef_search": 80, "work_mem": "64MB", "jit": "off"}
    changes = plan_role_settings("rag_app", current, desired, REASON)
    assert [(c.name, c.before, c.after) for c in changes] == [
        ("rag_app.hnsw.ef_search", "40", "80"),
        ("rag_app.jit", None, "off"),  # undone by RESET
    ]


def test_the_applier_makes_role_setting_changes():
    assert RoleSettingApplier.kind == ROLE_KIND == "role_setting"
