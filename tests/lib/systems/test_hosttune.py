"""Host tuning is planned from what the host has, written once to a drop-in, and undone, on a fake tree only.

Every test points ``root`` at tmp_path: the real /proc/sys and /etc are never read or written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ragperf.core.changes import Change, ChangeError, Journal, NotAllowed, RolledBack, apply, rollback
from ragperf.systems import hosttune
from ragperf.systems.hosttune import HostApplier, plan, read_current, render_dropin

STOCK = {"vm.swappiness": 60, "vm.dirty_ratio": 20, "vm.dirty_background_ratio": 10, "fs.file-max": 9223372036854775807}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fake /proc/sys with a stock kernel's values, and an empty /etc."""
    for key, value in STOCK.items():
        path = tmp_path / "proc" / "sys" / Path(*key.split("."))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    (tmp_path / "etc").mkdir()
    return tmp_path


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(hosttune.os, "geteuid", lambda: 0)


def sysctl(root: Path, key: str) -> str:
    return (root / "proc" / "sys" / Path(*key.split("."))).read_text()


def test_read_current_reads_the_fake_tree_and_this_process_limits(root):
    current = read_current(root)
    assert {k: current[k] for k in STOCK} == STOCK
    assert set(current["nofile"]) == {"soft", "hard"} and current["nofile"]["soft"] <= current["nofile"]["hard"]
    (root / "proc/sys/vm/swappiness").unlink()
    assert read_current(root)["vm.swappiness"] is None


def test_plan_from_stock_values(root):
    changes = {c.name: c for c in plan(read_current(root))}
    assert {k: (c.before, c.after) for k, c in changes.items() if not c.details.get("plan_only")} == {
        "vm.swappiness": (60, 10),
        "vm.dirty_ratio": (20, 15),
        "vm.dirty_background_ratio": (10, 5),
    }  # fs.file-max is far above 65536: never lowered, so no change
    assert all(c.kind == "host" and c.host for c in changes.values())
    nofile = changes["LimitNOFILE:postgresql.service"]
    assert nofile.details["plan_only"] is True and nofile.after == "LimitNOFILE=65536"
    assert nofile.details["path"] == "/etc/systemd/system/postgresql.service.d/90-ragperf-nofile.conf"
    assert "[Service]\nLimitNOFILE=65536\n" in nofile.details["text"] and "limits.conf" in nofile.reason


def test_plan_is_pure_raises_file_max_only_and_skips_what_is_equal():
    current = {"vm.swappiness": 10, "vm.dirty_ratio": 15, "vm.dirty_background_ratio": 5, "fs.file-max": 8192}
    changes = plan(current, unit=None)
    assert [(c.name, c.before, c.after) for c in changes] == [("fs.file-max", 8192, 65536)]
    assert plan({**current, "fs.file-max": 65536}, unit=None) == []
    assert plan({**current, "fs.file-max": 65536}, {"vm.swappiness": 1}, unit="pg.service")[0].after == 1
    assert plan({**current, "fs.file-max": 65536}, unit="pg")[0].name == "LimitNOFILE:pg"
    assert plan({**current, "vm.dirty_ratio": 0, "fs.file-max": 65536}, unit=None) == []  # dirty_bytes in use


def test_drop_in_is_sorted_commented_and_identical_on_every_render(root):
    changes = plan(read_current(root))
    text = render_dropin(changes)
    assert text == render_dropin(plan(read_current(root))) == render_dropin(list(reversed(changes)))
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert settings == ["vm.dirty_background_ratio = 5", "vm.dirty_ratio = 15", "vm.swappiness = 10"]
    assert "# vm.swappiness 60 → 10: swap out database memory only under real pressure" in text
    assert "LimitNOFILE" not in text


def test_apply_then_undo_restores_the_fake_files_and_removes_the_drop_in(root, as_root):
    changes = plan(read_current(root))
    applier = HostApplier(allowed=True, root=root)
    applier.apply(changes)
    dropin = root / "etc/sysctl.d/90-ragperf.conf"
    assert dropin.read_text() == render_dropin(changes)
    assert sysctl(root, "vm.swappiness") == "10\n" and sysctl(root, "vm.dirty_ratio") == "15\n"
    assert not (root / "etc/systemd").exists()  # the plan-only unit drop-in is never written

    mtime = dropin.stat().st_mtime_ns
    applier.apply(changes)  # same content: the file is not rewritten
    assert dropin.stat().st_mtime_ns == mtime

    applier.undo(changes)
    assert {k: int(sysctl(root, k)) for k in STOCK} == STOCK
    assert not dropin.exists()
    applier.undo(changes)  # idempotent
    assert not dropin.exists() and {k: int(sysctl(root, k)) for k in STOCK} == STOCK


def test_not_allowed_names_the_parameter_and_changes_nothing(root, as_root):
    changes = plan(read_current(root))
    with pytest.raises(NotAllowed, match="host_changes: true"):
        HostApplier(allowed=False, root=root).apply(changes)
    assert {k: int(sysctl(root, k)) for k in STOCK} == STOCK and not (root / "etc/sysctl.d").exists()
    HostApplier(allowed=False, root=root).undo(changes)  # nothing to undo: no error


def test_not_root_is_not_allowed_either(root, monkeypatch):
    monkeypatch.setattr(hosttune.os, "geteuid", lambda: 1000)
    with pytest.raises(NotAllowed, match="need root"):
        HostApplier(allowed=True, root=root).apply(plan(read_current(root)))


def test_plan_only_changes_alone_do_nothing_even_when_not_allowed(root):
    nofile = [c for c in plan(read_current(root)) if c.details.get("plan_only")]
    HostApplier(allowed=False, root=root).apply(nofile)
    HostApplier(allowed=False, root=root).undo(nofile)


def test_through_the_change_model_a_failure_rolls_back(root, as_root, tmp_path):
    changes = plan(read_current(root))
    bad = Change("host", "vm.no_such_knob", 1, 2, "a knob this kernel lacks", host=True)
    journal = Journal(tmp_path / "phase")
    applier = HostApplier(allowed=True, root=root)
    with pytest.raises(RolledBack, match="vm.no_such_knob"):
        apply([(applier, [*changes, bad])], journal)
    assert {k: int(sysctl(root, k)) for k in STOCK} == STOCK and not (root / "etc/sysctl.d/90-ragperf.conf").exists()
    apply([(applier, changes)], Journal(tmp_path / "ok"))
    assert rollback(Journal(tmp_path / "ok"), {"host": applier})
    assert {k: int(sysctl(root, k)) for k in STOCK} == STOCK


def test_bad_input_is_refused(root):
    with pytest.raises(ChangeError, match="only 'host' changes"):
        HostApplier(allowed=True, root=root).apply([Change("setting", "work_mem", "4MB", "8MB", "r")])
    with pytest.raises(ValueError, match="not a sysctl key"):
        hosttune.sysctl_path("../../etc/passwd", root)
    with pytest.raises(ValueError, match="systemd unit name"):
        plan(read_current(root), unit="../evil")
