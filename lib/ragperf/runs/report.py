"""The stakeholders' report: one self-contained HTML page per run, without code.

A summary (run, date, revision, profile, whether the legacy service stayed untouched, the
key figures of each phase's metrics.json) heads one section per executed phase notebook,
in phase order. Code cells' sources and prompts are left out; images are inline (base64);
no script is fetched from the network. The page is checked for known secrets before it
is written, and not written if one is found.
"""

from __future__ import annotations

import copy
import html
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragperf import runs
from ragperf.core import procs
from ragperf.core.redact import SecretLeakError, find_secrets, known_secrets, scan_for_secrets

if TYPE_CHECKING:
    from nbformat import NotebookNode

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
_TEMPLATE_NAME = "ragperf_report.html.j2"
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock %}
{% block html_head_js_mathjax %}{% endblock %}
{% block html_head_js_mermaidjs %}{% endblock %}
{% block extra_css %}<style>
.ragperf-summary { padding: 1em 2em; } .ragperf-summary th { text-align: left; }
.ragperf-phase { margin-top: 2em; border-top: 2px solid #888; padding: .5em 2em 0; }
.ragperf-phase a { font-size: 60%; font-weight: normal; margin-left: 1em; }
</style>{% endblock extra_css %}
{% block body_header %}{{ super() }}{{ resources.ragperf_summary }}{% endblock body_header %}
"""
_MAX_TEXT = 80


class ReportError(RuntimeError):
    """The report cannot be made from this run."""


def render_report(run_id_or_path: str | Path, *, secret_files: Iterable[Path] | None = None) -> Path:
    """Render ``<run>/report.html`` from the run's executed phase notebooks.

    Args:
        run_id_or_path: a run id under the outputs directory, or a run directory.
        secret_files: JSON files whose values are secrets to check for; by default the lab's
            secrets.json when there is one.

    Raises:
        ReportError: the run has no executed phase notebook.
        SecretLeakError: the page would contain a known secret; nothing is written.
    """
    run = runs.open_run(run_id_or_path)
    phases = run.phases()
    notebooks = {phase: run.notebook_path(phase) for phase in phases if run.notebook_path(phase).exists()}
    if not notebooks:
        raise ReportError(f"run {run.id} has no executed phase notebook (<phase>.ipynb) in {run.path}")
    manifest = run.manifest()
    metrics = {phase: _read_metrics(run.path / phase / "metrics.json") for phase in phases}
    page = _export(_combined(notebooks), run, summary_html(run, manifest, notebooks, metrics))

    target = run.path / REPORT_NAME
    secrets = known_secrets(_default_secret_files() if secret_files is None else secret_files)
    if hints := find_secrets(page.encode(), secrets):
        sources = sorted({str(path.relative_to(run.path)) for path, _ in scan_for_secrets(run.path, secrets)})
        raise SecretLeakError(
            f"refusing to write {target}: it would contain a known secret ({hints[0]}); "
            f"found in {', '.join(sources) if sources else 'the rendered page only'}"
        )
    procs.write_atomic(target, page)
    log.info("report of run %s: %s", run.id, target)
    return target


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


def _export(nb: NotebookNode, run: runs.Run, summary: str) -> str:
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
    resources = {"metadata": {"path": str(run.path), "name": f"ragperf run {run.id}"}, "ragperf_summary": summary}
    page, _ = exporter.from_notebook_node(nb, resources=resources)
    if external := sorted(set(re.findall(r'<img[^>]*\ssrc="(?!data:)([^"]*)"', page))):
        log.warning("report of run %s: images not embedded (not found or remote): %s", run.id, ", ".join(external))
    return page


def summary_html(
    run: runs.Run, manifest: Mapping[str, Any], notebooks: Mapping[str, Path], metrics: Mapping[str, dict | None]
) -> str:
    """The summary page: what ran, on which revision, whether the legacy service was untouched, key figures."""
    git = manifest.get("git") or {}
    revision = git.get("revision") or git.get("short") or "not recorded"
    if git.get("dirty"):
        revision += " (with uncommitted changes)"
    facts = [
        ("Run", run.id),
        ("Date", _run_date(run, manifest)),
        ("Git revision", revision),
        ("Profile", manifest.get("profile") or "not recorded"),
        ("Legacy service", _legacy_status(manifest.get("phases") or {})),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    links = "".join(
        f'<li><a href="#phase-{html.escape(p)}">{html.escape(p)}</a></li>'
        if p in notebooks
        else f"<li>{html.escape(p)}: no executed notebook</li>"
        for p in metrics
    )
    return (
        f'<section id="summary" class="ragperf-summary jp-RenderedHTMLCommon">'
        f"<h1>Performance report, run {html.escape(run.id)}</h1><table>{rows}</table>"
        f"<h2>Phases</h2><ul>{links}</ul>{_figures_table(metrics)}</section>"
    )


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


def _read_metrics(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"metrics.json": f"unreadable: {exc}"}
    return data if isinstance(data, dict) else {"metrics.json": f"not an object but {type(data).__name__}"}


def key_figures(metrics: Mapping[str, Any]) -> dict[str, str]:
    """The scalar figures of a metrics.json, formatted: ``{"value", "unit"}`` records and one level of nesting."""
    figures: dict[str, str] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping) and "value" in value:
            unit = value.get("unit")
            figures[key] = _format(value["value"]) + (f" {unit}" if unit else "")
        elif isinstance(value, Mapping):
            for sub, inner in value.items():
                if _is_scalar(inner):
                    figures[f"{key}.{sub}"] = _format(inner)
        elif _is_scalar(value):
            figures[key] = _format(value)
    return figures


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _figures_table(metrics: Mapping[str, dict | None]) -> str:
    """Key figures, one row per figure and one column per phase that has a metrics.json."""
    by_phase = {phase: key_figures(data) for phase, data in metrics.items() if data is not None}
    if not by_phase:
        return "<h2>Key figures</h2><p>No phase recorded a metrics.json.</p>"
    names = list(dict.fromkeys(name for figures in by_phase.values() for name in figures))
    head = "".join(f"<th>{html.escape(p)}</th>" for p in by_phase)
    body = "".join(
        f"<tr><th>{html.escape(n)}</th>"
        + "".join(f"<td>{html.escape(f.get(n, '–'))}</td>" for f in by_phase.values())
        + "</tr>"
        for n in names
    )
    return f"<h2>Key figures</h2><table><thead><tr><th>figure</th>{head}</tr></thead><tbody>{body}</tbody></table>"


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
