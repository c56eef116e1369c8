import subprocess

import pytest

from ragperf.lab import pginstall


def test_embedded_postgres_has_pgvector_and_contrib():
    versions = pginstall.installed()
    assert versions is not None, "make setup provisions the embedded PostgreSQL"
    assert versions["postgresql"].startswith("18.")
    assert versions["pgvector"] == pginstall.PGVECTOR_VERSION
    root = pginstall.install_dir()
    assert (root / "lib" / "vector.so").exists()
    assert (root / "lib" / "pg_stat_statements.so").exists()
    out = subprocess.run([pginstall.bin_path("postgres"), "--version"], capture_output=True, text=True)
    assert versions["postgresql"] in out.stdout


def test_missing_install_says_how_to_fix(tmp_path):
    with pytest.raises(pginstall.InstallError, match="make setup"):
        pginstall.bin_path("postgres", home=tmp_path)
