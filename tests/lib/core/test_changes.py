"""The change model: journal before apply, undo everything on a failure, roll back from the journal alone."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ragperf.core import changes
from ragperf.core.changes import Change, ChangeError, Journal, RolledBack


class Store:
    """A target whose state is a dict: what appliers change, and what the tests compare."""

    def __init__(self) -> None:
        self.state: dict[str, object] = {"a": 1, "b": 2, "c": 3}


class DictApplier:
    """Sets keys of a :class:`Store`; fails on the change named ``fail_on`` after making the earlier ones."""

    def __init__(self, kind: str, store: Store, fail_on: str | None = None) -> None:
        self.kind, self.store, self.fail_on = kind, store, fail_on
        self.calls: list[str] = []

    def apply(self, group: Sequence[Change]) -> None:
        for change in group:
            if change.name == self.fail_on:
                raise RuntimeError(f"{change.name} refused")
            self.calls.append(f"apply {change.name}")
            self.store.state[change.name] = change.after

    def undo(self, group: Sequence[Change]) -> None:
        for change in group:  # idempotent, and fine for a change never made
            self.calls.append(f"undo {change.name}")
            self.store.state[change.name] = change.before


def change(kind: str, name: str, before: object, after: object) -> Change:
    return Change(kind, name, before, after, reason=f"set {name}")


@pytest.fixture
def store() -> Store:
    return Store()


def test_changes_round_trip_through_json():
    original = Change("setting", "work_mem", "4096", "8MB", "why", restart=True, details={"unit": "kB"})
    assert Change.from_json(original.to_json()) == original
    assert original.key == "setting:work_mem"


def test_apply_journals_each_change_before_making_it(store, tmp_path):
    settings, indexes = DictApplier("setting", store), DictApplier("index", store)
    journal = Journal(tmp_path)
    plan = [change("setting", "a", 1, 10), change("setting", "b", 2, 20), change("index", "c", 3, 30)]
    applied = changes.apply(changes.groups(plan, {"setting": settings, "index": indexes}), journal)
    assert applied == plan
    assert store.state == {"a": 10, "b": 20, "c": 30}
    assert [e["event"] for e in journal.entries()] == ["applying", "applying", "applied", "applied", "applying",
                                                       "applied"]  # fmt: skip
    assert [c.key for c in journal.outstanding()] == ["setting:a", "setting:b", "index:c"]


def test_a_failure_mid_phase_leaves_nothing_applied_and_says_so(store, tmp_path):
    settings, indexes = DictApplier("setting", store), DictApplier("index", store, fail_on="c")
    journal = Journal(tmp_path)
    plan = [change("setting", "a", 1, 10), change("setting", "b", 2, 20), change("index", "c", 3, 30)]
    with pytest.raises(RolledBack) as caught:
        changes.apply(changes.groups(plan, {"setting": settings, "index": indexes}), journal)
    message = str(caught.value)
    assert "index:c failed (RuntimeError: c refused)" in message
    assert "rolled back 3 change(s)" in message and "setting:a" in message
    assert store.state == {"a": 1, "b": 2, "c": 3}
    assert settings.calls == ["apply a", "apply b", "undo b", "undo a"]  # newest first
    assert journal.outstanding() == []


def test_rollback_undoes_what_the_journal_shows_newest_first(store, tmp_path):
    journal = Journal(tmp_path)
    plan = [change("setting", "a", 1, 10), change("index", "c", 3, 30)]
    first = {"setting": DictApplier("setting", store), "index": DictApplier("index", store)}
    changes.apply(changes.groups(plan, first), journal)
    # Later, in another process: only the journal and fresh appliers.
    settings, indexes = DictApplier("setting", store), DictApplier("index", store)
    undone = changes.rollback(Journal(tmp_path), {"setting": settings, "index": indexes})
    assert undone == ["index:c", "setting:a"]
    assert store.state == {"a": 1, "b": 2, "c": 3}
    assert changes.rollback(Journal(tmp_path), {"setting": settings, "index": indexes}) == []  # nothing left


def test_a_thing_changed_several_times_is_rolled_back_to_where_the_phase_found_it(store, tmp_path):
    journal, applier = Journal(tmp_path), DictApplier("setting", store)
    for before, after in ((1, 10), (10, 20), (20, 30)):  # the balancer reloaded for each instance count
        changes.apply([(applier, [change("setting", "a", before, after)])], journal)
    changes.apply([(applier, [change("setting", "b", 2, 21)])], journal)
    changes.undo([(applier, [change("setting", "b", 2, 21)])], journal)  # undone within the phase: starts afresh
    changes.apply([(applier, [change("setting", "b", 2, 22)])], journal)
    (a, b) = journal.outstanding()
    assert (a.key, a.before, a.after) == ("setting:a", 1, 30) and (b.before, b.after) == (2, 22)
    undone = changes.rollback(Journal(tmp_path), {"setting": DictApplier("setting", store)})
    assert sorted(undone) == ["setting:a", "setting:b"]
    assert store.state == {"a": 1, "b": 2, "c": 3}


def test_rollback_without_an_applier_for_a_kind_names_it(store, tmp_path):
    journal = Journal(tmp_path)
    changes.apply([(DictApplier("host", store), [change("host", "a", 1, 10)])], journal)
    with pytest.raises(ChangeError, match="no applier given for change kind.s. host"):
        changes.rollback(journal, {"setting": DictApplier("setting", store)})
    assert store.state["a"] == 10


def test_an_interrupted_apply_is_still_outstanding(store, tmp_path):
    """A process killed inside apply leaves 'applying' as the last event: rollback must still undo it."""
    journal = Journal(tmp_path)
    journal.write("applying", change("setting", "a", 1, 10))
    store.state["a"] = 10
    assert changes.rollback(journal, {"setting": DictApplier("setting", store)}) == ["setting:a"]
    assert store.state["a"] == 1


def test_plan_table_has_one_row_per_change():
    table = changes.plan_table([change("setting", "a", 1, 10), Change("host", "vm.swappiness", 60, 10, "w", host=True)])
    assert list(table["change"]) == ["setting:a", "host:vm.swappiness"]
    assert list(table["host"]) == [False, True]


def test_a_failing_undo_says_the_journal_keeps_what_is_left(store, tmp_path):
    class Broken(DictApplier):
        def undo(self, group: Sequence[Change]) -> None:
            raise OSError("server gone")

    journal = Journal(tmp_path)
    plan = [change("setting", "a", 1, 10), change("index", "c", 3, 30)]
    appliers = {"setting": Broken("setting", store), "index": DictApplier("index", store, fail_on="c")}
    with pytest.raises(ChangeError, match="undoing the phase failed too .OSError: server gone.") as caught:
        changes.apply(changes.groups(plan, appliers), journal)
    assert not isinstance(caught.value, RolledBack) and "ragperf rollback" in str(caught.value)
    assert [c.key for c in journal.outstanding()] == ["setting:a"]  # the index group was undone first
