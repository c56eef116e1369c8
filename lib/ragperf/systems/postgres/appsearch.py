"""The app's search as LangChain sends it: its collection, its statements verbatim, EXPLAIN, recall, index usage."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from ragperf.systems.postgres.embeddings import COLLECTIONS_TABLE, TABLE, SchemaError, pretty_bytes

log = logging.getLogger(__name__)

ITERATIVE_SCANS = ("off", "relaxed_order", "strict_order")


# The legacy app's statements, reproduced verbatim from lab/legacy/app.py (the app is never imported).
LEGACY_SQL_COLLECTION = (
    "SELECT langchain_pg_collection.uuid, langchain_pg_collection.name, langchain_pg_collection.cmetadata \n"
    "FROM langchain_pg_collection \n"
    "WHERE langchain_pg_collection.name = %(name_1)s \n"
    " LIMIT %(param_1)s"
)


LEGACY_SQL_SEARCH = (
    "SELECT langchain_pg_embedding.id, langchain_pg_embedding.collection_id, "
    "langchain_pg_embedding.embedding, langchain_pg_embedding.document, "
    "langchain_pg_embedding.cmetadata, "
    "langchain_pg_embedding.embedding <=> %(embedding_1)s AS distance \n"
    "FROM langchain_pg_embedding "
    "JOIN langchain_pg_collection ON langchain_pg_embedding.collection_id = langchain_pg_collection.uuid \n"
    "WHERE langchain_pg_embedding.collection_id = %(collection_id_1)s::UUID{filter} "
    "ORDER BY distance ASC \n"
    " LIMIT %(param_1)s"
)


LEGACY_SQL_EQ_FILTER = (
    " AND jsonb_path_match(langchain_pg_embedding.cmetadata, "
    "CAST(%(param_2)s AS JSONPATH), CAST(%(param_3)s::JSONB AS JSONB))"
)


class CollectionError(ValueError):
    """The app's collection cannot be told: not there, or several and none named."""


@dataclass(frozen=True)
class Collection:
    """One row of LangChain's ``langchain_pg_collection``, with the embeddings it holds."""

    name: str
    uuid: Any
    rows: int


def collections(conn: psycopg.Connection) -> list[Collection]:
    """Every collection in the database, largest first (SchemaError when LangChain's tables are missing)."""
    with conn.transaction():
        if conn.execute("SELECT to_regclass(%s)", (COLLECTIONS_TABLE,)).fetchone()[0] is None:
            path = conn.execute("SHOW search_path").fetchone()[0]
            raise SchemaError(f"no table {COLLECTIONS_TABLE} (search_path {path}): is this LangChain's database?")
        rows = conn.execute(
            sql.SQL(
                "SELECT c.name, c.uuid, (SELECT count(*) FROM {} e WHERE e.collection_id = c.uuid) "
                "FROM {} c ORDER BY 3 DESC, 1"
            ).format(sql.Identifier(TABLE), sql.Identifier(COLLECTIONS_TABLE))
        ).fetchall()
    return [Collection(name, uuid, int(n)) for name, uuid, n in rows]


def find_collection(conn: psycopg.Connection, name: str | None) -> Collection:
    """The app's collection: the one called ``name``, or the only one there is when ``name`` is None.

    Raises:
        CollectionError: ``name`` is not there, there are none, or several and no ``name`` says which.
    """
    found = collections(conn)
    listing = ", ".join(f"{c.name!r} ({c.rows:,} rows)" for c in found[:20]) or "none"
    if name is not None:
        match = next((c for c in found if c.name == name), None)
        if match is None:
            raise CollectionError(f"collection {name!r} (target.collection) not found in {COLLECTIONS_TABLE}; "
                                  f"the collections there: {listing}")  # fmt: skip
        return match
    if len(found) == 1:
        return found[0]
    if not found:
        raise CollectionError(f"{COLLECTIONS_TABLE} holds no collection: has the app loaded its documents?")
    raise CollectionError(
        f"{COLLECTIONS_TABLE} holds {len(found)} collections and target.collection names none of them: "
        f"set target.collection to the one the app searches; they are: {listing}"
    )


def collection_uuid(conn: psycopg.Connection, name: str) -> Any:
    """The collection's uuid, looked up with the app's own statement."""
    row = conn.execute(LEGACY_SQL_COLLECTION, {"name_1": name, "param_1": 1}).fetchone()
    if row is None:
        names = [r[0] for r in conn.execute(sql.SQL("SELECT name FROM {} ORDER BY 1 LIMIT 20").format(
            sql.Identifier(COLLECTIONS_TABLE)))]  # fmt: skip
        raise CollectionError(f"collection {name!r} not found; collections: {', '.join(names) or 'none'}")
    return row[0]


def legacy_search(collection_id: Any, embedding: Sequence[float], k: int, doc_type: str | None) -> tuple[str, dict]:
    """The app's search statement and parameters, built exactly as the app builds them."""
    params: dict[str, object] = {
        "embedding_1": "[" + ",".join(repr(float(x)) for x in embedding) + "]",
        "collection_id_1": collection_id,
        "param_1": k,
    }
    clause = ""
    if doc_type is not None:
        params["param_2"] = "$.doc_type == $value"
        params["param_3"] = json.dumps({"value": doc_type})
        clause = LEGACY_SQL_EQ_FILTER
    return LEGACY_SQL_SEARCH.replace("{filter}", clause), params  # a constant clause, as in the app


def explain_legacy_query(
    conn: psycopg.Connection,
    embedding: Sequence[float],
    *,
    collection_name: str,
    k: int = 4,
    doc_type: str | None = None,
) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) the legacy app's exact search for ``embedding``.

    Returns:
        ``uses_index`` (the index on the embedding table the plan scans, or None), ``index_method``
        (its access method: hnsw, btree ...), ``indexes_used`` (all, the collection's included),
        ``plan_text``, ``execution_ms``, ``rows`` returned and the plan's estimated ``total_cost``.
    """
    with conn.transaction():
        collection_id = collection_uuid(conn, collection_name)
        statement, params = legacy_search(collection_id, embedding, k, doc_type)
        doc = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params).fetchone()[0][0]
        own = dict(
            conn.execute(
                "SELECT c.relname, am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = to_regclass(%s)",
                (TABLE,),
            ).fetchall()
        )
    used = [n["Index Name"] for n in plan_nodes(doc["Plan"]) if "Index Name" in n]
    index = next((n for n in used if n in own), None)
    return {
        "uses_index": index,
        "index_method": own.get(index),
        "total_cost": float(doc["Plan"]["Total Cost"]),
        "indexes_used": used,
        "plan_text": "\n".join(_plan_lines(doc["Plan"])),
        "execution_ms": float(doc["Execution Time"]),
        "rows": int(doc["Plan"].get("Actual Rows", 0)),
    }


def plan_nodes(node: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def _plan_lines(node: Mapping[str, Any], depth: int = 0) -> list[str]:
    label = node["Node Type"]
    if "Index Name" in node:
        label += f" using {node['Index Name']}"
    if "Relation Name" in node:
        label += f" on {node['Relation Name']}"
    label += f" (actual rows={node.get('Actual Rows')} time={node.get('Actual Total Time')} ms"
    label += f" shared hit={node.get('Shared Hit Blocks', 0)} read={node.get('Shared Read Blocks', 0)})"
    lines = [("  " * depth) + ("-> " if depth else "") + label]
    for key in ("Order By", "Index Cond", "Filter", "Rows Removed by Filter"):
        if key in node:
            lines.append("  " * (depth + 1) + f"{key}: {_shorten(str(node[key]))}")
    for child in node.get("Plans", []):
        lines.extend(_plan_lines(child, depth + 1))
    return lines


def _shorten(text: str) -> str:
    return re.sub(r"'\[[^\]]{60,}\]'", "'[...]'", text)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def recall_at_k(
    conn: psycopg.Connection,
    queries: list[list[float]],
    *,
    k: int = 10,
    ef_search_values: Sequence[int] = (10, 20, 40, 80, 160),
    iterative: Sequence[str] = ("off", "relaxed_order"),
    collection_name: str,
    doc_type: str | None = None,
) -> pd.DataFrame:
    """Recall of the legacy search shape against exact search, per hnsw.ef_search and iterative scan mode.

    Exact results come from the same statement with index scans off. ``returned_mean`` below ``k``
    shows the filtering pitfall: the index hands over ef_search candidates, the WHERE clause removes
    some. Rows for iterative scans are skipped when pgvector is older than 0.8.

    Returns:
        columns ef_search, iterative_scan, recall, p50_ms, p95_ms, returned_mean.
    """
    bad = [m for m in iterative if m not in ITERATIVE_SCANS]
    if bad or not queries or any(not 1 <= ef <= 1000 for ef in ef_search_values):
        raise ValueError(
            f"iterative {list(iterative)}, ef_search {list(ef_search_values)}, {len(queries)} queries: "
            f"allowed are iterative modes {', '.join(ITERATIVE_SCANS)}, 1 <= ef_search <= 1000 "
            "and at least one query"
        )
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError("recall_at_k needs a connection outside a transaction (SET LOCAL must end with each search)")
    with conn.transaction():
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        collection_id = collection_uuid(conn, collection_name)
        hnsw = conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
            "WHERE i.indrelid = to_regclass(%s) AND am.amname = 'hnsw' AND i.indisvalid",
            (TABLE,),
        ).fetchone()[0]
    if not hnsw:
        log.warning("%s has no valid HNSW index: every search is exact and recall is trivially 1", TABLE)
    has_iterative = version is not None and _version(version[0]) >= (0, 8)
    modes = [m for m in iterative if m == "off" or has_iterative]
    if len(modes) < len(iterative):
        log.info("pgvector %s has no hnsw.iterative_scan: only 'off' is measured", version and version[0])
    searches = [legacy_search(collection_id, q, k, doc_type) for q in queries]
    exact = [_run(conn, s, {"enable_indexscan": "off", "enable_bitmapscan": "off"})[0] for s in searches]
    rows = []
    for ef in ef_search_values:
        for mode in modes:
            settings = {"hnsw.ef_search": str(ef)} | ({"hnsw.iterative_scan": mode} if has_iterative else {})
            found, ms = zip(*(_run(conn, s, settings) for s in searches), strict=True)
            recalls = [len(f & e) / len(e) for f, e in zip(found, exact, strict=True) if e]
            rows.append(
                {
                    "ef_search": ef,
                    "iterative_scan": mode,
                    "recall": float(np.mean(recalls)) if recalls else float("nan"),
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p95_ms": float(np.percentile(ms, 95)),
                    "returned_mean": float(np.mean([len(f) for f in found])),
                }
            )
    return pd.DataFrame(rows, columns=["ef_search", "iterative_scan", "recall", "p50_ms", "p95_ms", "returned_mean"])


def _run(conn: psycopg.Connection, search: tuple[str, dict], settings: Mapping[str, str]) -> tuple[set[str], float]:
    """Run one search in its own transaction with SET LOCAL ``settings``; its ids and client-side ms."""
    statement, params = search
    with conn.transaction():
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        started = time.perf_counter()
        ids = {r[0] for r in conn.execute(statement, params).fetchall()}
        return ids, (time.perf_counter() - started) * 1000


def index_usage(conn: psycopg.Connection, table: str = TABLE) -> pd.DataFrame:
    """Scans and size of each index of ``table``, from pg_stat_user_indexes (counters since the last reset)."""
    with conn.transaction():  # none left open: an idle transaction would hold up CREATE INDEX CONCURRENTLY
        rows = conn.execute(
            "SELECT s.indexrelname, s.idx_scan, s.idx_tup_read, s.idx_tup_fetch, pg_relation_size(s.indexrelid), "
            "       i.indisvalid "
            "FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid "
            "WHERE s.relid = to_regclass(%s) ORDER BY s.idx_scan DESC, s.indexrelname",
            (table,),
        ).fetchall()
    frame = pd.DataFrame(rows, columns=["index", "idx_scan", "idx_tup_read", "idx_tup_fetch", "size_bytes", "valid"])
    frame.insert(5, "size", frame["size_bytes"].map(pretty_bytes))
    return frame


def ef_search_advice(best_ef: int, *, role: str, database: str) -> str:
    """How to make ``best_ef`` the app's hnsw.ef_search without touching the app."""
    if not 1 <= best_ef <= 1000:
        raise ValueError(f"ef_search {best_ef}: allowed is 1..1000")
    per_role = sql.SQL("ALTER ROLE {} SET hnsw.ef_search = {}").format(sql.Identifier(role), sql.Literal(best_ef))
    per_db = sql.SQL("ALTER DATABASE {} SET hnsw.ef_search = {}").format(sql.Identifier(database), sql.Literal(best_ef))
    return (
        f"To make hnsw.ef_search = {best_ef} apply to the app without changing its code, run as a superuser "
        f"or as the app's role itself:\n  {per_role.as_string()};\n"
        f"or, for every role of the database (as its owner or a superuser):\n  {per_db.as_string()};\n"
        "Role and database settings take effect on new connections only; the legacy app "
        "opens a new connection per request, so the next request uses it. Undo with ALTER ROLE ... RESET "
        "hnsw.ef_search."
    )
