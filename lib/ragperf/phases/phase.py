"""What every phase notebook does first and last: resolve its target, record it, measure it.

A notebook calls :func:`begin` with its papermill parameters and gets a :class:`PhaseContext`:
the validated parameters, the run directory, the target's URL and database access (for the lab,
from its state; for a deployment, from the parameters and the environment), the workloads, and
the manifest entry already written. :func:`measure` runs the four scenarios and
:func:`finish` writes ``metrics.json``, ``requests.parquet`` and the charts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ragperf import lab, runs
from ragperf.core import changes, targetlock
from ragperf.core import params as params_mod
from ragperf.core.criteria import Slo
from ragperf.core.params import Params
from ragperf.core.redact import install_log_filter
from ragperf.core.target import Target
from ragperf.lab import frozen
from ragperf.measure import charts, comparecharts, metrics, scenarios, verdicts
from ragperf.measure.loadgen import LoadResult
from ragperf.measure.workload import WorkItem, in_order_workload, read_pool, replay_workload, zipf_workload
from ragperf.runs import rollback, targets

log = logging.getLogger(__name__)

BASELINE_PHASE = "phase0"  # measured on the lab from the untuned state, whatever earlier runs left
ZIPF_DRAWS = 5000  # requests drawn for the concurrent scenarios; users cycle over them


@dataclass
class Workloads:
    """The questions each scenario asks."""

    in_order: list[WorkItem]
    concurrent: list[WorkItem]
    spare: list[WorkItem]  # questions the other scenarios never ask
    fresh_count: int
    source: str
    key: str  # the run and phase, so that each measurement takes other spare questions

    def fresh(self, label: str = "") -> list[WorkItem]:
        """``fresh_count`` spare questions for the cache test, a different slice for each run, phase and label.

        The legacy service caches embeddings for its lifetime, so questions asked by an earlier
        measurement would not be first asks any more.
        """
        digest = hashlib.sha256(f"{self.key}/{label}".encode()).hexdigest()
        offset = int(digest, 16) % max(1, len(self.spare))
        return (self.spare[offset:] + self.spare[:offset])[: self.fresh_count]


@dataclass
class Measurement:
    """The four scenarios' outcomes."""

    query_latency: LoadResult
    fixed: list[LoadResult]
    ladder: scenarios.Ladder
    cache: LoadResult

    def results(self) -> list[LoadResult]:
        return [self.query_latency, *self.fixed, *self.ladder.results, self.cache]

    def records(self) -> pd.DataFrame:
        return scenarios.all_records(self.results())

    def generator_notes(self) -> list[str]:
        return sorted({r.generator_note for r in self.results() if r.generator_note})


@dataclass
class PhaseContext:
    """Everything a phase notebook works with."""

    phase: str
    params: Params
    run: runs.Run
    out: Path
    target: Target
    workloads: Workloads | None = None

    def dir(self, label: str = "") -> Path:
        """The phase directory, or its ``label`` subdirectory for one of several measurements (made)."""
        path = self.out / label if label else self.out
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def criteria(self) -> Slo:
        """The users' success criteria for this phase, as the parameters set them."""
        return self.params.criteria_of(self.phase)

    @property
    def slo(self) -> Slo:
        return Slo(p95_s=self.params.slo.p95_s, success_rate_pct=self.params.slo.success_rate_pct)


def load_params(profile: str, target: str, params_files: str | Iterable[str] = ()) -> Params:
    """The notebook parameters as a validated :class:`Params` (one file name or several)."""
    files = [params_files] if isinstance(params_files, str) else list(params_files)
    return params_mod.load(profile, target, [f for f in files if f])


def _open_run(profile: str, run_id: str) -> runs.Run:
    return runs.open_run(run_id) if run_id else runs.new_run(profile)


def begin(
    phase: str,
    *,
    profile: str = "smoke",
    target: str = "lab",
    params_files: str | Iterable[str] = (),
    run_id: str = "",
) -> PhaseContext:
    """Validate the parameters, open (or create) the run, find the target and record it.

    Bad parameters fail here, before anything starts. A phase that already has metrics in the run
    is refused: a new run is needed. So is a target another run holds; under ``ragperf run`` the
    kernel goes on under its parent's hold, else it holds the target itself until it ends.
    """
    params_mod.check_phase(phase)
    params = load_params(profile, target, params_files)
    params_mod.preflight([phase], params)
    target_id = targetlock.params_target(params, lab.default_lab_dir())
    hold = targetlock.hold_for_process(target_id, command=targetlock.kernel_command(phase))
    run = _open_run(params.profile, run_id)
    if hold is not None:
        hold.name_run(run.id)
    out = run.path / phase
    if (out / "metrics.json").exists():
        raise runs.PhaseExistsError(f"run {run.id} already has {phase}/metrics.json: start a new run instead")
    out.mkdir(exist_ok=True)
    tgt = targets.resolve_target(params)
    install_log_filter([tgt.lab_dir / "secrets.json"] if tgt.lab_dir else [])
    if tgt.lab_dir is not None:  # so that `ragperf lab reset` can undo this phase from its journal
        lab.register_journal(tgt.lab_dir, out / changes.JOURNAL)
    if phase == BASELINE_PHASE and tgt.kind == "lab":
        tgt.servers["lab_reset"] = rollback.reset_lab(tgt.lab_dir) or "already untuned"
    health = targets.check_reachable(tgt)
    runs.write_manifest(
        run,
        {**params.model_dump(mode="json"), "target_name": target},
        phase=phase,
        extra={**tgt.servers, "target": tgt.kind, "base_url": tgt.base_url, "health": health},
        conninfo=tgt.admin_dsn,
        password=tgt.password,
    )
    ctx = PhaseContext(phase, params, run, out, tgt)
    ctx.workloads = workloads(ctx)
    return ctx


def workloads(ctx: PhaseContext) -> Workloads:
    """The in-order set, the Zipf (or replayed) stream, and the questions neither asks."""
    load, wl = ctx.params.load, ctx.params.workload
    key, count = f"{ctx.run.id}/{ctx.phase}", load.cache_speedup_questions
    if wl.kind == "replay":
        log_items = replay_workload(wl.log_file)
        unique = list({(i.question, i.mode): i for i in log_items}.values())
        return Workloads(log_items[: load.query_latency_questions], log_items, unique, count,
                         f"replay of {wl.log_file}", key)  # fmt: skip
    questions = question_pool(ctx)
    in_order = in_order_workload(questions, load.query_latency_questions)
    stream = zipf_workload(questions, ZIPF_DRAWS, wl.zipf_exponent, wl.seed)
    used = {(i.question, i.mode) for i in [*in_order, *stream]}
    spare = [i for i in read_pool(questions) if (i.question, i.mode) not in used]
    return Workloads(in_order, stream, spare, count, f"question pool {questions} with Zipf exponent {wl.zipf_exponent}",
                     key)  # fmt: skip


def question_pool(ctx: PhaseContext) -> Path:
    """The lab's question pool, generated into the run when the target is not the lab."""
    if ctx.target.questions_file is not None:
        return ctx.target.questions_file
    from ragperf_lab import corpus

    path = ctx.run.path / "questions.jsonl"
    if not path.exists():
        corpus.write_questions_jsonl(path, corpus.question_pool(ctx.params.profile))
    return path


def measure(
    ctx: PhaseContext, on_step: Callable[[LoadResult, dict], None] | None = None, label: str = ""
) -> Measurement:
    """The four scenarios against the target, in the order the users ran them (``label``: which measurement
    of the phase this is, so that its cache test asks questions no earlier measurement asked)."""
    if ctx.workloads is None:
        raise RuntimeError("measure() needs begin()'s workloads")
    base, w, p, out = ctx.target.base_url, ctx.workloads, ctx.params, ctx.dir(label)
    return Measurement(
        query_latency=scenarios.query_latency_test(base, w.in_order, p, out),
        fixed=scenarios.fixed_concurrency(base, w.concurrent, p, out),
        ladder=scenarios.step_ladder(base, w.concurrent, p, out, on_step=on_step),
        cache=scenarios.cache_speedup(base, w.fresh(label), p, out),
    )


def phase_metrics(
    ctx: PhaseContext, m: Measurement, extra: Mapping[str, float | None] | None = None, label: str = ""
) -> dict:
    """metrics.json's content for the measurement."""
    return metrics.phase_metrics(
        query_latency=m.query_latency.records,
        questions_total=len(ctx.workloads.in_order) if ctx.workloads else None,
        time_limit_s=ctx.params.load.query_latency_time_limit_s,
        fixed=scenarios.all_records(m.fixed),
        ladder=scenarios.all_records(m.ladder.results),
        slo=ctx.slo,
        cache=m.cache.records,
        extra=extra,
        phase=f"{ctx.phase}/{label}" if label else ctx.phase,
    )


def finish(
    ctx: PhaseContext,
    m: Measurement,
    figures: Mapping[str, Any],
    extra: Mapping | None = None,
    label: str = "",
    sections: Mapping[str, Any] | None = None,
) -> dict:
    """Write ``metrics.json``, ``requests.parquet`` and the charts (into the ``label`` subdirectory for one of
    several measurements of the phase); check the legacy service is untouched. ``sections`` are further
    top-level parts of metrics.json (a phase's own details)."""
    out = ctx.dir(label)
    result = phase_metrics(ctx, m, extra, label)
    result["generator_notes"] = m.generator_notes()
    result.update(metrics.plain(sections or {}))
    m.records().to_parquet(out / "requests.parquet", index=False)
    for name, fig in figures.items():
        charts.save(fig, out / f"{name}.png")
    differences = frozen.differences()
    if differences:
        raise RuntimeError(f"the frozen legacy service changed during {ctx.phase}: {differences}")
    metrics.write_metrics_json(out / "metrics.json", result)
    return result


def figures(ctx: PhaseContext, m: Measurement) -> dict[str, Any]:
    """The standard charts of a measurement, by file name: latency distributions at the fixed steps,
    percentiles, throughput and failures against users on the ladder."""
    records = scenarios.all_records(m.fixed, m.ladder.results)
    steps = metrics.summarize_steps(records)
    return {
        "latency_distributions": charts.latency_distributions(scenarios.all_records(m.fixed)),
        "percentiles_vs_users": charts.percentiles_vs_users(steps, ctx.slo, scenario="ladder", records=records),
        "throughput_vs_users": charts.throughput_vs_users(steps, scenario="ladder", records=records),
        "failures_by_class": charts.failures_by_class(steps),
    }


def show_step(result: LoadResult, summary: Mapping[str, Any], slo: Slo) -> None:
    """One line per ladder step as it finishes: p95, success, throughput, and whether it holds the SLO."""
    verdict = "holds" if metrics.holds(summary, slo) else "BREAKS the SLO"
    print(f"{result.step:>10}: p95 {summary['p95']:6.2f} s, success {summary['success_rate']:5.1f} %, "
          f"{summary['throughput_rps']:5.2f} answers/s -> {verdict}")  # fmt: skip


def steps_frame(records: pd.DataFrame, scenario_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-step numbers (one row per scenario and step), optionally of some scenarios only."""
    steps = metrics.summarize_steps(records)
    return steps if scenario_names is None else steps[steps["scenario"].isin(scenario_names)]


KEY_SETTINGS = ("max_connections", "shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem",
                "random_page_cost", "effective_io_concurrency", "max_parallel_workers_per_gather",
                "shared_preload_libraries", "statement_timeout")  # fmt: skip


def key_settings(ctx: PhaseContext, names: Sequence[str] = KEY_SETTINGS) -> pd.DataFrame:
    """The PostgreSQL settings a phase cares about, from the snapshot in the run's manifest."""
    snapshot = ctx.run.manifest()["phases"][ctx.phase].get("pg_settings") or {}
    if "error" in snapshot or not snapshot:
        return pd.DataFrame({"note": [snapshot.get("error", "no database access was given: settings not recorded")]})
    rows = [{"name": n, **snapshot[n]} for n in names if n in snapshot]
    return pd.DataFrame(rows).set_index("name")


def describe(ctx: PhaseContext) -> str:
    """What is measured, where the results go, in Markdown."""
    t, w = ctx.target, ctx.workloads
    corpus = t.servers.get("corpus") or {}
    lines = [
        f"**Run** `{ctx.run.id}` · phase directory `{ctx.out}`",
        f"**Target**: {t.kind} · service {t.base_url} · database `{t.admin_dsn or 'not given'}` (password not shown)",
    ]
    if corpus:
        lines.append(f"**Corpus**: {corpus.get('chunks')} chunks, {corpus.get('questions')} questions in the pool")
    if w:
        lines.append(f"**Workload**: {w.source}; {len(w.in_order)} questions in order, "
                     f"{w.fresh_count} never-asked questions for the cache test")  # fmt: skip
    load, slo = ctx.params.load, ctx.params.slo
    lines.append(f"**SLO**: p95 < {slo.p95_s:g} s and success ≥ {slo.success_rate_pct:g} % · request timeout "
                 f"{load.timeout_s:g} s · fixed steps {list(load.fixed_users)} × {load.fixed_duration_s:g} s · "
                 f"ladder {list(load.ladder_users)} × {load.ladder_step_s:g} s")  # fmt: skip
    return "\n\n".join(lines)


def slo_verdict(result: Mapping[str, Any], slo: Slo) -> str:
    """The measurement against the run's SLO, in words."""
    lines = []
    for users in (5, 10):
        p95 = metrics.value_of(result, f"response_time_{users}_users")
        rate = metrics.value_of(result, f"success_rate_{users}_users")
        if p95 is None or rate is None:
            continue
        held = p95 < slo.p95_s and rate >= slo.success_rate_pct
        lines.append(f"- At {users} users, p95 is {p95:.2f} s and {rate:.1f} % of requests succeed: "
                     f"the SLO (p95 < {slo.p95_s:g} s, success ≥ {slo.success_rate_pct:g} %) "
                     f"{'holds' if held else 'is broken'}.")  # fmt: skip
    ladder = result.get("ladder") or {}
    capacity = metrics.value_of(result, "max_concurrent_users")
    if ladder:
        broke = ladder.get("first_breaking_step")
        tail = f"it first broke at {broke}" if broke else "every step held, so this is a lower bound"
        lines.append(f"- The service holds the SLO up to **{capacity:g} concurrent users**; {tail}.")
    ratio = metrics.value_of(result, "cache_speedup")
    if ratio is not None:
        lines.append(f"- Asking the same question again is {ratio:.2f}x faster (the users measured 1.24x).")
    return "\n".join(lines)


def baseline_ref(ctx: PhaseContext, baseline: str, phase: str) -> str:
    """What to compare this phase with: ``baseline`` when given, else ``phase`` of this run when it has it, else
    the newest run's ``phase``."""
    if baseline:
        return baseline
    return f"{ctx.run.id}:{phase}" if (ctx.run.path / phase / "metrics.json").exists() else phase


def comparisons(pairs: Sequence[tuple[str, str]]) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """:func:`ragperf.runs.compare_runs` of each (old, new) pair: the tables by heading, and a note for each
    pair that cannot be compared (a phase not measured)."""

    tables: dict[str, pd.DataFrame] = {}
    missing: list[str] = []
    for old, new in pairs:
        try:
            table, heading = runs.compare_runs(old, new)
        except FileNotFoundError as exc:
            missing.append(f"no comparison {old} → {new}: {exc}")
            continue
        tables[heading] = table
    return tables, missing


def show_comparisons(ctx: PhaseContext, pairs: Sequence[tuple[str, str]]) -> dict[str, pd.DataFrame]:
    """Each comparison in words, then the first one's charts: the run's metrics as ratios (``compare.png``) and
    each load step's (``compare_steps.png``); returns the tables."""
    from IPython.display import Markdown, display

    from ragperf.measure import compare

    tables, missing = comparisons(pairs)
    for note in missing:
        print(note)
    for heading, table in tables.items():
        display(Markdown(f"### {heading}\n\n" + compare.compare_text(table).replace("\n- ", "\n\n- ")))
    if tables:
        first = next(iter(tables.values()))
        for name, chart in (
            ("compare", comparecharts.compare_chart),
            ("compare_steps", comparecharts.compare_steps_chart),
        ):
            fig = chart(first)
            charts.save(fig, ctx.out / f"{name}.png")
            display(fig)
    return tables


def verdict(ctx: PhaseContext, result: Mapping[str, Any], impact: pd.DataFrame) -> str:
    """The phase's verdict in Markdown: its criteria, the SLO, and how many of the plan's expected impacts were met.

    The impacts are also kept in the phase's metrics.json (``expected_impact``), where the report reads them."""
    path = ctx.out / "metrics.json"
    if path.exists():
        metrics.write_metrics_json(
            path, {**metrics.read_metrics_json(path), "expected_impact": impact.to_dict("records")}
        )
    met = int((impact["met"] == "met").sum()) if "met" in impact else 0
    return "\n\n".join([verdicts.verdict_text(result, ctx.phase, ctx.criteria), slo_verdict(result, ctx.slo),
                        f"Of the plan's {len(impact)} expected impacts, {met} were met."])  # fmt: skip
