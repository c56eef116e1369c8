"""The stakeholders' report: one self-contained HTML page per run, without code, and a PDF of it.

The first page reads in two minutes: the plan's final verdict in words, the users' seven metrics from the first
phase of the run to the last beside the plan's targets, one chart of what each phase contributed, each phase
against its own criteria, the plan's expected impacts against what was measured, what is still not met and why,
and how each phase is rolled back. One section per executed phase notebook follows (code cells' sources and
prompts left out, images inline with their alternative text), then the run's provenance: revision, parameters
(secrets redacted), versions, host. No script or image is fetched from the network. The page is checked for
known secrets before it is written, and not written if one is found; the PDF is printed from it by headless
Chromium (:mod:`ragperf.core.chromium`).
"""

from __future__ import annotations

import base64
import copy
import html
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from ragperf import runs
from ragperf.core import changes, chromium, procs
from ragperf.core.criteria import CRITERIA_USERS, PHASE_CRITERIA
from ragperf.core.redact import SecretLeakError, find_secrets, known_secrets, redact, scan_for_secrets, scrub_message
from ragperf.measure import charts, metrics, verdicts

if TYPE_CHECKING:
    from nbformat import NotebookNode

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
PDF_NAME = "report.pdf"
CHART_NAME = "report-contributions.png"
PACKAGES = ("ragperf", "locust", "papermill", "nbconvert", "pandas", "psycopg", "pgvector", "langchain-postgres")
ROLLBACK_WHAT = {
    "phase1": "PostgreSQL's settings, the column's type, the indexes, the app role's settings, host settings",
    "phase2": "nginx, the cache add-on and Redis stopped; the app serves at its own URL",
    "phase3": "every monitoring process stopped, the monitoring role and views dropped, nginx back to Phase 2's",
    "phase4": "the balancer, supervisord (every instance) and PgBouncer stopped, the cache add-on back to the app",
}
_TEMPLATE_NAME = "ragperf_report.html.j2"
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock %}
{% block html_head_js_mathjax %}{% endblock %}
{% block html_head_js_mermaidjs %}{% endblock %}
{% block extra_css %}<style>
.ragperf-summary { padding: 1em 2em; max-width: 70em; }
.ragperf-summary th { text-align: left; } .ragperf-summary td, .ragperf-summary th { padding: .2em .6em; }
.ragperf-summary table { border-collapse: collapse; margin: .5em 0 1em; }
.ragperf-summary tbody tr:nth-child(odd) { background: #f4f4f4; }
.ragperf-summary img { max-width: 100%; }
.ragperf-met { color: #1b7a5e; font-weight: bold; } .ragperf-notmet { color: #b34700; font-weight: bold; }
.ragperf-headline { font-size: 125%; }
.ragperf-phase { margin-top: 2em; border-top: 2px solid #888; padding: .5em 2em 0; break-before: page; }
.ragperf-phase a, .ragperf-provenance h1 a { font-size: 60%; font-weight: normal; margin-left: 1em; }
.ragperf-provenance { padding: 1em 2em; break-before: page; }
.ragperf-provenance pre { white-space: pre-wrap; font-size: 80%; }
@media print { .ragperf-summary, .ragperf-provenance { padding: 0; } }
</style>{% endblock extra_css %}
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
 alt="{{ (output | get_metadata('alt', 'image/png')) or 'A chart of this phase' | escape_html }}">
</div>
{% endblock data_png %}
{% block body_header %}{{ super() }}{{ resources.ragperf_summary }}{% endblock body_header %}
{% block body_footer %}{{ resources.ragperf_provenance }}{{ super() }}{% endblock body_footer %}
"""


class ReportError(RuntimeError):
    """The report cannot be made from this run."""


@dataclass(frozen=True)
class Report:
    """What ``render_report`` wrote: the page, and its PDF (None when Chromium could not print it: ``pdf_error``)."""

    html: Path
    pdf: Path | None
    pdf_error: str = ""


def render_report(
    run_id_or_path: str | Path, *, secret_files: Iterable[Path] | None = None, pdf: bool = True
) -> Report:
    """Render ``<run>/report.html`` from the run's executed phase notebooks, and print it to ``<run>/report.pdf``.

    Args:
        run_id_or_path: a run id under the outputs directory, or a run directory.
        secret_files: JSON files whose values are secrets to check for; by default the lab's
            secrets.json when there is one.
        pdf: print the PDF too (headless Chromium); without Chromium the page is still written and
            ``Report.pdf_error`` says why there is no PDF.

    Raises:
        ReportError: the run has no executed phase notebook.
        SecretLeakError: the page would contain a known secret; nothing is written.
    """
    run = runs.open_run(run_id_or_path)
    phases = run.phases()
    notebooks = {phase: run.notebook_path(phase) for phase in phases if run.notebook_path(phase).exists()}
    if not notebooks:
        raise ReportError(f"run {run.id} has no executed phase notebook (<phase>.ipynb) in {run.path}")
    secrets = known_secrets(_default_secret_files() if secret_files is None else secret_files)
    manifest = run.manifest()
    found = gather(run)
    summary = first_page(run, manifest, notebooks, found)
    page = _export(_combined(notebooks), run, summary, provenance_html(run, manifest, secrets))

    target = run.path / REPORT_NAME
    if hints := find_secrets(page.encode(), secrets):
        sources = sorted({str(path.relative_to(run.path)) for path, _ in scan_for_secrets(run.path, secrets)})
        raise SecretLeakError(
            f"refusing to write {target}: it would contain a known secret ({hints[0]}); "
            f"found in {', '.join(sources) if sources else 'the rendered page only'}"
        )
    procs.write_atomic(target, page)
    log.info("report of run %s: %s", run.id, target)
    if not pdf:
        return Report(target, None, "not asked for")
    try:
        return Report(target, chromium.print_pdf(target, run.path / PDF_NAME))
    except chromium.ChromiumError as exc:
        log.warning("report of run %s: no PDF: %s", run.id, exc)
        return Report(target, None, str(exc))


# --- the first page -----------------------------------------------------------------------------------------


def gather(run: runs.Run) -> verdicts.Found:
    """The run's own phases, in the plan's order: metrics, requests and ``run:phase`` (unreadable ones left out,
    with a warning)."""
    found: verdicts.Found = {}
    for phase in run.phases():
        path = run.path / phase / "metrics.json"
        if not path.exists():
            continue
        try:
            result = metrics.read_metrics_json(path)
        except (OSError, ValueError) as exc:
            log.warning("report of run %s: %s left out: %s", run.id, path.relative_to(run.path), exc)
            continue
        parquet = path.with_name("requests.parquet")
        found[phase] = (result, pd.read_parquet(parquet) if parquet.exists() else None, f"{run.id}:{phase}")
    return found


def _cell(value: Any, unit: str) -> str:
    return metrics.format_value(None if value is None or pd.isna(value) else float(value), unit)


def _verdict(word: str) -> str:
    css = {"met": "ragperf-met", "not met": "ragperf-notmet"}.get(word)
    return f'<span class="{css}">{html.escape(word)}</span>' if css else html.escape(word)


def metric_sentences(table: pd.DataFrame, phases: Sequence[str]) -> list[str]:
    """Each of the seven metrics in words, first phase to last: ``p95 at 10 users: 9.1 s → 0.9 s; target < 1.5 s:
    met`` (plain text; the unmeasured ends left out)."""
    lines = []
    for row in table.to_dict("records"):
        measured = [(p, row.get(p)) for p in phases if row.get(p) is not None and not pd.isna(row.get(p))]
        if not measured:
            text = f"{row['metric']}: not measured"
        elif len(measured) == 1:
            text = f"{row['metric']}: {_cell(measured[0][1], row['unit'])} ({measured[0][0]})"
        else:
            (first, a), (last, b) = measured[0], measured[-1]
            text = f"{row['metric']}: {_cell(a, row['unit'])} → {_cell(b, row['unit'])} ({first} → {last})"
        target = row["plan's target"]
        if target != "—":
            text += f"; target {target}: {row['met']}"
        else:
            text += "; the plan sets no target for it"
        lines.append(text)
    return lines


def contributions(found: verdicts.Found) -> pd.DataFrame:
    """Per phase: p95 at 10 users on all requests and on the misses alone, and the users it held (a lower bound
    when every step of its ladder held)."""
    misses = verdicts.misses_table(found)
    misses = misses.set_index("phase") if not misses.empty else misses
    rows = []
    for phase, (result, _, _) in found.items():
        ladder = result.get("ladder") or {}
        rows.append({
            "phase": phase,
            "p95_s": metrics.value_of(result, f"response_time_{CRITERIA_USERS}_users"),
            "misses_p95_s": misses.loc[phase, "misses_p95_s"] if phase in misses.index and phase != "phase0" else None,
            "users": metrics.value_of(result, "max_concurrent_users"),
            "users_at_least": bool(ladder.get("all_steps_held")),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=["phase", "p95_s", "misses_p95_s", "users", "users_at_least"])


def gaps(found: verdicts.Found, table: pd.DataFrame) -> list[str]:
    """What is still not met, and why, in sentences: the plan's targets, each phase's criteria, the expected
    impacts, and a target that holds only thanks to the caches."""
    lines = []
    last_phase = next(reversed(found), None)
    for row in table.to_dict("records"):
        if row["met"] == "not met" and last_phase:
            result = found[last_phase][0]
            why = ""
            if row["unit"] == "users" and (result.get("ladder") or {}).get("all_steps_held"):
                why = (": a lower bound, since every step of the run's ladder held and the ladder stopped there; a "
                       "longer ladder (the demo profile's) measures further")  # fmt: skip
            target = row["plan's target"]
            lines.append(f"The plan's target for {row['metric']} ({target}) is not met: "
                         f"{_cell(row.get(last_phase), row['unit'])} in {last_phase}{why}.")  # fmt: skip
    for phase, (result, _, _) in found.items():
        if phase not in PHASE_CRITERIA:
            continue
        for r in verdicts.criteria_table(result, phase).to_dict("records"):
            if r["result"] != "pass":
                note = f" ({r['note']})" if r.get("note") else ""
                lines.append(f"{phase}'s criterion {r['criterion'].lower()} {r['target']} was {r['result']}: "
                             f"measured {_cell(r['measured'], r['unit'])}{note}.")  # fmt: skip
        for r in result.get("expected_impact") or []:
            if r.get("met") != "met":
                lines.append(f"{phase}: the plan expected “{r['expected (PLAN.md)']}”; measured: {r['measured']}.")
    for r in verdicts.misses_table(found).to_dict("records"):
        if r["phase"] != "phase0" and r["missed_pct"] < 100 and not r["misses_meet_final_target"]:
            lines.append(f"{r['phase']}: at 10 users {r['missed_pct']:.0f} % of the requests missed every cache; "
                         f"those alone had p95 {_cell(r['misses_p95_s'], 's')} and "
                         f"{_cell(r['misses_success_rate'], '%')} success, so the final target rests on the caches "
                         "there.")  # fmt: skip
    return lines


def rollbacks(run: runs.Run) -> pd.DataFrame:
    """How each phase of the run is rolled back, and whether anything of it is still applied (from its journal)."""
    rows = []
    for phase in run.phases():
        journal = changes.Journal(run.path / phase)
        entries = journal.entries()
        outstanding = journal.outstanding()
        if not entries:
            state, how = "changed nothing (it measures only)", "nothing to roll back"
        elif outstanding:
            kinds = ", ".join(dict.fromkeys(c.kind for c in outstanding))
            state = f"{len(outstanding)} change{'s' if len(outstanding) > 1 else ''} still applied ({kinds})"
            how = f"ragperf rollback {phase} --run {run.id}"
        else:
            state, how = "rolled back: its journal shows every change undone", "—"
        rows.append({"phase": phase, "what rollback undoes": ROLLBACK_WHAT.get(phase, "what its journal records"),
                     "now": state, "command": how})  # fmt: skip
    return pd.DataFrame(rows, columns=["phase", "what rollback undoes", "now", "command"])


def _table(frame: pd.DataFrame, *, verdict_columns: Sequence[str] = ("met", "verdict")) -> str:
    if frame.empty:
        return "<p>Nothing recorded.</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(
            f"<td>{_verdict(str(v)) if c in verdict_columns else html.escape(str(v))}</td>"
            for c, v in zip(frame.columns, row, strict=True)
        ) + "</tr>"
        for row in frame.itertuples(index=False)
    )  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metrics_frame(table: pd.DataFrame, phases: Sequence[str]) -> pd.DataFrame:
    shown = pd.DataFrame({"metric": table["metric"], "the users reported": table["users reported"]})
    for phase in phases:
        shown[phase] = [_cell(v, u) for v, u in zip(table[phase], table["unit"], strict=True)]
    shown["plan's target"] = table["plan's target"]
    shown["met"] = table["met"]
    return shown


def _chart_html(run: runs.Run, frame: pd.DataFrame) -> str:
    final = PHASE_CRITERIA["phase4"]
    fig = charts.phase_contributions(frame, p95_target_s=final.p95_s, users_target=final.min_users)
    png = charts.save(fig, run.path / CHART_NAME).read_bytes()
    alt = html.escape(charts.alt_text(fig))
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{alt}">'


def first_page(run: runs.Run, manifest: Mapping[str, Any], notebooks: Mapping[str, Path], found: verdicts.Found) -> str:
    """The first page, as HTML: the verdict in words, the seven metrics, the chart, criteria, impacts, gaps,
    rollback, and links to the phases' sections."""
    phases = list(found)
    git = manifest.get("git") or {}
    facts = (f"Run {run.id} · {_run_date(run, manifest)} · revision {git.get('short') or 'not recorded'} · "
             f"profile {manifest.get('profile') or 'not recorded'} · legacy service "
             f"{_legacy_status(manifest.get('phases') or {})}")  # fmt: skip
    parts = ['<section id="summary" class="ragperf-summary jp-RenderedHTMLCommon">',
             f"<h1>Performance report</h1><p>{html.escape(facts)}</p>"]  # fmt: skip
    if not found:
        parts.append("<p>No phase of this run recorded its metrics: there is no verdict to give.</p>")
    else:
        table = verdicts.metrics_table(found)
        targets = table[table["plan's target"] != "—"]
        met = int((targets["met"] == "met").sum())
        final = PHASE_CRITERIA["phase4"]
        goal = (f"p95 under {final.p95_s:g} s and success of at least {final.success_rate_pct:g} % at "
                f"{CRITERIA_USERS} users, {final.min_users}+ concurrent users")  # fmt: skip
        headline = (f"The plan's final target ({goal}) is met after {phases[-1]}." if met == len(targets) else
                    f"The plan's final target ({goal}) is not met after {phases[-1]}: {met} of {len(targets)} "
                    "targets are.")  # fmt: skip
        sentences = "".join(f"<li>{html.escape(s)}</li>" for s in metric_sentences(table, phases))
        parts += [f'<h2>Verdict</h2><p class="ragperf-headline">{html.escape(headline)}</p><ul>{sentences}</ul>',
                  _chart_html(run, contributions(found)),
                  "<h2>The users' seven metrics, phase by phase</h2>", _table(_metrics_frame(table, phases)),
                  "<h2>Each phase against its own success criteria</h2>",
                  _table(verdicts.criteria_summary(found).drop(columns=["from"], errors="ignore"))]  # fmt: skip
        impacts = [
            (p, pd.DataFrame(r["expected_impact"])) for p, (r, _, _) in found.items() if r.get("expected_impact")
        ]
        parts.append("<h2>The plan's expected impacts, against what was measured</h2>")
        parts += [f"<h3>{html.escape(p)}</h3>{_table(frame)}" for p, frame in impacts] or ["<p>None recorded.</p>"]
        missing = gaps(found, table)
        parts.append("<h2>Not met yet, and why</h2>" + (
            "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in missing) + "</ul>" if missing
            else "<p>Everything the plan set out is met in this run.</p>"))  # fmt: skip
    parts += ["<h2>Rolling back</h2>", _table(rollbacks(run), verdict_columns=())]
    links = "".join(
        f'<li><a href="#phase-{html.escape(p)}">{html.escape(p)}</a></li>' if p in notebooks
        else f"<li>{html.escape(p)}: no executed notebook</li>"
        for p in run.phases()
    )  # fmt: skip
    parts.append(f'<h2>Contents</h2><ul>{links}<li><a href="#provenance">provenance</a></li></ul></section>')
    return "".join(parts)


# --- provenance ---------------------------------------------------------------------------------------------


def provenance_html(run: runs.Run, manifest: Mapping[str, Any], secrets: Sequence[str] = ()) -> str:
    """Revision, parameters (already redacted in the manifest, and masked again), versions and host, per phase."""
    git = manifest.get("git") or {}
    revision = str(git.get("revision") or "not recorded") + (" (with uncommitted changes)" if git.get("dirty") else "")
    parts = ['<section id="provenance" class="ragperf-provenance jp-RenderedHTMLCommon">',
             '<h1>Provenance<a href="#summary">summary</a></h1>',
             _table(pd.DataFrame([("run", run.id), ("created", _run_date(run, manifest)), ("git revision", revision),
                                  ("profile", manifest.get("profile") or "not recorded")],
                                 columns=["", "value"]), verdict_columns=())]  # fmt: skip
    for phase, entry in (manifest.get("phases") or {}).items():
        packages = entry.get("packages") or {}
        versions = {name: packages[name] for name in PACKAGES if name in packages}
        python = (entry.get("python") or {}).get("version")
        host = entry.get("host") or {}
        facts = [("recorded", entry.get("recorded")), ("python", python),
                 ("packages", ", ".join(f"{k} {v}" for k, v in versions.items())),
                 ("servers", "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "source")
                                       if isinstance(info, Mapping) else f"{name}: {info}"
                                       for name, info in (entry.get("servers") or {}).items())),
                 ("host", ", ".join(f"{k} {v}" for k, v in host.items())),
                 ("reproduce", entry.get("reproduce"))]  # fmt: skip
        params = yaml.safe_dump(redact(entry.get("params") or {}), sort_keys=False, allow_unicode=True)
        parts += [f"<h2>{html.escape(phase)}</h2>",
                  _table(pd.DataFrame([(k, v) for k, v in facts if v], columns=["", "value"]), verdict_columns=()),
                  f"<details><summary>parameters</summary><pre>{html.escape(params)}</pre></details>"]  # fmt: skip
    parts.append("</section>")
    return scrub_message("".join(parts), secrets)


# --- the page -----------------------------------------------------------------------------------------------


def _combined(notebooks: Mapping[str, Path]) -> NotebookNode:
    """One notebook: for each phase, a heading with an anchor, then the phase's cells."""
    import nbformat  # nbformat and nbconvert take seconds to import: only when a report is made

    combined = nbformat.v4.new_notebook()
    for phase, path in notebooks.items():
        try:
            nb = nbformat.read(path, as_version=4)
        except (OSError, ValueError) as exc:  # a notebook cut short by a killed run: say so, show the rest
            log.warning("cannot read %s: %s", path, exc)
            nb = nbformat.v4.new_notebook()
            nb.cells = [nbformat.v4.new_markdown_cell(f"**{path.name} could not be read:** `{exc}`")]
        for key in ("kernelspec", "language_info"):
            if key in nb.metadata and key not in combined.metadata:
                combined.metadata[key] = nb.metadata[key]
        heading = (
            f'<h1 class="ragperf-phase" id="phase-{html.escape(phase)}">{html.escape(phase)}'
            f'<a href="#summary">summary</a></h1>'
        )
        combined.cells.append(nbformat.v4.new_markdown_cell(heading))
        for number, cell in enumerate(nb.cells):
            cell = copy.deepcopy(cell)
            cell["id"] = f"{phase}-{number}"
            combined.cells.append(cell)
    return combined


def _export(nb: NotebookNode, run: runs.Run, summary: str, provenance: str) -> str:
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
        template_file=_TEMPLATE_NAME,
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    resources = {"metadata": {"path": str(run.path), "name": f"ragperf run {run.id}"}, "ragperf_summary": summary,
                 "ragperf_provenance": provenance}  # fmt: skip
    page, _ = exporter.from_notebook_node(nb, resources=resources)
    if external := sorted(set(re.findall(r'<img[^>]*\ssrc="(?!data:)([^"]*)"', page))):
        log.warning("report of run %s: images not embedded (not found or remote): %s", run.id, ", ".join(external))
    return page


def _run_date(run: runs.Run, manifest: Mapping[str, Any]) -> str:
    if created := manifest.get("created"):
        return str(created)
    match = re.match(r"^\d{8}T\d{6}Z", run.id)
    if match:
        return datetime.strptime(match[0], runs.TIMESTAMP_FORMAT).replace(tzinfo=UTC).isoformat(timespec="seconds")
    return "not recorded"


def _legacy_status(phases: Mapping[str, Any]) -> str:
    """One line: unchanged in every phase, or which phase saw what change."""
    statuses = {phase: entry.get("legacy") or {} for phase, entry in phases.items()}
    if not statuses:
        return "not recorded"
    if all(s.get("status") == "unchanged" for s in statuses.values()):
        digests = {s.get("digest") for s in statuses.values()}
        return f"unchanged (manifest digest {', '.join(str(d)[:12] for d in digests)})"
    return "; ".join(
        f"{phase}: {s.get('status', 'not recorded')}"
        + (f" ({', '.join(s['differences'])})" if s.get("differences") else "")
        for phase, s in statuses.items()
    )


def _default_secret_files() -> list[Path]:
    """The lab's secrets.json, when this checkout has a lab."""
    from ragperf import lab

    path = lab.default_lab_dir() / "secrets.json"
    if not path.is_file():
        return []
    if not os.access(path, os.R_OK):
        log.warning("cannot read %s: the report is not checked for the lab's passwords", path)
        return []
    return [path]
