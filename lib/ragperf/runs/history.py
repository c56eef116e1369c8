"""History across runs: each phase's numbers run after run, as a table and a trend chart, and a regression gate.

Scheduled runs (cron, CI) each leave a run directory in ``outputs_dir()``; :func:`history` reads every
phase's ``metrics.json`` back into one table, oldest first, with the git revision and the parameters
each ran with. :func:`history_text` prints it for a terminal, :func:`history_chart` draws one panel per
metric with the plan's final targets (:data:`ragperf.measure.verdicts.TARGETS`) as dashed lines.

:func:`check` is the gate a CI job runs between a baseline and a current phase: it compares them with
:func:`ragperf.runs.compare_runs` and calls a metric a regression when all of these hold:

1. the gate looks at it: with ``metrics`` given, the rows of those keys; otherwise every row whose unit is
   not ``count`` (the run-level metrics of the registry other than request and failure counts, which scale
   with how long a step ran, plus each step's p50, p95, success rate and throughput);
2. its call is "worse": the change goes against the metric's direction and, for the bootstrapped latency
   percentiles, the 95 % interval of the change excludes 0 (within noise is never a regression);
3. it moved by more than ``tolerance_pct`` percent of the baseline value (relative change, for every unit:
   a success rate of 99 % falling to 89 % is -10.1 %); a worse value from a baseline of 0 always counts.

A tolerance of 0 fails on any change beyond noise. Rows measured in one run only ("not comparable") are
named in the text but do not fail the gate; two phases without a gated metric in common are an error.
"""

from __future__ import annotations

import json
import logging
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ragperf import runs
from ragperf.measure import charts, compare
from ragperf.measure.metrics import REGISTRY, USERS_KEYS, format_value, metric, read_metrics_json, value_of
from ragperf.measure.verdicts import TARGET_VALUES, TARGETS

log = logging.getLogger(__name__)

BASE_COLUMNS = ("run", "phase", "when", "revision", "profile", "target", "params", "params_file")
EXTRA_KEYS = ("p95", "success_rate", "throughput_rps")  # run-level ones, when a phase recorded them
DEFAULT_TOLERANCE_PCT = 10.0
MAX_PANELS = 6
MAX_PARAMS_SHOWN = 3
MAX_TICKS = 8
# one colour per phase; green (better, and the targets), orange (worse) and the users' purple keep their meaning
PHASE_COLOURS = ("#1f78b4", "#e7298a", "#e6ab02", "#a6761d", "#666666", "black")


class HistoryError(runs.RunError):
    """The history or the gate cannot be made as asked (an unknown metric, a bad phase, nothing to compare)."""


def check_metrics(metrics: Sequence[str] | None) -> list[str] | None:
    """The metric keys, each checked against the registry (duplicates dropped); None stays None.

    Raises:
        HistoryError: a key the registry does not know, naming the known ones.
    """
    if metrics is None:
        return None
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [key for key in metrics if key not in REGISTRY]
    if unknown:
        raise HistoryError(f"unknown metric {', '.join(map(repr, unknown))}: known are {', '.join(REGISTRY)}")
    return list(dict.fromkeys(metrics))


def _check_phase(phase: str) -> str:
    if not isinstance(phase, str) or not runs.NAME.match(phase):
        raise HistoryError(f"bad phase {phase!r}: give a phase name such as phase0 or phase4 (letters, digits, "
                           f"'_' and '.', starting with a letter), not a run id or a path")  # fmt: skip
    return phase


def _when(*candidates: Any, fallback: Path) -> datetime:
    """The first ISO time among ``candidates`` that parses, in UTC; else the file's modification time."""
    for text in candidates:
        if not isinstance(text, str):
            continue
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            continue
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return datetime.fromtimestamp(fallback.stat().st_mtime, UTC)


def _target_name(params: Mapping[str, Any]) -> str:
    for value in (params.get("target_name"), params.get("target")):
        if isinstance(value, str) and value:
            return value
    target = params.get("target")
    return str(target.get("kind") or "") if isinstance(target, Mapping) else ""


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as ``{"load.fixed_duration_s": 30, ...}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _short(value: Any, width: int = 30) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return textwrap.shorten(text, width, placeholder="…") if len(text) > width else text


def _phase_row(run: runs.Run, manifest: Mapping[str, Any], phase: str, result: Mapping[str, Any]) -> dict[str, Any]:
    entry = (manifest.get("phases") or {}).get(phase) or {}
    params = entry.get("params") if isinstance(entry.get("params"), Mapping) else {}
    git = entry.get("git") or manifest.get("git") or {}
    params_file = run.path / phase / "params.yaml"
    return {
        "run": run.id,
        "phase": phase,
        "when": _when(entry.get("recorded"), manifest.get("created"), fallback=run.path / phase / "metrics.json"),
        "revision": str(git.get("short") or ""),
        "profile": str(manifest.get("profile") or params.get("profile") or ""),
        "target": _target_name(params),
        "params_file": str(params_file) if params_file.exists() else "",
        "_params": {k: v for k, v in _flat(params).items() if k not in ("profile", "target_name")},
        "_metrics": result,
    }


def _params_texts(rows: list[dict[str, Any]]) -> None:
    """Each row's ``params``: its profile and the few parameters that differ between runs of the same phase."""
    for phase in {row["phase"] for row in rows}:
        same = [row for row in rows if row["phase"] == phase]
        keys = sorted({key for row in same for key in row["_params"]})
        differ = [k for k in keys if len({json.dumps(r["_params"].get(k), default=str) for r in same}) > 1]
        for row in same:
            shown = [f"{k}={_short(row['_params'].get(k))}" for k in differ[:MAX_PARAMS_SHOWN]]
            if len(differ) > MAX_PARAMS_SHOWN:
                shown.append(f"+{len(differ) - MAX_PARAMS_SHOWN} more")
            row["params"] = ", ".join([row["profile"] or "?", *shown])


def _default_keys(results: list[Mapping[str, Any]]) -> list[str]:
    present = [k for k in (*USERS_KEYS, *EXTRA_KEYS) if any(value_of(r, k) is not None for r in results)]
    return present or list(USERS_KEYS)


def _empty(keys: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(columns=[*BASE_COLUMNS, *keys])
    frame["when"] = pd.to_datetime(frame["when"], utc=True)
    return frame.astype(dict.fromkeys(keys, float))


def history(phase: str | None = None, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (run, phase) with a ``metrics.json`` in ``outputs_dir()``, oldest first.

    Args:
        phase: only this phase (e.g. ``phase4``); default every phase.
        metrics: the metric keys to show (registry keys); default the users' seven keys that any row
            measured, and the run-level ``p95``, ``success_rate`` and ``throughput_rps`` when recorded.

    Returns:
        Columns run, phase, when (UTC: the phase's ``recorded`` time, else the run's ``created``),
        revision (git short revision, ``-dirty`` when the tree had changes), profile, target (the target's
        name), params (the profile and the parameters that differ between runs of the phase), params_file
        (the phase's ``params.yaml``, "" when none), then one float column per metric (NaN: not measured).
        Empty, with those columns, when there is no run. A ``metrics.json`` that cannot be read is skipped
        with a warning.

    Raises:
        HistoryError: a bad phase name or an unknown metric key.
    """
    if phase is not None:
        _check_phase(phase)
    keys = check_metrics(metrics)
    rows = []
    for run_id in runs.list_runs():
        run = runs.open_run(run_id)
        manifest = run.manifest()
        for name in [phase] if phase else run.phases():
            path = run.path / name / "metrics.json"
            if not path.is_file():
                continue
            try:
                result = read_metrics_json(path)
            except (OSError, ValueError) as exc:
                log.warning("history: skipped %s: %s", path, exc)
                continue
            rows.append(_phase_row(run, manifest, name, result))
    keys = keys if keys is not None else _default_keys([row["_metrics"] for row in rows])
    if not rows:
        return _empty(keys)
    rows.sort(key=lambda row: (row["when"], row["run"], runs.phase_sort_key(row["phase"])))
    _params_texts(rows)
    for row in rows:
        result = row.pop("_metrics")
        row.pop("_params")
        row.update({key: value_of(result, key) for key in keys})
    frame = pd.DataFrame(rows, columns=[*BASE_COLUMNS, *keys])
    frame["when"] = pd.to_datetime(frame["when"], utc=True)
    return frame.astype(dict.fromkeys(keys, float))


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric keys among a :func:`history` table's columns, in their order."""
    return [c for c in table.columns if c not in BASE_COLUMNS and c in REGISTRY]


def _span(table: pd.DataFrame) -> str:
    """``N runs (first → last)``, or ``1 run (date)``."""
    n = table["run"].nunique()
    first, last = (f"{t:%Y-%m-%d %H:%M}" for t in (table["when"].min(), table["when"].max()))
    return f"{n} run{'s' if n != 1 else ''} ({first} UTC)" if first == last else f"{n} runs ({first} → {last} UTC)"


def history_text(table: pd.DataFrame) -> str:
    """A :func:`history` table as fixed-width text for a terminal: a title line, the column headers (metric
    keys, as ``--metric`` takes them), a row per phase run with values and units, and what each key is."""
    if table.empty:
        return "History: no run has recorded metrics."
    keys = metric_columns(table)
    phases = sorted(table["phase"].unique(), key=runs.phase_sort_key)
    header = ["when (UTC)", "run", "phase", "revision", "params", *keys]
    lines = []
    for _, row in table.iterrows():
        cells = [f"{row['when']:%Y-%m-%d %H:%M}", *(str(row[c]) for c in ("run", "phase", "revision", "params"))]
        lines.append(cells + [format_value(float(row[key]), metric(key).unit) for key in keys])
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    texts = len(header) - len(keys)  # text columns left-aligned, numbers right-aligned

    def render(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        padded = [cell.ljust(w) if i < texts else cell.rjust(w) for i, (cell, w) in pairs]
        return "  ".join(padded).rstrip()

    out = [f"History of {_span(table)}, {', '.join(phases)}, oldest first", render(header),
           render(["-" * w for w in widths]), *map(render, lines)]  # fmt: skip
    out += [f"  {key}: {metric(key).label} ({metric(key).unit})" for key in keys]
    return "\n".join(out)


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, max(n, 1))
    return max(1, math.ceil(n / cols)), cols


def _run_axis(table: pd.DataFrame) -> tuple[dict[str, int], list[str]]:
    """Each run's position on the x axis (oldest first) and its tick label (revision and date)."""
    first = table.drop_duplicates("run")
    position = {run: i for i, run in enumerate(first["run"])}
    labels = [f"{rev or '?'}\n{when:%m-%d %H:%M}" for rev, when in zip(first["revision"], first["when"], strict=True)]
    return position, labels


def _ticks(ax: Any, labels: list[str]) -> None:
    step = max(1, math.ceil(len(labels) / MAX_TICKS))
    ticks = list(range(0, len(labels), step))
    if len(ticks) > 1:
        ticks[-1] = len(labels) - 1  # the newest run is always labelled
    ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize="x-small")
    ax.set_xlim(-0.5, max(len(labels) - 1, 0) + 0.5)


def _panel(ax: Any, table: pd.DataFrame, key: str, position: Mapping[str, int], colours: Mapping[str, str]) -> None:
    m = metric(key)
    drawn = False
    for phase, group in table.groupby("phase", sort=False):
        x = group["run"].map(position).to_numpy(float)
        y = charts.floats(group, key)
        keep = np.isfinite(y)
        if keep.any():
            ax.plot(x[keep], y[keep], marker="o", color=colours[str(phase)], label=str(phase))
            drawn = True
    if key in TARGET_VALUES:
        ax.axhline(TARGET_VALUES[key], color=charts.BETTER, linestyle="--", label=f"target {TARGETS[key][0]}")
    if not drawn:
        charts.empty(ax, "no data")
        if key in TARGET_VALUES:  # the note in the middle, the target line above it
            ax.set_ylim(0, 1.25 * TARGET_VALUES[key])
    ax.set_title(textwrap.fill(m.label, 40), fontsize="medium")
    ax.set_ylabel(charts.UNIT_AXIS.get(m.unit, m.unit))
    ax.set_xlabel("Run (git revision, date UTC)")


@charts.chart
def history_chart(table: pd.DataFrame) -> charts.Chart:
    """One panel per metric of a :func:`history` table (the first six): each phase a line over the runs
    (oldest left, ticks labelled by revision and date), the plan's final target dashed where it has one.
    One run is a single point per phase; a value not measured leaves a gap."""
    keys = metric_columns(table)[:MAX_PANELS]
    rows, cols = _grid(len(keys))
    fig = cast(charts.Chart, charts.figure(4.3 * cols, 3.3 * rows + 0.5))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    if table.empty:
        fig.suptitle("History of 0 runs: no run has recorded metrics")
    else:
        fig.suptitle(f"History of {_span(table)}")
    order = sorted(table["phase"].unique(), key=runs.phase_sort_key) if len(table) else []
    colours = {phase: PHASE_COLOURS[i % len(PHASE_COLOURS)] for i, phase in enumerate(order)}
    ordered = table.sort_values("phase", key=lambda s: s.map(lambda p: order.index(p)), kind="stable")
    position, labels = _run_axis(table)
    for ax, key in zip(axes, keys, strict=False):
        _panel(ax, ordered, key, position, colours)
        _ticks(ax, labels)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    if not keys:
        axes[0].set_visible(True)
        charts.empty(axes[0], "no metric to show")
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 6),
                   fontsize="small")  # fmt: skip
    return fig


# --- the regression gate ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Gate:
    """The verdict of :func:`check`: whether the current phase regressed against the baseline.

    ``table`` is the whole comparison (:func:`ragperf.measure.compare.compare`'s columns, plus ``gated``:
    the gate looked at the row, and ``regression``); ``regressions`` its regression rows; ``heading``
    ``RUN:PHASE → RUN:PHASE``.
    """

    ok: bool
    regressions: pd.DataFrame
    table: pd.DataFrame
    heading: str
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT

    @property
    def compared(self) -> int:
        """How many gated rows both runs measured."""
        return int((self.table["gated"] & (self.table["call"] != "not comparable")).sum())

    def text(self) -> str:
        """The verdict in words: no regression, or each regression with its change and 95 % interval."""
        tolerance = f"{self.tolerance_pct:g} %"
        if self.ok:
            lines = [f"no regression beyond noise: {self.compared} metrics compared (tolerance {tolerance})"]
        else:
            n = len(self.regressions)
            lines = [f"{n} regression{'s' if n != 1 else ''} beyond noise and the {tolerance} tolerance "
                     f"({self.compared} metrics compared):"]  # fmt: skip
            lines += [f"- {compare.describe(row)}" for row in self.regressions.itertuples(index=False)]
        missing = self.table[self.table["gated"] & (self.table["call"] == "not comparable")]
        if not missing.empty:
            names = ", ".join(f"{r.metric} ({r.step})" if r.step else r.metric for r in missing.itertuples())
            lines.append(f"not comparable (measured in one run only, not gated): {names}")
        return "\n".join(lines)


def _regressions(table: pd.DataFrame, tolerance_pct: float) -> pd.Series:
    beyond = table["change_pct"].abs() > tolerance_pct
    from_zero = table["change_pct"].isna() & table["change"].notna()
    return table["gated"] & (table["call"] == "worse") & (beyond | from_zero)


def check(
    baseline: str,
    current: str,
    *,
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
    metrics: Sequence[str] | None = None,
) -> Gate:
    """The regression gate: ``current`` against ``baseline`` (``RUN:PHASE``, or ``PHASE`` for the newest run
    with it), by the rule in this module's docstring.

    Args:
        baseline: the reference phase, e.g. ``20261128T020000Z-3799993-smoke:phase4``.
        current: the phase to judge, e.g. ``phase4`` (the newest run that has it).
        tolerance_pct: how much worse than the baseline, in percent of its value, a metric may get.
        metrics: only these keys (registry keys, counts included when named); default every non-count row.

    Raises:
        HistoryError: an unknown metric, a negative tolerance, a reference that names no recorded phase, the
            same phase twice, or no gated metric that both measured.
    """
    keys = check_metrics(metrics)
    if not math.isfinite(tolerance_pct) or tolerance_pct < 0:
        raise HistoryError(f"bad tolerance {tolerance_pct!r}: give a percentage of 0 or more, e.g. 10")
    try:
        table, heading = runs.compare_runs(baseline, current)
    except (FileNotFoundError, ValueError) as exc:  # load_phase's, and read_metrics_json's for a foreign file
        raise HistoryError(str(exc)) from None
    names = heading.split(" → ")
    if len(names) == 2 and names[0] == names[1]:
        phase = names[0].rpartition(":")[2]
        raise HistoryError(f"baseline and current are the same phase ({names[0]}): name the baseline's run, e.g. "
                           f"--baseline <run-id>:{phase} (`ragperf history --phase {phase}` lists them)")  # fmt: skip
    table = table.copy()
    table["gated"] = table["key"].isin(keys) if keys is not None else table["unit"] != "count"
    if not (table["gated"] & (table["call"] != "not comparable")).any():
        asked = f" among {', '.join(keys)}" if keys else ""
        raise HistoryError(f"nothing to compare in {heading}: the two phases have no metric{asked} in common")
    table["regression"] = _regressions(table, tolerance_pct)
    regressions = table[table["regression"]].reset_index(drop=True)
    return Gate(regressions.empty, regressions, table, heading, tolerance_pct)
