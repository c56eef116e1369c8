"""The legacy service is frozen: no phase, and no test, may change it."""

from ragperf.lab import frozen


def test_legacy_files_match_the_manifest():
    assert frozen.differences() == []


def test_manifest_covers_the_app():
    assert "app.py" in frozen.manifest()
    assert "__init__.py" in frozen.manifest()


def test_a_changed_file_is_detected(tmp_path, monkeypatch):
    copy = tmp_path / "legacy"
    copy.mkdir()
    for path in frozen.legacy_files() + [frozen.MANIFEST]:
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "app.py").write_text((copy / "app.py").read_text() + "\n# tuned\n")
    monkeypatch.setattr(frozen, "LEGACY_DIR", copy)
    monkeypatch.setattr(frozen, "MANIFEST", copy / "MANIFEST.sha256")
    assert frozen.differences() == ["app.py: changed"]
