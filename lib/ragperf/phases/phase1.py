"""What the Phase 1 notebook verifies and reports beyond the load test: the app's search, timed at each
stage; recall against hnsw.ef_search; the ef_search the app should get; the plan's expected impact.

The searches are the legacy app's own statements (:mod:`ragperf.systems.postgres.indexes` keeps them verbatim), run
as the app runs them: fast mode without a filter and ``k = 4``; quality mode with the app's metadata
filter and ``k = 8``. Query vectors are the embeddings of real questions from the target's provider
(the lab's simulator, or ``RAGPERF_LLM_BASE_URL``); without a provider, stored vectors stand in.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psycopg
from matplotlib.figure import Figure

from ragperf import lab
from ragperf.core import changes
from ragperf.core.criteria import CRITERIA_USERS, Slo
from ragperf.measure import charts, metrics, verdicts
from ragperf.phases.phase import PhaseContext
from ragperf.systems import llm
from ragperf.systems.postgres import appsearch, embeddings, indexes, pgmonitor, roles, serving

log = logging.getLogger(__name__)

# The legacy app's quality-mode filter and result sizes, verbatim (a test reads them from lab/legacy/app.py).
LEGACY_DOC_TYPES = {"luật": "luat", "nghị định": "nghi_dinh", "thông tư": "thong_tu", "quyết định": "quyet_dinh"}
LEGACY_TOP_K = {"fast": 4, "quality": 8}
RECALL_K = 10
STATEMENTS = "statements.json"  # pg_stat_statements over one measurement (Phase 3 reads it)


def legacy_filter(question: str) -> str | None:
    """The doc_type the app's quality mode filters on for ``question`` (None: no filter)."""
    text = unicodedata.normalize("NFC", question).lower()
    for words, doc_type in LEGACY_DOC_TYPES.items():
        if re.search(rf"\b{words}\b", text):
            return doc_type
    return None


@dataclass
class Probe:
    """Query vectors for verifying the index, and where they came from."""

    vectors: list[list[float]]
    source: str
    filter_doc_type: str  # the most selective doc_type the app's quality mode can filter on
    filter_share: float  # of the collection's rows
    collection: str  # the app's collection (target.collection, or the only one there is)


def probe(ctx: PhaseContext, conn: psycopg.Connection, n: int) -> Probe:
    """``n`` question embeddings from the target's provider (stored vectors without one), the app's collection
    and the filter to test.

    Raises:
        appsearch.CollectionError: the collection the target names is not there, or several are and none is named.
    """
    collection = appsearch.find_collection(conn, ctx.target.collection)
    items = [*ctx.workloads.in_order, *ctx.workloads.spare][:n] if ctx.workloads else []
    provider = _provider(ctx)
    if provider is not None and items:
        with httpx.Client(timeout=60) as client:
            vectors = llm.embed(client, provider, [i.question for i in items]).tolist()
        source = f"embeddings of {len(vectors)} pool questions from {provider.base_url}"
    else:
        rows = conn.execute(
            f"SELECT embedding::text FROM {embeddings.TABLE} WHERE collection_id = %s ORDER BY md5(id::text) LIMIT %s",
            (collection.uuid, n),
        ).fetchall()
        vectors = [[float(x) for x in r[0].strip("[]").split(",")] for r in rows]
        source = f"{len(vectors)} stored vectors (no embedding provider configured: set RAGPERF_LLM_BASE_URL)"
    counts = dict(
        conn.execute(
            f"SELECT cmetadata->>'doc_type', count(*) FROM {embeddings.TABLE} WHERE collection_id = %s GROUP BY 1",
            (collection.uuid,),
        ).fetchall()
    )
    conn.commit()
    present = {d: counts[d] for d in LEGACY_DOC_TYPES.values() if counts.get(d)}
    if not present:
        raise ValueError(
            f"no row of collection {collection.name!r} has a doc_type the app filters on "
            f"({', '.join(LEGACY_DOC_TYPES.values())})"
        )
    rarest = min(present, key=present.get)
    return Probe(vectors, source, rarest, present[rarest] / sum(counts.values()), collection.name)


def _provider(ctx: PhaseContext) -> llm.Provider | None:
    external = lab.external_provider()
    if external is not None:
        return external
    url = ctx.target.servers.get("llm_provider") if ctx.target.kind == "lab" else None
    return llm.Provider(url) if url else None


def time_searches(
    conn: psycopg.Connection, p: Probe, settings: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """EXPLAIN ANALYZE the app's two search shapes for every probe vector, with the app role's ``settings``
    (:func:`ragperf.systems.postgres.serving.time_searches` with the app's k and the probe's filter)."""
    return serving.time_searches(conn, p.collection, p.vectors, p.filter_doc_type, LEGACY_TOP_K, settings)


@dataclass
class IndexOutcome:
    """What building the indexes did: whether HNSW serves the app's searches, and the competing B-trees'
    verdicts (kept or dropped)."""

    serving: pd.DataFrame
    competitors: pd.DataFrame

    @property
    def hnsw_serves(self) -> bool:
        return bool(self.serving["HNSW serves it"].all())


def build_indexes(
    plan: indexes.IndexPlan,
    schema: embeddings.Schema,
    p: Probe,
    appliers: Mapping[str, changes.Applier],
    journal: changes.Journal,
    connect: Callable[[], psycopg.Connection],
) -> IndexOutcome:
    """Apply the index plan: the column, HNSW and the partial indexes with their ANALYZE steps first; then
    prove with EXPLAIN of the app's searches that HNSW serves them; then each B-tree that competes with HNSW,
    kept only when it serves its own query and leaves the app's searches no slower."""
    rivals = indexes.competitors(plan)
    changes.apply(changes.groups([c for c in plan if c not in rivals], appliers), journal)
    verdicts = [
        serving.adopt(c, appliers=appliers, journal=journal, connect=connect, schema=schema, collection=p.collection,
                      vectors=p.vectors, doc_type=p.filter_doc_type, k=LEGACY_TOP_K)
        for c in rivals
    ]  # fmt: skip
    with connect() as conn:
        served = serving.check(conn, p.collection, p.vectors[0], p.filter_doc_type, LEGACY_TOP_K)
    return IndexOutcome(served, pd.DataFrame(verdicts, columns=COMPETITOR_COLUMNS))


COMPETITOR_COLUMNS = ["index", "for", "its query uses it", "fast ms before → after", "quality ms before → after",
                      "verdict", "why"]  # fmt: skip


def searches_table(stages: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """One row per search shape and stage: median time, change against the first stage, index, rows."""
    rows = []
    for shape, label in (("fast", "fast: ORDER BY embedding <=> q LIMIT 4"),
                         ("quality", "quality: + jsonb_path_match filter, LIMIT 8")):  # fmt: skip
        first = None
        for stage, result in stages.items():
            ms = result[shape]["median_ms"]
            first = ms if first is None else first
            rows.append({"search": label, "stage": stage, "median_ms": round(ms, 2),
                         "change_pct": round(100 * (ms - first) / first, 1) if first else None,
                         "index": result[shape]["index"] or "none (sequential scan)",
                         "rows_returned": result[shape]["rows"], "k": result[shape]["k"]})  # fmt: skip
    return pd.DataFrame(rows)


def server_ef_search(conn: psycopg.Connection) -> str:
    """hnsw.ef_search as a new session of the app gets it before any role setting (pgvector loaded first:
    its settings exist only once the library is)."""
    conn.execute("SELECT '[1]'::vector")
    return str(conn.execute("SELECT current_setting('hnsw.ef_search')").fetchone()[0])


def choose_ef_search(recall: pd.DataFrame, target: float, iterative_scan: str = "off") -> int:
    """The smallest measured ef_search whose recall reaches ``target`` (the largest measured when none does)."""
    rows = recall[recall["iterative_scan"] == iterative_scan].sort_values("ef_search")
    if rows.empty:
        raise ValueError(f"no recall rows with iterative_scan {iterative_scan!r}")
    good = rows[rows["recall"] >= target]
    return int((good if not good.empty else rows).iloc[0 if not good.empty else -1]["ef_search"])


def choose_iterative_scan(filtered: pd.DataFrame, ef_search: int, k: int) -> str | None:
    """``strict_order`` when, at ``ef_search``, the filtered search returns fewer than ``k`` rows without
    iterative scans and all ``k`` with them (the app keeps its ORDER BY semantics); else None."""
    at = filtered[filtered["ef_search"] == ef_search].set_index("iterative_scan")
    if "off" not in at.index or "strict_order" not in at.index:
        return None
    short = at.loc["off", "returned_mean"] < k - 0.01
    return "strict_order" if short and at.loc["strict_order", "returned_mean"] >= k - 0.01 else None


def recall_chart(recall: pd.DataFrame, target: float, title: str) -> Figure:
    """Recall@k against p95 search time, one line per iterative scan mode, each point labelled with ef_search."""
    with charts.themed():
        return _recall_chart(recall, target, title)


def _recall_chart(recall: pd.DataFrame, target: float, title: str) -> Figure:
    fig = charts.Chart(figsize=(7.5, 4.2), dpi=charts.DPI)
    ax = fig.subplots()
    for mode, rows in recall.groupby("iterative_scan", sort=False):
        rows = rows.sort_values("ef_search")
        ax.plot(rows["p95_ms"], rows["recall"], marker="o", label=f"iterative_scan = {mode}")
        for r in rows.itertuples():
            ax.annotate(f"ef {r.ef_search}", (r.p95_ms, r.recall), textcoords="offset points", xytext=(4, -10),
                        fontsize=7)  # fmt: skip
    ax.axhline(target, color=charts.NEUTRAL, linestyle="--", linewidth=1, label=f"recall target {target:g}")
    ax.set_xlabel("p95 search time (ms)")
    ax.set_ylabel(f"recall@{RECALL_K} vs exact search")
    ax.set_ylim(min(0.5, float(recall["recall"].min()) - 0.05), 1.02)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def expected_impact(
    final: Mapping[str, Any], searches: Mapping[str, Mapping[str, Mapping[str, Any]]], criteria: Slo
) -> pd.DataFrame:
    """The plan's "Expected Impact" for Phase 1 beside what was measured: expected, measured, met or not.

    ``searches`` are :func:`time_searches` results by stage; the first stage is the baseline, the last the
    final state.
    """
    stages = list(searches)
    first, last = searches[stages[0]], searches[stages[-1]]

    def change(shape: str) -> float:
        return 100 * (last[shape]["median_ms"] - first[shape]["median_ms"]) / first[shape]["median_ms"]

    def search(shape: str, target_pct: float) -> tuple[str, bool]:
        """Faster only counts when the search still returns the k rows the app asked for."""
        pct, rows, k = change(shape), last[shape]["rows"], last[shape]["k"]
        text = f"{first[shape]['median_ms']:.1f} → {last[shape]['median_ms']:.1f} ms ({pct:+.0f} %)"
        if rows < k - 0.01:
            return f"{text}, but returns {rows:.2g} of {k} rows", False
        if last[shape].get("method", "hnsw") != "hnsw":
            return f"{text}, but HNSW does not serve it ({last[shape]['index'] or 'a scan'} does)", False
        return text, pct <= target_pct

    p95 = metrics.value_of(final, f"response_time_{CRITERIA_USERS}_users")
    rate = metrics.value_of(final, f"success_rate_{CRITERIA_USERS}_users")
    users = verdicts.criteria_table(final, "phase1", criteria).iloc[2]["measured"]
    (vector, vector_met), (filtering, filtering_met) = search("fast", -60), search("quality", -80)
    rows = [
        ("Response time 9.6 s → 4–5 s (p95 at 10 users)", f"{p95:.2f} s" if p95 is not None else "not measured",
         p95 is not None and p95 <= 5.0),
        (f"Concurrent users {criteria.min_users}+ (within p95 < {criteria.p95_s:g} s, success ≥ "
         f"{criteria.success_rate_pct:g} %)", "not measured" if pd.isna(users) else f"{users:g} users",
         not pd.isna(users) and users >= criteria.min_users),
        ("Success rate 70 %+ (10 users)", f"{rate:.1f} %" if rate is not None else "not measured",
         rate is not None and rate >= 70.0),
        ("Vector search −60 % (the app's fast search, median)", vector, vector_met),
        ("Metadata filtering −80 % (the app's filtered search, median, full results)", filtering, filtering_met),
    ]  # fmt: skip
    return pd.DataFrame(
        [{"expected (PLAN.md)": e, "measured": m, "met": "met" if ok else "not met"} for e, m, ok in rows]
    )


@dataclass
class RoleSettings:
    """The settings the app's role should get, the plan that gives them, and how to do it by hand."""

    ef_search: int  # the smallest measured with recall@k at the target
    desired: dict[str, str]
    plan: list[changes.Change]
    advice: str
    note: str  # why nothing is planned, when nothing is


def role_settings(ctx: PhaseContext, recall: pd.DataFrame, recall_filtered: pd.DataFrame,
                  conn: psycopg.Connection) -> RoleSettings:  # fmt: skip
    """hnsw.ef_search (the smallest measured with recall@k at the target) and, when filtered searches need it to
    return k rows, hnsw.iterative_scan, planned as ``ALTER ROLE ... SET`` on the app's role (``ctx.target.app_role``;
    none is planned when the role is not known)."""

    knobs, role = ctx.params.changes, ctx.target.app_role
    best_ef = choose_ef_search(recall, knobs.recall_target)
    iterative = choose_iterative_scan(recall_filtered, best_ef, RECALL_K)
    current_ef = server_ef_search(conn)
    role_now = roles.role_settings(conn, role) if role else {}
    database = conn.info.dbname
    conn.commit()
    unchanged = str(best_ef) == current_ef and "hnsw.ef_search" not in role_now
    desired = {} if unchanged else {"hnsw.ef_search": str(best_ef)}
    if iterative:
        desired["hnsw.iterative_scan"] = iterative
    reason = f"smallest ef_search with recall@{RECALL_K} >= {knobs.recall_target:g}" + (
        f"; {iterative} so that filtered searches still return k rows" if iterative else ""
    )
    plan = roles.plan_role_settings(role, role_now, desired, reason) if role else []
    note = "" if role else "changes.app_role is not set: the app's role is not known, so no role setting is planned"
    advice = appsearch.ef_search_advice(best_ef, role=role or "<the app's role>", database=database)
    return RoleSettings(best_ef, desired, plan, advice, note)


def host_changes_allowed(ctx: PhaseContext) -> bool:
    """Whether this run may write the host's sysctl drop-in: applying, on a deployment (the lab shares this
    machine with everything else), and ``changes.allow_host_changes``."""
    return ctx.params.effective_mode() == "apply" and ctx.target.kind != "lab" and ctx.params.changes.allow_host_changes


def save_statements(out: Path, start: list[dict], end: list[dict]) -> Path:
    """What pg_stat_statements counted between two snapshots, kept beside a measurement (``statements.json``), so
    that Phase 3's DBA view can say what the indexes changed statement by statement."""
    path = out / STATEMENTS
    path.write_text(json.dumps(pgmonitor.statements_delta(start, end), indent=1), encoding="utf-8")
    return path
