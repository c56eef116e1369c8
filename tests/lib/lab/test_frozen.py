"""The frozen service's check: the real lab/legacy matches its manifest, and on a copy a changed, a missing and
an unrecorded file are each reported (the copy only; lab/legacy is never touched)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from ragperf.lab import frozen


def test_the_legacy_service_matches_its_manifest():
    assert frozen.differences() == []
    assert frozen.legacy_digest() == hashlib.sha256(frozen.MANIFEST.read_bytes()).hexdigest()


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    legacy = tmp_path / "legacy"
    shutil.copytree(frozen.LEGACY_DIR, legacy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(frozen, "LEGACY_DIR", legacy)
    monkeypatch.setattr(frozen, "MANIFEST", legacy / "MANIFEST.sha256")
    return legacy


def _a_recorded_file() -> str:
    return sorted(frozen.manifest())[0]


def test_the_copy_starts_identical(copy: Path):
    assert frozen.differences() == []
    assert set(frozen.checksums()) == set(frozen.manifest())
    assert "MANIFEST.sha256" not in frozen.checksums()  # the manifest does not record itself


def test_a_changed_file_is_reported_by_name(copy: Path):
    name = _a_recorded_file()
    with (copy / name).open("ab") as f:
        f.write(b"\n# tuned by hand\n")
    assert frozen.differences() == [f"{name}: changed"]


def test_a_missing_and_an_unrecorded_file_are_reported(copy: Path):
    name = _a_recorded_file()
    (copy / name).unlink()
    (copy / "fast_path.py").write_text("CACHE = {}\n")
    assert frozen.differences() == [f"{name}: missing", "fast_path.py: not in the manifest"]


def test_compiled_files_do_not_count(copy: Path):
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "app.cpython-312.pyc").write_bytes(b"\0")
    assert frozen.differences() == []


def test_a_rewritten_manifest_records_the_change_and_changes_the_digest(copy: Path):
    before = frozen.legacy_digest()
    name = _a_recorded_file()
    (copy / name).write_text("changed on purpose\n")
    frozen.write_manifest()
    assert frozen.differences() == []
    assert frozen.manifest()[name] == hashlib.sha256(b"changed on purpose\n").hexdigest()
    assert frozen.legacy_digest() != before
