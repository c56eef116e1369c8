"""Run phase notebooks headlessly with papermill, into a run directory: the audit trail.

``ragperf run phase0`` validates the parameters (nothing starts when they are wrong), creates
``outputs/<run-id>/`` (or adds to an existing run with ``--run-id``; a phase already there is
refused), and executes ``notebooks/<phase>_*.ipynb`` into ``<run>/<phase>.ipynb`` with the
project's kernel. A failing cell leaves the executed notebook in place, showing where it failed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ragperf import lab, runs
from ragperf.core import targetlock
from ragperf.core.params import check_phase, load, notebook_for, phases, preflight
from ragperf.core.progress import HEADLESS_ENV

log = logging.getLogger(__name__)

KERNEL = "ragperf"
CELL_TIMEOUT_S = 3 * 3600  # a cell that runs longer than this is stuck, not slow


class PhaseFailed(RuntimeError):
    """A phase notebook raised; the executed notebook shows where."""


def run(
    phase: str,
    *,
    profile: str = "smoke",
    target: str = "lab",
    params_files: Sequence[str | Path] = (),
    run_id: str | None = None,
    progress: bool = True,
) -> runs.Run:
    """Execute ``phase`` (or ``all``: every phase, in order) into a run; return the run.

    Raises:
        ParamsError: bad parameters, an unknown phase or profile (before anything starts).
        PhaseExistsError: the run already has the phase.
        PhaseFailed: a notebook cell raised.
        TargetBusyError: another run holds the target (before a run directory exists).
    """
    todo = phases() if phase == "all" else [check_phase(phase)]
    files = [str(Path(f).resolve()) for f in params_files]
    params = load(profile, target, files)  # fail early, before a run directory exists
    preflight(todo, params)
    # one run at a time on a target, held across all its phases; the kernels go on under this hold
    target_id = targetlock.params_target(params, lab.default_lab_dir())
    with targetlock.held(target_id, command=targetlock.command_line()) as hold:
        run_ = runs.open_run(run_id) if run_id else runs.new_run(profile)
        if hold is not None:
            hold.name_run(run_.id)
        for name in todo:
            if run_.notebook_path(name).exists() or (run_.path / name / "metrics.json").exists():
                raise runs.PhaseExistsError(f"run {run_.id} already has {name}: start a new run instead")
        for name in todo:
            execute(name, run_, profile=profile, target=target, params_files=files, progress=progress)
    return run_


def execute(
    phase: str,
    run_: runs.Run,
    *,
    profile: str,
    target: str,
    params_files: Sequence[str],
    progress: bool = True,
) -> Path:
    """Execute one phase notebook into ``<run>/<phase>.ipynb``."""
    import papermill  # imports take a second or two: only when a notebook runs
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    source = notebook_for(phase)
    output = run_.notebook_path(phase)
    parameters = {"profile": profile, "target": target, "params_files": list(params_files), "run_id": str(run_.path)}
    print(f"{phase}: {source.name} -> {output}", flush=True)
    previous = os.environ.get(HEADLESS_ENV)
    os.environ[HEADLESS_ENV] = "1"  # the kernel inherits it: text progress bars that a saved notebook keeps
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            kernel_name=KERNEL,
            progress_bar=progress,
            cwd=str(source.parent),
            execution_timeout=CELL_TIMEOUT_S,
        )
    except PapermillExecutionError as exc:
        raise PhaseFailed(
            f"{phase} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n  see the executed notebook {output}"
        ) from None
    except DeadKernelError:
        raise PhaseFailed(
            f"{phase}: the notebook's kernel died (out of memory? see dmesg); the notebook so far is {output}"
        ) from None
    except CellTimeoutError:
        raise PhaseFailed(f"{phase}: a cell ran longer than {CELL_TIMEOUT_S} s and was stopped; see {output}") from None
    finally:
        if previous is None:
            os.environ.pop(HEADLESS_ENV, None)
        else:
            os.environ[HEADLESS_ENV] = previous
    return output
