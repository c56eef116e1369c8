"""Whether the indexes Phase 1 builds serve the app's search, why not when they do not, and whether an
index that competes with HNSW for that search is kept.

An index helps nobody until the planner uses it for the app's own statement. On a table LangChain has
just filled, the planner has no statistics for ``collection_id``; it then guesses that
``collection_id = $1`` selects a fraction of a per cent of the rows, and a B-tree on collection_id plus
a sort looks cheaper than HNSW. :func:`check` EXPLAINs the app's two searches (fast: no filter; quality:
the ``jsonb_path_match`` filter) and, where HNSW does not serve them, says why and what would.
:func:`adopt` builds one competing B-tree, keeps it only when EXPLAIN shows it serves the query it is
for and the app's searches got no slower (their measured execution time, not the index's existence),
and drops it otherwise, through the change model.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from ragperf.core import changes
from ragperf.core.changes import Applier, Change, Journal
from ragperf.systems.postgres import appsearch, embeddings, indexes

SHAPES = {"fast": "fast: ORDER BY embedding <=> q LIMIT k", "quality": "quality: + jsonb_path_match filter"}
SLOWER_RATIO = 1.5  # a search this much slower (and SLOWER_MS more) counts as made worse; below is noise
SLOWER_MS = 0.5
_FORCE_INDEX = {"enable_seqscan": "off", "enable_bitmapscan": "off", "enable_sort": "off"}


def time_searches(
    conn: psycopg.Connection,
    collection: str,
    vectors: Sequence[Sequence[float]],
    doc_type: str | None,
    k: Mapping[str, int],
    settings: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """EXPLAIN ANALYZE the app's two searches for every vector, with ``settings`` set for each.

    Returns per shape (``fast``, ``quality``): the median execution ms, the index used and its method
    (None: no index of the table), the rows returned on average, ``k``, and one plan's text.
    """
    out: dict[str, dict[str, Any]] = {}
    for shape, filter_value in (("fast", None), ("quality", doc_type)):
        runs = []
        for vector in vectors:
            with conn.transaction():
                for name, value in (settings or {}).items():
                    conn.execute("SELECT set_config(%s, %s, true)", (name, value))
                runs.append(appsearch.explain_legacy_query(conn, vector, collection_name=collection, k=k[shape],
                                                         doc_type=filter_value))  # fmt: skip
        out[shape] = {
            "median_ms": statistics.median(r["execution_ms"] for r in runs),
            "index": runs[0]["uses_index"],
            "method": runs[0]["index_method"],
            "rows": float(np.mean([r["rows"] for r in runs])),
            "k": k[shape],
            "plan_text": runs[0]["plan_text"],
        }
    return out


def check(
    conn: psycopg.Connection,
    collection: str,
    vector: Sequence[float],
    doc_type: str | None,
    k: Mapping[str, int],
    settings: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Does HNSW serve the app's searches? One row per shape: the index that does, rows returned, and
    where it is not HNSW, why (the planner's estimates) and what would make it so."""
    rows = []
    for shape, filter_value in (("fast", None), ("quality", doc_type)):
        with conn.transaction():
            for name, value in (settings or {}).items():
                conn.execute("SELECT set_config(%s, %s, true)", (name, value))
            found = appsearch.explain_legacy_query(conn, vector, collection_name=collection, k=k[shape],
                                                 doc_type=filter_value)  # fmt: skip
        served = found["index_method"] == "hnsw"
        why, fix = ("", "") if served else _diagnose(conn, collection, vector, k[shape], filter_value, found, settings)
        rows.append({"search": SHAPES[shape], "served by": found["uses_index"] or "no index (sequential scan)",
                     "HNSW serves it": served, "rows returned": found["rows"], "k": k[shape],
                     "execution_ms": round(found["execution_ms"], 2), "why not": why, "what would": fix})  # fmt: skip
    return pd.DataFrame(rows)


def _diagnose(
    conn: psycopg.Connection,
    collection: str,
    vector: Sequence[float],
    k: int,
    doc_type: str | None,
    found: Mapping[str, Any],
    settings: Mapping[str, str] | None,
) -> tuple[str, str]:
    """Why the planner did not take HNSW for this search, and what would make it (from the catalog and a
    second plan with everything but ordered index scans disabled)."""
    with conn.transaction():
        hnsw = conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam "
            "WHERE i.indrelid = to_regclass(%s) AND am.amname = 'hnsw' AND i.indisvalid",
            (embeddings.TABLE,),
        ).fetchone()[0]
        analyzed = embeddings.has_statistics(conn, embeddings.TABLE)
    if not hnsw:
        return "the table has no valid HNSW index", "build one (the index plan); a failed build leaves it INVALID"
    if not analyzed:
        return (
            "the table has no statistics (never analyzed): the planner guesses how many rows collection_id = $1 "
            "selects, and a B-tree plus a sort looks cheaper",
            "ANALYZE the table (the plan's analyze step)",
        )
    chosen = found["uses_index"] or "a sequential scan"
    with conn.transaction():
        for name, value in {**(settings or {}), **_FORCE_INDEX}.items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        statement, params = appsearch.legacy_search(appsearch.collection_uuid(conn, collection), vector, k, doc_type)
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchone()[0][0]["Plan"]
    forced = next((n["Index Name"] for n in appsearch.plan_nodes(plan) if "Index Name" in n and n["Index Name"]
                   != "langchain_pg_collection_pkey"), None)  # fmt: skip
    why = (f"the planner estimated {chosen} at cost {found['total_cost']:,.0f} and the HNSW plan"
           f" ({forced or 'none possible'}) at {float(plan['Total Cost']):,.0f}")  # fmt: skip
    if doc_type is not None and forced is not None and "hnsw" in forced and found["rows"] < k:
        return why, "a partial HNSW index on this filter value (rare values get one in the plan)"
    if found["uses_index"] and found["index_method"] == "btree":
        return why, f"drop {found['uses_index']}: it competes with HNSW for this search (see the competing indexes)"
    return why, ("at this size an exact scan is as cheap as the planner says; HNSW pays off on larger tables "
                 "(or lower random_page_cost on SSDs, Phase 1's settings)")  # fmt: skip


def adopt(
    change: Change,
    *,
    appliers: Mapping[str, Applier],
    journal: Journal,
    connect: Callable[[], psycopg.Connection],
    schema: embeddings.Schema,
    collection: str,
    vectors: Sequence[Sequence[float]],
    doc_type: str | None,
    k: Mapping[str, int],
) -> dict[str, Any]:
    """Build ``change`` (a B-tree competing with HNSW), then keep it only if it serves the query it is for
    and leaves the app's searches no slower; else drop it again. Both outcomes are journaled.

    Returns one row for a table: the index, what it is for, whether that query uses it, the app's two
    searches' median ms before and after, ``kept`` or ``dropped`` and why.
    """
    with connect() as conn:
        before = time_searches(conn, collection, vectors, doc_type, k)
    groups = [(appliers[change.kind], [change]),
              (appliers[indexes.ANALYZE_KIND], [indexes.analyze_change(schema, f"after {change.name}")])]  # fmt: skip
    changes.apply(groups, journal)
    with connect() as conn:
        uuid = appsearch.collection_uuid(conn, collection)
        query_params = {"collection_id": uuid, **change.details.get("serves_params", {})}
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + change.details["serves_sql"], query_params)
        own_used = change.name in {n.get("Index Name") for n in appsearch.plan_nodes(plan.fetchone()[0][0]["Plan"])}
        conn.rollback()  # end the read's transaction: an open one would hold up a concurrent index build
        after = time_searches(conn, collection, vectors, doc_type, k)
    worse = [shape for shape in before if _worse(before[shape], after[shape])]
    keep = own_used and not worse
    if keep:
        why = f"its query uses it, and the app's searches are no slower ({_timings(before, after)})"
    else:
        changes.undo(groups, journal)
        reasons = ([] if own_used else [f"its own query ({change.details['serves']}) does not use it"]) + [
            f"the app's {shape} search got worse ({_change_text(before[shape], after[shape])})" for shape in worse
        ]
        why = "; ".join(reasons) + ": dropped again"
    return {"index": change.name, "for": change.details["serves"], "its query uses it": own_used,
            "fast ms before → after": f"{before['fast']['median_ms']:.2f} → {after['fast']['median_ms']:.2f}",
            "quality ms before → after": f"{before['quality']['median_ms']:.2f} → {after['quality']['median_ms']:.2f}",
            "verdict": "kept" if keep else "dropped", "why": why}  # fmt: skip


def _worse(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    lost_hnsw = before["method"] == "hnsw" and after["method"] != "hnsw"
    slower = after["median_ms"] > before["median_ms"] * SLOWER_RATIO + SLOWER_MS
    return lost_hnsw or slower or after["rows"] < before["rows"] - 0.01


def _change_text(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    served = f"served by {before['index'] or 'a scan'} → {after['index'] or 'a scan'}"
    return f"median {before['median_ms']:.2f} → {after['median_ms']:.2f} ms, {served}"


def _timings(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    return "; ".join(f"{shape}: {_change_text(before[shape], after[shape])}" for shape in before)
