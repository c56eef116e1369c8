"""The legacy service is frozen: its files are checked against lab/legacy/MANIFEST.sha256.

No phase may change the application's code; every run records ``legacy_digest()`` and the
test suite fails if a file differs from the manifest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ragperf.core.params import REPO_ROOT

LEGACY_DIR = REPO_ROOT / "lab" / "legacy"
MANIFEST = LEGACY_DIR / "MANIFEST.sha256"


def legacy_files() -> list[Path]:
    """The files that make up the legacy service (everything in lab/legacy but the manifest)."""
    return sorted(p for p in LEGACY_DIR.rglob("*") if p.is_file() and p != MANIFEST and "__pycache__" not in p.parts)


def checksums() -> dict[str, str]:
    """sha256 of every legacy file, by path relative to lab/legacy."""
    return {str(p.relative_to(LEGACY_DIR)): hashlib.sha256(p.read_bytes()).hexdigest() for p in legacy_files()}


def manifest() -> dict[str, str]:
    """The recorded checksums, as written in MANIFEST.sha256 (sha256sum's format)."""
    entries = {}
    for line in MANIFEST.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            entries[name] = digest
    return entries


def differences() -> list[str]:
    """What differs from the manifest, in words; empty when the legacy service is untouched."""
    actual, recorded = checksums(), manifest()
    problems = [f"{name}: changed" for name in recorded if name in actual and actual[name] != recorded[name]]
    problems += [f"{name}: missing" for name in recorded if name not in actual]
    problems += [f"{name}: not in the manifest" for name in actual if name not in recorded]
    return problems


def legacy_digest() -> str:
    """One digest over the manifest's content, recorded in every run's manifest.json."""
    return hashlib.sha256(MANIFEST.read_bytes()).hexdigest()


def write_manifest() -> None:
    """Record the current legacy files. Only for a deliberate, reviewed change of the stand-in."""
    MANIFEST.write_text("".join(f"{digest}  {name}\n" for name, digest in checksums().items()))
