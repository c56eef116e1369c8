"""The workbench's panel in JupyterLab: pick the target and the step, start, watch, stop, compare, turn knobs.

Plain ipywidgets, redrawn from a background thread once a second while a step runs, so the kernel is
never blocked: no Output widget (whose captured output headless runners wait on) and no loop in a
cell. Every control has a CSS class ``ragperf-<name>``, which is how the browser test finds it.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from typing import Any

from ragperf import runs
from ragperf.core import params as params_mod
from ragperf.core import redact
from ragperf.measure import compare
from ragperf.phases import workbench
from ragperf.phases.workbench import Workbench

log = logging.getLogger(__name__)

REFRESH_S = 1.0
_CSS = "<style>.ragperf-status{font-family:var(--jp-ui-font-family)} .ragperf-error{color:#d95f02}</style>"


def _targets() -> list[str]:
    return sorted(p.stem for p in (params_mod.PARAMS_DIR / "targets").glob("*.yaml"))


def _phase_refs(limit: int = 8) -> list[str]:
    """``RUN:PHASE`` of the newest runs' measured phases, newest first."""
    refs = []
    for run_id in runs.list_runs()[:limit]:
        run = runs.open_run(run_id)
        refs += [f"{run_id}:{p}" for p in run.phases() if (run.path / p / "metrics.json").exists()]
    return refs


class Panel:
    """The workbench's widgets around a :class:`Workbench` (``open`` makes another for a newly picked target)."""

    def __init__(
        self,
        bench: Workbench,
        *,
        users: int = 5,
        duration_s: float = 30.0,
        mode: str = workbench.AS_ASKED,
        workload: str = "zipf",
        open_target: Callable[[str], Workbench] | None = None,
    ) -> None:
        import ipywidgets as w

        self.bench = bench
        self.open_target = open_target
        layout = w.Layout(width="auto")
        style = {"description_width": "initial"}

        def control(widget: Any, name: str) -> Any:
            widget.add_class(f"ragperf-{name}")
            if isinstance(widget, w.Button):
                widget.layout = w.Layout(width="auto")
            elif isinstance(widget, w.Dropdown) and name != "compare-with":
                widget.layout = w.Layout(width="15em")
            return widget

        self.target = control(w.Dropdown(options=_targets(), value=bench.target_name, description="target",
                                         style=style), "target")  # fmt: skip
        self.users = control(w.BoundedIntText(users, min=1, max=workbench.MAX_USERS, description="users",
                                              style=style, layout=w.Layout(width="9em")), "users")  # fmt: skip
        self.duration = control(w.BoundedFloatText(duration_s, min=1, max=workbench.MAX_DURATION_S,
                                                   description="duration (s)", style=style,
                                                   layout=w.Layout(width="12em")), "duration")  # fmt: skip
        self.mode = control(w.Dropdown(options=workbench.STEP_MODES, value=mode, description="mode", style=style),
                            "mode")  # fmt: skip
        self.workload = control(w.Dropdown(options=list(workbench.WORKLOADS), value=workload, description="workload",
                                           style=style), "workload")  # fmt: skip
        self.start_button = control(w.Button(description="start", button_style="success", icon="play"), "start")
        self.stop_button = control(w.Button(description="stop", button_style="warning", icon="stop",
                                            disabled=True), "stop")  # fmt: skip
        self.ef_search = control(w.BoundedIntText(40, min=workbench.EF_SEARCH_RANGE[0],
                                                  max=workbench.EF_SEARCH_RANGE[1], description="hnsw.ef_search",
                                                  style=style, layout=w.Layout(width="14em")), "ef-search")  # fmt: skip
        self.ef_button = control(w.Button(description="set ef_search"), "set-ef-search")
        self.cache = control(w.ToggleButtons(options=["off", "on"], value="off", description="cache",
                                             style={**style, "button_width": "4em"}),
                             "cache")  # fmt: skip
        self.undo_button = control(w.Button(description="undo last change", icon="undo"), "undo")
        self.undo_all_button = control(w.Button(description="undo all"), "undo-all")
        self.compare_with = control(w.Dropdown(options=[], description="compare with", style=style,
                                               layout=w.Layout(width="32em")), "compare-with")  # fmt: skip
        self.compare_button = control(w.Button(description="compare the last step"), "compare")
        self.status = control(w.HTML(), "status")
        self.image = control(w.Image(format="png", layout=w.Layout(max_width="900px")), "live-chart")
        self.steps = control(w.HTML(), "steps")
        self.comparison = control(w.HTML(), "comparison")
        self.knobs = control(w.HTML(), "knobs")

        self.start_button.on_click(lambda _: self._guarded(self._start))
        self.stop_button.on_click(lambda _: self._guarded(self.bench.stop))
        self.ef_button.on_click(lambda _: self._guarded(self._set_ef_search))
        self.cache.observe(self._on_cache, names="value")
        self.undo_button.on_click(lambda _: self._guarded(self._undo))
        self.undo_all_button.on_click(lambda _: self._guarded(self._undo_all))
        self.compare_button.on_click(lambda _: self._guarded(self._compare))
        self.target.observe(lambda change: self._guarded(lambda: self._open(change["new"])), names="value")

        row = w.HBox
        self.widget = w.VBox(
            [
                w.HTML(_CSS + "<b>Load step</b>"),
                row([self.target, self.users, self.duration, self.mode, self.workload], layout=layout),
                row([self.start_button, self.stop_button, self.status]),
                self.image,
                self.steps,
                w.HTML("<b>Knobs</b> (changes of the target, journaled and undone from here)"),
                row([self.ef_search, self.ef_button, self.cache, self.undo_button, self.undo_all_button]),
                self.knobs,
                w.HTML("<b>Compare</b>"),
                row([self.compare_with, self.compare_button]),
                self.comparison,
            ]
        )
        self.widget.add_class("ragperf-workbench")
        self._draw()

    # --- what the buttons do -------------------------------------------------------------------

    def _guarded(self, action: Callable[[], Any]) -> None:
        """Run ``action``; an error is shown in the panel's status, never raised into the frontend."""
        try:
            action()
        except Exception as exc:
            self._say(f"{type(exc).__name__}: {exc}", error=True)
            log.info("workbench: %s", exc)

    def _say(self, text: str, *, error: bool = False) -> None:
        kind = "ragperf-error" if error else ""
        self.status.value = f'<span class="ragperf-status {kind}">{html.escape(redact.scrub_message(text))}</span>'

    def _start(self) -> None:
        step = self.bench.start(int(self.users.value), float(self.duration.value), self.mode.value,
                                self.workload.value)  # fmt: skip
        self._say(f"{step.label}: running")
        self.start_button.disabled, self.stop_button.disabled = True, False
        threading.Thread(target=self._follow, args=(step,), daemon=True, name="ragperf-workbench-refresh").start()

    def _follow(self, step: workbench.Step) -> None:
        """Redraw once a second until the step ends, then once more with all its records."""
        try:
            while not step.done.wait(REFRESH_S):
                self.image.value = self.bench.snapshot(step).png()
            self._draw()
            self._say(f"{step.label}: {step.state}", error=bool(step.error))
        except Exception as exc:  # a drawing error must not end silently in a thread
            self._say(f"cannot draw the step: {type(exc).__name__}: {exc}", error=True)
        finally:
            self.start_button.disabled, self.stop_button.disabled = False, True

    def _set_ef_search(self) -> None:
        knob = self.bench.set_ef_search(int(self.ef_search.value))
        self._say(f"hnsw.ef_search of the app's role is {self.ef_search.value}" + ("" if knob else " already"))
        self._draw_knobs()

    def _on_cache(self, change: dict[str, Any]) -> None:
        self._guarded(lambda: self._set_cache(change["new"]))

    def _set_cache(self, value: str) -> None:
        try:
            knob = self.bench.set_cache(value == "on")
        except Exception:
            self._draw_knobs()  # puts the toggle back to what is so
            raise
        self._say(f"the cache is {value}: steps go to {self.bench.url}" + ("" if knob else " (it was already)"))
        self._draw_knobs()

    def _undo(self) -> None:
        knob = self.bench.undo()
        self._say(f"undone: {knob.label}" if knob else "nothing to undo")
        self._draw_knobs()

    def _undo_all(self) -> None:
        knobs = self.bench.undo_all()
        self._say("undone: " + (", ".join(k.label for k in knobs) or "nothing"))
        self._draw_knobs()

    def _compare(self) -> None:
        if not self.bench.steps:
            raise workbench.WorkbenchError("run a step first")
        if self.compare_with.value is None:
            raise workbench.WorkbenchError("nothing to compare with: run a second step, or a phase (ragperf run)")
        last = self.bench.steps[-1].number
        table, heading = self.bench.compare(last, self.compare_with.value)
        self.comparison.value = f"<p>{html.escape(heading)}</p><pre>{html.escape(compare.compare_text(table))}</pre>"

    def _open(self, name: str) -> None:
        if name == self.bench.target_name:
            return
        if self.open_target is None or self.bench.running is not None:
            self.target.value = self.bench.target_name
            raise workbench.WorkbenchError("stop the step before picking another target" if self.bench.running
                                           else "this panel cannot open another target")  # fmt: skip
        self._say(f"opening {name} ...")
        try:
            self.bench = self.open_target(name)
        except Exception:
            self.target.value = self.bench.target_name
            raise
        self._say(f"working on {name}: {self.bench.app_url}")
        self._draw()

    # --- drawing -------------------------------------------------------------------------------

    def _draw(self) -> None:
        self.image.value = self.bench.snapshot().png()
        table = self.bench.table()
        self.steps.value = "" if table.empty else table.to_html(index=False, na_rep="—", border=0)
        earlier = [(s.label, s.number) for s in reversed(self.bench.steps[:-1])]
        self.compare_with.options = earlier + [(ref, ref) for ref in _phase_refs()]
        self._draw_knobs()

    def _draw_knobs(self) -> None:
        now = self.bench.knob_values()
        done = ", ".join(k.label for k in self.bench.knobs) or "none"
        self.knobs.value = html.escape(f"now: {', '.join(f'{k} {v}' for k, v in now.items())}; changes: {done}")
        self.cache.unobserve(self._on_cache, names="value")  # show what is so without turning the knob again
        self.cache.value = now["cache"]
        self.cache.observe(self._on_cache, names="value")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = "The workbench's panel (it is live in JupyterLab with a running kernel)."
        return bundle
