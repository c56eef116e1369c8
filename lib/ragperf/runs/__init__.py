"""The results store: one directory per run under outputs/, never overwritten, with a manifest.

A run id is the UTC start time, the git short revision (``-dirty`` when the work tree has
uncommitted or untracked changes, ``nogit`` outside a checkout) and the profile, e.g.
``20261128T134500Z-0a80853-smoke``. Each phase adds ``<run>/<phase>.ipynb`` (the executed
notebook), ``<run>/<phase>/`` (its records) and an entry in ``<run>/manifest.json`` that says
what ran, on what, with which parameters (secrets redacted) and how to run it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import yaml
from pydantic import SecretStr

from ragperf.core import procs
from ragperf.core.params import REPO_ROOT
from ragperf.core.redact import (
    MIN_SECRET_LENGTH,
    SecretLeakError,
    embedded_passwords,
    find_secrets,
    known_secrets,
    redact,
    scrub_text,
)
from ragperf.lab import frozen
from ragperf.measure import compare
from ragperf.measure.metrics import read_metrics_json
from ragperf.systems import hosttune
from ragperf.systems.postgres import pgsettings

log = logging.getLogger(__name__)

OUTPUTS_ENV = "RAGPERF_OUTPUTS"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")  # profiles and phases: no "-", which separates id parts
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MAX_SUFFIX = 1000
_COLUMNS = ("unit", "source", "pending_restart")


class RunError(RuntimeError):
    """A run directory cannot be used as asked."""


class RunExistsError(RunError):
    """A run directory with that id exists already; runs are never overwritten."""


class RunNotFoundError(RunError):
    """No run directory with that id."""


class NotARunError(RunError):
    """A directory that is not a ragperf run, or a run outside the outputs directory."""


class PhaseExistsError(RunError):
    """The phase was already executed in this run; a new run is needed."""


def outputs_dir() -> Path:
    """Where runs live: ``$RAGPERF_OUTPUTS``, else ``outputs/`` at the repository root."""
    env = os.environ.get(OUTPUTS_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "outputs"


def phase_sort_key(phase: str) -> list[Any]:
    """Natural order: phase2 before phase10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", phase)]


def _check_name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise RunError(f"bad {what} name {value!r}: use letters, digits, '_' and '.', starting with a letter")
    return value


@dataclass(frozen=True)
class Run:
    """A run directory."""

    id: str
    path: Path

    @property
    def manifest_path(self) -> Path:
        """``<run>/manifest.json``."""
        return self.path / "manifest.json"

    def notebook_path(self, phase: str) -> Path:
        """Where the phase's executed notebook goes: ``<run>/<phase>.ipynb``."""
        return self.path / f"{_check_name(phase, 'phase')}.ipynb"

    def phase_dir(self, phase: str) -> Path:
        """``<run>/<phase>/``, created; refused when the phase already ran in this run."""
        done = [p for p in (self.notebook_path(phase), self.path / phase / "metrics.json") if p.exists()]
        if done:
            names = ", ".join(str(p.relative_to(self.path)) for p in done)
            raise PhaseExistsError(f"run {self.id} already has {phase} ({names}): start a new run instead")
        directory = self.path / phase
        directory.mkdir(exist_ok=True)
        return directory

    def phases(self) -> list[str]:
        """The phases present (a notebook or a phase directory), in phase order."""
        names = {p.stem for p in self.path.glob("*.ipynb")}
        names |= {p.name for p in self.path.iterdir() if p.is_dir()}
        return sorted((n for n in names if NAME.match(n)), key=phase_sort_key)

    def recorded_params(self, phase: str) -> dict[str, Any]:
        """The parameters ``phase`` ran with, as its ``params.yaml`` recorded them (secrets redacted), without
        the target's file name; RunError when the phase recorded none."""
        path = self.path / _check_name(phase, "phase") / "params.yaml"
        if not path.exists():
            raise RunError(f"run {self.id} has no {phase}/params.yaml: was {phase} run there?")
        recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        recorded.pop("target_name", None)
        return recorded

    def manifest(self) -> dict[str, Any]:
        """The manifest's content; empty when none was written."""
        return json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {}


def _utc_now() -> datetime:
    return datetime.now(UTC)


def new_run(profile: str, run_id: str | None = None) -> Run:
    """Create a new run directory; a generated id that exists gets a ``-2``, ``-3``... suffix.

    Raises:
        RunExistsError: an explicit ``run_id`` that exists already.
    """
    _check_name(profile, "profile")
    root = outputs_dir()
    root.mkdir(parents=True, exist_ok=True)
    now, git = _utc_now(), git_revision()
    if run_id is not None:
        if not _RUN_ID.match(run_id):
            raise RunError(f"bad run id {run_id!r}: use letters, digits, '_', '.' and '-'")
        try:
            os.mkdir(root / run_id)
        except FileExistsError:
            raise RunExistsError(f"run {run_id} exists already in {root}; runs are never overwritten") from None
    else:
        run_id = make_unique(root, f"{now.strftime(TIMESTAMP_FORMAT)}-{git['short']}-{profile}")
    run = Run(run_id, root / run_id)
    skeleton = {
        "run_id": run_id,
        "profile": profile,
        "created": now.isoformat(timespec="seconds"),
        "git": git,
        "phases": {},
    }
    procs.write_atomic(run.manifest_path, _dump(skeleton))
    log.info("new run %s", run.path)
    return run


def make_unique(root: Path, base: str) -> str:
    """Create ``root/base`` (``base-2``, ``base-3``... when taken) and return the name made."""
    for n in range(1, _MAX_SUFFIX):
        candidate = base if n == 1 else f"{base}-{n}"
        try:
            os.mkdir(root / candidate)
        except FileExistsError:
            continue
        return candidate
    raise RunError(f"{_MAX_SUFFIX} runs named {base} exist in {root}")


def open_run(run_id: str | Path) -> Run:
    """An existing run, by id (under ``outputs_dir()``) or by path (a Path, or a string with a '/').

    Only a run is opened: a directory of ``outputs_dir()`` with a manifest that names its run id.
    A run elsewhere is refused, so that nothing is written outside the outputs directory unless
    RAGPERF_OUTPUTS says so.

    Raises:
        RunNotFoundError: no such directory.
        NotARunError: the directory is not a run, or not in ``outputs_dir()``.
    """
    root = outputs_dir()
    path = Path(run_id) if isinstance(run_id, Path) or "/" in run_id else root / run_id
    if not path.is_dir():
        raise RunNotFoundError(f"no run {run_id} (looked for {path}){_newest_runs()}")
    resolved = path.resolve()
    if resolved.parent != root.resolve():
        raise NotARunError(f"{resolved} is not in the outputs directory {root}, and runs are written only there: "
                           f"to use runs in {resolved.parent}, set {OUTPUTS_ENV}={resolved.parent}")  # fmt: skip
    if problem := _not_a_run(resolved):
        raise NotARunError(f"{resolved} is not a ragperf run ({problem}): a run is a directory that `ragperf run` "
                           f"made in {root}, with a manifest.json that names its run_id{_newest_runs()}")  # fmt: skip
    return Run(resolved.name, resolved)


def _not_a_run(path: Path) -> str | None:
    """Why ``path`` is not a run directory, or None when it is one."""
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return "it has no manifest.json"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"its manifest.json cannot be read as JSON: {exc}"
    if not isinstance(data, dict):
        return "its manifest.json is not a JSON object"
    if not isinstance(data.get("run_id"), str) or not data["run_id"]:
        return "its manifest.json has no run_id"
    return None


def _newest_runs(count: int = 5) -> str:
    """``; the newest runs are ...`` (or that there is none yet), to end an error message with."""
    found = list_runs()
    if not found:
        return f"; there is no run in {outputs_dir()} yet"
    more = f" (and {len(found) - count} older)" if len(found) > count else ""
    return f"; the newest runs are {', '.join(found[:count])}{more}"


def list_runs() -> list[str]:
    """The run ids in ``outputs_dir()``, newest first; directories that are not runs are left out."""
    root = outputs_dir()
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _not_a_run(p) is None]
    return [p.name for p in sorted(runs, key=_age_key, reverse=True)]


def _age_key(path: Path) -> tuple[str, int]:
    match = re.match(r"^(\d{8}T\d{6}Z)-.*?(?:-(\d+))?$", path.name)
    if match:
        return match[1], int(match[2] or 1)
    created = Run(path.name, path).manifest().get("created") if (path / "manifest.json").exists() else None
    when = datetime.fromisoformat(created) if created else datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return when.strftime(TIMESTAMP_FORMAT), 1


def git_revision(directory: Path | None = None) -> dict[str, Any]:
    """The checkout's revision: full, short (``nogit`` outside git) and whether the tree is dirty."""
    directory = directory or REPO_ROOT
    full = _git(directory, "rev-parse", "HEAD")
    if full is None:
        return {"revision": None, "short": "nogit", "dirty": None}
    short = _git(directory, "rev-parse", "--short=7", "HEAD") or full[:7]
    dirty = bool(_git(directory, "status", "--porcelain"))
    return {"revision": full, "short": short + ("-dirty" if dirty else ""), "dirty": dirty}


def _git(directory: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("git unavailable: %s", exc)
        return None
    if out.returncode != 0:
        log.info("git %s in %s: %s", args[0], directory, out.stderr.strip().splitlines()[:1])
        return None
    return out.stdout.strip()


def write_manifest(
    run: Run,
    params: Mapping[str, Any],
    *,
    phase: str,
    extra: Mapping[str, Any] | None = None,
    conninfo: str | None = None,
    password: SecretStr | str | None = None,
) -> Path:
    """Record the phase in ``<run>/manifest.json`` (merged with earlier phases) and its params.yaml.

    Args:
        run: the run.
        params: the phase's parameters; secrets are redacted before anything is written.
        phase: the phase name, e.g. ``phase0``.
        extra: server versions, e.g. ``{"postgresql": "18.4", "pgvector": "0.8.5"}``.
        conninfo: a DSN to snapshot pg_settings from; it may hold a password, which is never written.
        password: the DSN's password, if not inside it.

    Raises:
        SecretLeakError: a known secret would still be written (e.g. under a key not named as secret).
    """
    phase_path = run.path / _check_name(phase, "phase")
    phase_path.mkdir(exist_ok=True)
    safe_params = json.loads(_dump(redact(params)))
    entry: dict[str, Any] = {
        "recorded": _utc_now().isoformat(timespec="seconds"),
        "command": shlex.join(redact(list(sys.argv))),
        "git": git_revision(),
        "params": safe_params,
        "params_file": f"{phase}/params.yaml",
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": installed_packages(),
        "servers": redact(dict(extra or {})),
        "pg_settings": _snapshot_or_error(conninfo, password),
        "host": hosttune.machine_facts(run.path),
        "legacy": legacy_status(),
    }
    secret = password.get_secret_value() if isinstance(password, SecretStr) else password
    given = [s for s in [*embedded_passwords(conninfo or ""), secret] if s and len(s) >= MIN_SECRET_LENGTH]
    secrets = known_secrets() + given
    params_yaml = yaml.safe_dump(safe_params, sort_keys=False)
    with _locked(run):
        manifest = run.manifest() or {
            "run_id": run.id,
            "profile": safe_params.get("profile"),
            "created": _utc_now().isoformat(timespec="seconds"),
            "git": entry["git"],
        }
        entry["reproduce"] = _reproduce(manifest.get("profile"), phase, safe_params, phase_path / "params.yaml")
        manifest.setdefault("phases", {})[phase] = entry
        manifest["updated"] = entry["recorded"]
        text = _dump(manifest)
        for path, content in ((run.manifest_path, text), (phase_path / "params.yaml", params_yaml)):
            if hints := find_secrets(content.encode(), secrets):
                raise SecretLeakError(f"refusing to write {path}: it would contain a known secret ({hints[0]})")
        procs.write_atomic(phase_path / "params.yaml", params_yaml)
        procs.write_atomic(run.manifest_path, text)
    return run.manifest_path


def reproduce_command(run_id: str | Path, phase: str) -> str:
    """The ``ragperf run`` command line that runs ``phase`` of the run again, into a new run."""
    run = open_run(run_id)
    params_file = run.path / _check_name(phase, "phase") / "params.yaml"
    if not params_file.exists():
        raise RunError(f"run {run.id} has no recorded parameters for {phase} ({params_file} is missing)")
    params = yaml.safe_load(params_file.read_text()) or {}
    return _reproduce(run.manifest().get("profile"), phase, params, params_file)


def _reproduce(profile: str | None, phase: str, params: Mapping[str, Any], params_file: Path) -> str:
    argv = ["ragperf", "run", phase]
    if profile:
        argv += ["--profile", profile]
    if isinstance(params.get("target"), str):
        argv += ["--target", params["target"]]
    return shlex.join([*argv, "--params", str(params_file)])


def pg_settings_snapshot(conninfo: str, password: SecretStr | str | None = None) -> dict[str, dict[str, Any]]:
    """Every row of pg_settings: ``{name: {setting, unit, source, pending_restart}}``.

    Settings that may embed a password (primary_conninfo) are scrubbed. Errors never show it.
    """
    secret = password.get_secret_value() if isinstance(password, SecretStr) else password
    options: dict[str, Any] = {"autocommit": True, "application_name": "ragperf-manifest"}
    if secret:
        options["password"] = secret
    if "connect_timeout" not in conninfo:
        options["connect_timeout"] = 10
    try:
        with psycopg.connect(conninfo, **options) as conn:
            snapshot = pgsettings.settings_snapshot(conn)
    except psycopg.Error as exc:
        message = scrub_text(str(exc))
        for known in [secret, *embedded_passwords(conninfo)]:
            message = message.replace(known, "***") if known else message
        raise RunError(f"could not read pg_settings: {message}") from None
    return {
        name: {"setting": scrub_text(row["setting"]) if row["setting"] else row["setting"],
               **{column: row[column] for column in _COLUMNS}}
        for name, row in snapshot.items()
    }  # fmt: skip


def _snapshot_or_error(conninfo: str | None, password: SecretStr | str | None) -> dict[str, Any] | None:
    if not conninfo:
        return None
    try:
        return pg_settings_snapshot(conninfo, password)
    except RunError as exc:
        log.warning("%s", exc)
        return {"error": str(exc)}


def installed_packages() -> dict[str, str]:
    """Every installed Python distribution and its version, sorted by name."""
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name not in packages:
            packages[name] = dist.version
    return dict(sorted(packages.items(), key=lambda item: item[0].lower()))


def legacy_status() -> dict[str, Any]:
    """The frozen legacy service's digest and whether any file differs from its manifest."""
    try:
        digest, differences = frozen.legacy_digest(), frozen.differences()
    except OSError as exc:
        return {"digest": None, "status": "unknown", "differences": [f"cannot check: {exc}"]}
    return {"digest": digest, "status": "CHANGED" if differences else "unchanged", "differences": differences}


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


@contextlib.contextmanager
def _locked(run: Run) -> Iterator[None]:
    """Serialise manifest updates, so two phases recorded at once both stay."""
    with open(run.path / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- reading phases back, for comparisons ---------------------------------------------------


def load_phase(ref: str) -> tuple[dict, pd.DataFrame | None, str]:
    """A phase's metrics and records from ``<run-id>:<phase>``, or ``<phase>`` (the newest run that has it).

    Returns (metrics, records or None, the resolved ``run:phase``).
    """
    run_id, _, phase = ref.rpartition(":")
    if not phase:
        raise ValueError(f"bad reference {ref!r}: use <run-id>:<phase> or <phase>, e.g. phase0")
    candidates = [run_id] if run_id else list_runs()
    for candidate in candidates:
        run = open_run(candidate)
        path = run.path / phase / "metrics.json"
        if path.exists():
            parquet = path.with_name("requests.parquet")
            records = pd.read_parquet(parquet) if parquet.exists() else None
            return read_metrics_json(path), records, f"{run.id}:{phase}"
        if run_id:
            raise FileNotFoundError(f"run {run.id} has no {phase}/metrics.json")
    raise FileNotFoundError(f"no run in {outputs_dir()} has {phase}/metrics.json")


def compare_runs(baseline: str, current: str, **kwargs: Any) -> tuple[pd.DataFrame, str]:
    """:func:`ragperf.measure.compare.compare` of two phases named as in :func:`load_phase`; returns the table
    and a heading."""
    b_metrics, b_records, b_name = load_phase(baseline)
    c_metrics, c_records, c_name = load_phase(current)
    return compare.compare(b_metrics, c_metrics, b_records, c_records, **kwargs), f"{b_name} → {c_name}"
