"""Phase 1.2, indexes: read LangChain's embedding table, plan the indexes, build them, verify them.

The legacy app's search is ``ORDER BY embedding <=> $1 LIMIT k`` with ``WHERE collection_id = ...``
and, in quality mode, ``jsonb_path_match(cmetadata, ...)``. Only an HNSW index with the operator
class of that distance operator can serve it, and pgvector refuses to build one on a ``vector``
column without dimensions, which is how LangChain creates it when ``embedding_length`` is unset.

:func:`introspect` reads the table (never assuming its columns), :func:`plan` turns that into
:class:`~ragperf.changes.Change` records (pure), :class:`ColumnApplier` and :class:`IndexApplier`
make and unmake them, and :func:`explain_legacy_query`, :func:`recall_at_k` and
:func:`index_usage` show whether the real query shape uses the index and what it costs in recall.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from ragperf.changes import Change, ChangeError, own
from ragperf.progress import bar as progress_bar

log = logging.getLogger(__name__)

TABLE = "langchain_pg_embedding"
EMBEDDING = "embedding"
HNSW_INDEX = "ragperf_embedding_hnsw"
GIN_INDEX = "ragperf_cmetadata_gin"
COLLECTION_INDEX = "ragperf_embedding_collection_id"
COLLECTIONS_TABLE = "langchain_pg_collection"
ANALYZE_KIND = "analyze"
METADATA_COLUMNS = ("cmetadata", "metadata")
DISTANCES = {"<=>": "cosine", "<->": "l2", "<#>": "ip", "<+>": "l1"}
HNSW_MAX_DIMS = {"vector": 2000, "halfvec": 4000}
ITERATIVE_SCANS = ("off", "relaxed_order", "strict_order")
GRAPH_NOTICE = "hnsw graph no longer fits into maintenance_work_mem"
PARTIAL_SHARE = 0.2  # below this share of rows a filter value gets its own partial HNSW index
REWRITE_MB_PER_S = 30.0  # rough, conservative rewrite speed for the ALTER TYPE warning (lab: ~35 MB/s)

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


class SchemaError(ChangeError):
    """The table is not shaped as the plan needs (missing columns, mixed dimensions, no pgvector)."""


@dataclass(frozen=True)
class IndexInfo:
    """One existing index of the table, as the catalog shows it."""

    name: str
    definition: str
    valid: bool
    size_bytes: int
    method: str
    columns: tuple[str, ...]  # key columns or expressions, as pg_get_indexdef shows each
    opclasses: tuple[str, ...]


@dataclass(frozen=True)
class Schema:
    """What :func:`introspect` found; everything :func:`plan` needs, so that planning needs no server."""

    table: str
    table_schema: str
    columns: Mapping[str, str]
    metadata_column: str
    metadata_type: str  # json or jsonb
    embedding_type: str  # format_type: "vector" or "vector(768)"
    vector_type: str  # vector or halfvec
    declared_dims: int | None
    stored_dims: int | None
    rows_estimate: int
    table_bytes: int
    total_bytes: int
    indexes: tuple[IndexInfo, ...] = ()
    distance_operator: str = "<=>"
    pgvector_version: str = "0.8.0"
    server_version_num: int = 180000
    filter_values: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # rows per value of a filter key
    analyzed: bool = True  # the planner has statistics for collection_id

    @property
    def dimensionless(self) -> bool:
        """True when ``embedding`` is a plain ``vector``: HNSW cannot index it."""
        return self.declared_dims is None

    @property
    def opclass(self) -> str:
        """The HNSW operator class that serves the app's distance operator on this column type."""
        return f"{self.vector_type}_{DISTANCES[self.distance_operator]}_ops"

    def index(self, name: str) -> IndexInfo | None:
        """The existing index called ``name``, or None."""
        return next((i for i in self.indexes if i.name == name), None)

    def index_table(self) -> pd.DataFrame:
        """The existing indexes, one row each, for a notebook."""
        rows = [
            {
                "index": i.name,
                "method": i.method,
                "valid": i.valid,
                "size": pretty_bytes(i.size_bytes),
                "definition": i.definition,
            }
            for i in self.indexes
        ]
        return pd.DataFrame(rows, columns=["index", "method", "valid", "size", "definition"])


class IndexPlan(list[Change]):
    """The planned changes (a list of :class:`Change`), plus ``notes``: what was deliberately not planned, and why."""

    def __init__(self, changes: Iterable[Change] = (), notes: Iterable[str] = ()) -> None:
        super().__init__(changes)
        self.notes: list[str] = list(notes)


def distance_operator_of(query_text: str) -> str:
    """The pgvector distance operator a query orders by (e.g. the legacy app's ``<=>``).

    Raises:
        ValueError: the text has none of the operators, or more than one kind.
    """
    found = sorted({op for op in DISTANCES if op in query_text})
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one distance operator of {', '.join(DISTANCES)} in the query; found "
            f"{', '.join(found) or 'none'}"
        )
    return found[0]


# --- reading ----------------------------------------------------------------------------------


def introspect(
    conn: psycopg.Connection,
    table: str = TABLE,
    *,
    distance_operator: str = "<=>",
    sample_rows: int = 10_000,
    filter_keys: Sequence[str] = ("doc_type",),
) -> Schema:
    """Read the embedding table's shape, size, indexes and the server's pgvector.

    Args:
        conn: a connection to the app's database (read-only use).
        table: the table, optionally schema-qualified.
        distance_operator: the operator the app orders by (see :func:`distance_operator_of`).
        sample_rows: how many stored vectors to check for their dimension.
        filter_keys: metadata keys the app filters on; how many rows hold each value is counted.

    Raises:
        SchemaError: the table, its ``embedding``/``collection_id``/metadata column or pgvector is missing,
            ``embedding`` is not a pgvector type, or the sampled vectors have mixed dimensions.
        ValueError: an unknown distance operator.
    """
    if distance_operator not in DISTANCES:
        raise ValueError(f"unknown distance operator {distance_operator!r}: allowed are {', '.join(DISTANCES)}")
    with conn.transaction():
        oid, table_schema, table = _relation(conn, table)
        columns = _columns(conn, oid)
        vector_type, declared = _embedding_column(conn, oid, table, columns)
        meta = next((c for c in METADATA_COLUMNS if c in columns), None)
        if meta is None or "collection_id" not in columns:
            missing = "collection_id column" if meta else "metadata column (expected cmetadata or metadata)"
            raise SchemaError(f"{table} has no {missing}; found columns: {', '.join(columns)}")
        if columns[meta] not in ("json", "jsonb"):
            raise SchemaError(f"{table}.{meta} is {columns[meta]}; expected json or jsonb")
        rows, table_bytes, total_bytes = conn.execute(
            "SELECT reltuples::bigint, pg_table_size(oid), pg_total_relation_size(oid) FROM pg_class WHERE oid = %s",
            (oid,),
        ).fetchone()
        if rows < 0:  # never analyzed, nor indexed since it was filled
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_ident(table_schema, table))).fetchone()[0]
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        return Schema(
            table=table,
            table_schema=table_schema,
            columns=columns,
            metadata_column=meta,
            metadata_type=columns[meta],
            embedding_type=columns[EMBEDDING],
            vector_type=vector_type,
            declared_dims=declared,
            stored_dims=_stored_dims(conn, table_schema, table, sample_rows),
            rows_estimate=int(rows),
            table_bytes=int(table_bytes),
            total_bytes=int(total_bytes),
            indexes=_indexes(conn, oid),
            distance_operator=distance_operator,
            pgvector_version=version[0] if version else "",
            server_version_num=int(conn.execute("SELECT current_setting('server_version_num')").fetchone()[0]),
            filter_values={key: _value_counts(conn, table_schema, table, meta, key) for key in filter_keys},
            analyzed=has_statistics(conn, oid),
        )


def has_statistics(conn: psycopg.Connection, regclass: int | str) -> bool:
    """True when the planner has statistics for the table's collection_id (ANALYZE ran since it was filled)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_statistic s JOIN pg_attribute a ON a.attrelid = s.starelid AND a.attnum = s.staattnum "
        "WHERE s.starelid = %s::regclass AND a.attname = 'collection_id'",
        (str(regclass),),
    ).fetchone()
    return bool(row[0])


def _value_counts(conn: psycopg.Connection, table_schema: str, table: str, meta: str, key: str) -> dict[str, int]:
    """Rows per value of metadata ``key`` (the 50 most common values)."""
    _check_key(key)
    rows = conn.execute(
        sql.SQL("SELECT {} ->> {}, count(*) FROM {} GROUP BY 1 ORDER BY 2 DESC LIMIT 50").format(
            sql.Identifier(meta), sql.Literal(key), _ident(table_schema, table)
        )
    ).fetchall()
    return {value: int(count) for value, count in rows if value is not None}


def _check_key(key: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", key):
        raise ChangeError(f"filter key {key!r}: allowed are lower-case letters, digits and _, up to 41 characters")


def _relation(conn: psycopg.Connection, table: str) -> tuple[int, str, str]:
    row = conn.execute(
        "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')",
        (table,),
    ).fetchone()
    if row is None:
        found = [
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relname LIKE %s AND relkind IN ('r', 'p') ORDER BY 1",
                ("%embedding%",),
            ).fetchall()
        ]
        raise SchemaError(
            f"table {table} not found (search_path {conn.execute('SHOW search_path').fetchone()[0]}); "
            f"tables named like *embedding*: {', '.join(found) or 'none'}"
        )
    return int(row[0]), row[1], row[2]


def _columns(conn: psycopg.Connection, oid: int) -> dict[str, str]:
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (oid,),
    ).fetchall()
    return dict(rows)


def _embedding_column(
    conn: psycopg.Connection, oid: int, table: str, columns: Mapping[str, str]
) -> tuple[str, int | None]:
    if EMBEDDING not in columns:
        raise SchemaError(f"{table} has no column {EMBEDDING!r}; found columns: {', '.join(columns)}")
    match = re.fullmatch(r"(vector|halfvec)(?:\((\d+)\))?", columns[EMBEDDING])
    if match is None:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
            raise SchemaError("the pgvector extension is not installed in this database (CREATE EXTENSION vector)")
        raise SchemaError(f"{table}.{EMBEDDING} is {columns[EMBEDDING]}; expected vector or halfvec (pgvector)")
    return match[1], int(match[2]) if match[2] else None


def _stored_dims(conn: psycopg.Connection, table_schema: str, table: str, sample_rows: int) -> int | None:
    query = sql.SQL(
        "SELECT DISTINCT vector_dims({col}) FROM (SELECT {col} FROM {tbl} WHERE {col} IS NOT NULL LIMIT {n}) s"
    ).format(col=sql.Identifier(EMBEDDING), tbl=_ident(table_schema, table), n=sql.Literal(sample_rows))
    dims = sorted(r[0] for r in conn.execute(query).fetchall())
    if len(dims) > 1:
        raise SchemaError(
            f"{table}.{EMBEDDING} holds vectors of mixed dimensions {dims} (in {sample_rows} sampled "
            "rows): no vector(N) type fits them all, so no HNSW index can cover the table"
        )
    return dims[0] if dims else None


def _indexes(conn: psycopg.Connection, oid: int) -> tuple[IndexInfo, ...]:
    rows = conn.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid, pg_relation_size(i.indexrelid), am.amname, "
        "  array(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k), "
        "  array(SELECT o.opcname FROM unnest(i.indclass) WITH ORDINALITY u(oc, n) "
        "        JOIN pg_opclass o ON o.oid = u.oc ORDER BY u.n) "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
        "WHERE i.indrelid = %s ORDER BY c.relname",
        (oid,),
    ).fetchall()
    return tuple(IndexInfo(r[0], r[1], r[2], int(r[3]), r[4], tuple(r[5]), tuple(r[6])) for r in rows)


# --- planning (pure) --------------------------------------------------------------------------


def plan(
    schema: Schema,
    *,
    m: int = 16,
    ef_construction: int = 64,
    filter_keys: Sequence[str] = ("doc_type",),
    partial_share: float = PARTIAL_SHARE,
) -> IndexPlan:
    """Plan the column type fix and the indexes for ``schema``; pure, no server.

    Changes come in the order they must be applied: the column (kind ``column``) first, then the
    indexes (kind ``index``). An index that already exists and is valid is not planned again; one
    that exists INVALID (a failed concurrent build) is dropped and rebuilt. A value of a filter key
    held by less than ``partial_share`` of the rows gets a partial HNSW index of its own (see
    :func:`_plan_partial_hnsw`). ``notes`` on the result say what was deliberately not planned.

    Raises:
        ChangeError: HNSW cannot index the column (too many dimensions, or no vectors to size it by),
            or the parameters are out of range.
    """
    if not (2 <= m <= 100) or not (4 <= ef_construction <= 1000) or ef_construction < 2 * m:
        raise ChangeError(
            f"HNSW parameters m={m}, ef_construction={ef_construction}: allowed are 2 <= m <= 100 "
            "and 2*m <= ef_construction <= 1000 (pgvector's limits)"
        )
    result = IndexPlan()
    dims = _hnsw_dims(schema)
    if schema.dimensionless:
        result.append(_column_change(schema, dims))
        result.append(analyze_change(schema, "after the column rewrite"))
    elif not schema.analyzed:
        result.append(analyze_change(schema, "before the builds"))
    _plan_hnsw(schema, dims, m, ef_construction, result)
    _plan_gin(schema, result)
    for key in filter_keys:
        _plan_partial_hnsw(schema, key, dims, m, ef_construction, partial_share, result)
    if any(c.kind == "index" for c in result):
        result.append(analyze_change(schema, "after the builds"))
    for key in filter_keys:
        _plan_filter_key(schema, key, result)
    _plan_collection_btree(schema, result)
    return result


def analyze_change(schema: Schema, when: str) -> Change:
    """ANALYZE of the table (kind ``analyze``), named by ``when`` it runs in the plan.

    The planner chooses between HNSW and a B-tree on collection_id by the rows it expects
    ``collection_id = $1`` to select; a table LangChain has just filled has no statistics (a never
    analyzed table, or a column whose statistics a type rewrite dropped), and without them the guess
    is a fraction of a per cent, so a B-tree plus a sort looks cheaper than HNSW. Statistics are not
    configuration: undo leaves them, as autovacuum would refresh them anyway.
    """
    table = _ident(schema.table_schema, schema.table)
    state = "never analyzed" if not schema.analyzed else "analyzed"
    return Change(
        kind=ANALYZE_KIND,
        name=f"{schema.table} {when}",
        before=state,
        after="analyzed",
        reason=(
            f"Fresh statistics {when}: the planner picks HNSW over a B-tree on collection_id only when it knows "
            f"how many of the {schema.rows_estimate:,} rows the app's collection holds ({schema.table} is {state})."
        ),
        details={"sql": sql.SQL("ANALYZE {}").format(table).as_string(), "regclass": table.as_string()},
    )


def competitors(planned: Iterable[Change]) -> list[Change]:
    """The planned B-trees that lead with collection_id: the planner may take one for the app's search
    (``WHERE collection_id = $1 ORDER BY embedding <=> $2``) instead of HNSW, so each is built on its own,
    after HNSW, and kept only when it serves its own query and leaves the app's search no slower
    (:func:`ragperf.serving.adopt`)."""
    return [c for c in planned if c.details.get("competes_with_hnsw")]


def _hnsw_dims(schema: Schema) -> int:
    dims = schema.declared_dims or schema.stored_dims
    if dims is None:
        raise ChangeError(
            f"{schema.table}.{EMBEDDING} is a plain {schema.vector_type} and the table holds no vectors: "
            "cannot tell which dimension to declare; load the data first"
        )
    limit = HNSW_MAX_DIMS[schema.vector_type]
    if dims > limit:
        hint = (
            "store it as halfvec (HNSW indexes halfvec up to 4000 dimensions), e.g. an expression index on "
            f"({EMBEDDING}::halfvec({dims})) queried the same way"
            if schema.vector_type == "vector" and dims <= 4000
            else "reduce the dimension (e.g. a smaller embedding model or binary quantization)"
        )
        raise ChangeError(
            f"{schema.table}.{EMBEDDING} has {dims} dimensions; HNSW indexes {schema.vector_type} only "
            f"up to {limit} dimensions: {hint}"
        )
    if schema.declared_dims and schema.stored_dims and schema.declared_dims != schema.stored_dims:
        raise ChangeError(
            f"{schema.table}.{EMBEDDING} is declared {schema.embedding_type} but stores vectors of "
            f"{schema.stored_dims} dimensions"
        )
    return dims


def _column_change(schema: Schema, dims: int) -> Change:
    table = _ident(schema.table_schema, schema.table)
    after = f"{schema.vector_type}({dims})"
    alter = sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(table, sql.Identifier(EMBEDDING), sql.SQL(after))
    undo = sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
        table, sql.Identifier(EMBEDDING), sql.SQL(schema.vector_type)
    )
    seconds = schema.total_bytes / (REWRITE_MB_PER_S * 1024**2)
    duration = "under a second" if seconds < 1 else f"roughly {seconds:.0f} s"
    warning = (
        f"ALTER COLUMN {EMBEDDING} TYPE {after} rewrites {schema.table} ({pretty_bytes(schema.total_bytes)} "
        f"with its {len(schema.indexes)} indexes, {schema.rows_estimate:,} rows) under an ACCESS EXCLUSIVE "
        f"lock: every query of the table, the app's included, waits until it ends: {duration} "
        f"at {REWRITE_MB_PER_S:.0f} MB/s. Run it in a quiet window."
    )
    return Change(
        kind="column",
        name=f"{schema.table}.{EMBEDDING}",
        before=schema.embedding_type,
        after=after,
        reason=(
            f"{EMBEDDING} is a plain {schema.vector_type} without dimensions (LangChain's default), and "
            'pgvector refuses to build HNSW on it ("column does not have dimensions"); every stored vector '
            f"has {dims}. {warning}"
        ),
        details={
            "sql": alter.as_string(),
            "undo_sql": undo.as_string(),
            "warning": warning,
            "table_bytes": schema.total_bytes,
            "regclass": table.as_string(),
        },
    )


def _index_change(
    schema: Schema, name: str, create: sql.Composable, after: str, reason: str, result: IndexPlan, **details: Any
) -> None:
    """Append the change for index ``name`` unless it already exists and is valid."""
    existing = schema.index(name)
    if existing is not None and existing.valid:
        result.notes.append(f"{name} already exists and is valid: no change ({existing.definition})")
        return
    qualified = _ident(schema.table_schema, name)
    before = None
    if existing is not None:
        before = "invalid"
        reason = f"An INVALID leftover {name} (a failed concurrent build) exists; it is dropped and rebuilt. " + reason
    drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(qualified).as_string()
    result.append(
        Change(
            kind="index",
            name=name,
            before=before,
            after=after,
            reason=reason,
            details={
                "sql": create.as_string(),
                "undo_sql": drop,
                "regclass": qualified.as_string(),
                "rebuild_invalid": existing is not None,
                **details,
            },
        )
    )


def _plan_hnsw(schema: Schema, dims: int, m: int, ef_construction: int, result: IndexPlan) -> None:
    other = next(
        (
            i
            for i in schema.indexes
            if i.valid
            and i.method == "hnsw"
            and i.name != HNSW_INDEX
            and " WHERE " not in i.definition  # a partial index serves only its own filter
            and i.columns[:1] == (EMBEDDING,)
            and schema.opclass in i.opclasses
        ),
        None,
    )
    if other is not None:
        result.notes.append(f"a valid HNSW index with {schema.opclass} already exists ({other.name}): no second one")
        return
    create = sql.SQL(
        "CREATE INDEX CONCURRENTLY {} ON {} USING hnsw ({} {}) WITH (m = {}, ef_construction = {})"
    ).format(
        sql.Identifier(HNSW_INDEX),
        _ident(schema.table_schema, schema.table),
        sql.Identifier(EMBEDDING),
        sql.SQL(schema.opclass),
        sql.Literal(m),
        sql.Literal(ef_construction),
    )
    reason = (
        f"Only an HNSW index with {schema.opclass} serves the app's ORDER BY {EMBEDDING} "
        f"{schema.distance_operator} $1 LIMIT k; without it every search reads and sorts all "
        f"{schema.rows_estimate:,} rows. It returns hnsw.ef_search candidates before the collection/metadata "
        "filter: measure recall and rows returned (recall_at_k)."
    )
    _index_change(
        schema,
        HNSW_INDEX,
        create,
        f"hnsw ({EMBEDDING} {schema.opclass}) m={m} ef_construction={ef_construction}",
        reason,
        result,
        method="hnsw",
        rows_estimate=schema.rows_estimate,
        dims=dims,
        m=m,
        ef_construction=ef_construction,
        graph_bytes=hnsw_graph_bytes(schema.rows_estimate, dims, m),
    )


def _plan_gin(schema: Schema, result: IndexPlan) -> None:
    meta = schema.metadata_column
    why_not = (
        f"a GIN index (jsonb_path_ops or jsonb_ops) serves @>, @? and @@ but not jsonb_path_match({meta}, ...), "
        "which the app's equality filter compiles to, so it does not speed up the app's filter"
    )
    if schema.metadata_type != "jsonb":
        result.notes.append(
            f"{meta} is {schema.metadata_type}: GIN needs jsonb, and converting the column would "
            f"change the app's schema; no GIN planned (and {why_not})"
        )
        return
    gin = next((i for i in schema.indexes if i.method == "gin" and i.columns[:1] == (meta,) and i.valid), None)
    if gin is not None:
        result.notes.append(
            f"{gin.name} ({', '.join(gin.opclasses)}) already indexes {meta} (LangChain creates it): "
            f"no GIN change; note that {why_not}"
        )
        return
    create = sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} USING gin ({} jsonb_path_ops)").format(
        sql.Identifier(GIN_INDEX), _ident(schema.table_schema, schema.table), sql.Identifier(meta)
    )
    _index_change(
        schema,
        GIN_INDEX,
        create,
        f"gin ({meta} jsonb_path_ops)",
        f"LangChain's usual GIN on {meta} is missing; it serves containment (@>) and jsonpath (@?, @@) "
        f"filters. Honestly: {why_not}.",
        result,
        method="gin",
    )


def _plan_filter_key(schema: Schema, key: str, result: IndexPlan) -> None:
    _check_key(key)
    meta = schema.metadata_column
    name = f"ragperf_embedding_{key}"
    table = _ident(schema.table_schema, schema.table)
    create = sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} (collection_id, ({} ->> {}))").format(
        sql.Identifier(name), table, sql.Identifier(meta), sql.Literal(key)
    )
    counts = schema.filter_values.get(key) or {}
    rarest = min(counts, key=counts.get) if counts else ""
    serves = sql.SQL(
        "SELECT id FROM {} WHERE collection_id = %(collection_id)s AND {} ->> {} = ANY(%(values)s)"
    ).format(table, sql.Identifier(meta), sql.Literal(key))
    _index_change(
        schema,
        name,
        create,
        f"btree (collection_id, ({meta} ->> '{key}'))",
        f"Serves filters written as {meta}->>'{key}' (LangChain's $in, $nin, $like) within a collection. "
        f"The legacy app's equality filter compiles to jsonb_path_match({meta}, '$.{key} == $value'), "
        "which cannot use this index: check explain_legacy_query before counting on it. It leads with "
        "collection_id, so it competes with HNSW for the app's search: built after HNSW and kept only if it "
        "serves its own query and leaves the app's search no slower.",
        result,
        method="btree",
        competes_with_hnsw=True,
        serves=f"LangChain's $in filter on {key} within the collection ({key} = '{rarest}')",
        serves_sql=serves.as_string(),
        serves_params={"values": [rarest]},
    )


def legacy_filter_sql(meta: str, key: str, value: str) -> sql.Composed:
    """The app's ``$eq`` filter on ``key`` with ``value`` as constants, as LangChain compiles it."""
    return sql.SQL("jsonb_path_match({}, {}::jsonpath, {}::jsonb)").format(
        sql.Identifier(meta), sql.Literal(f"$.{key} == $value"), sql.Literal(json.dumps({"value": value}))
    )


def _plan_partial_hnsw(
    schema: Schema, key: str, dims: int, m: int, ef_construction: int, share_limit: float, result: IndexPlan
) -> None:
    """A partial HNSW index for each value of ``key`` rarer than ``share_limit`` of the rows.

    The full HNSW index hands ``hnsw.ef_search`` candidates (40 by default) to the filter: a value held
    by 2 % of the rows leaves about one, where the app asked for 8, and iterative scans find more but
    not the nearest. A partial index ``WHERE <the app's own filter expression>`` holds only that
    value's rows; the planner uses it because each request's plan sees the filter's constants
    (the app opens a new connection per request, so its statements are never generic plans).
    """
    counts = schema.filter_values.get(key) or {}
    total = sum(counts.values())
    for value, count in sorted(counts.items()):
        share = count / total if total else 1.0
        if share >= share_limit:
            continue
        if not re.fullmatch(r"[a-z0-9_]{1,30}", value):
            result.notes.append(f"{key} = {value!r} is rare ({share:.1%}) but not a plain name: no partial index")
            continue
        name = f"ragperf_hnsw_{key}_{value}"
        create = sql.SQL(
            "CREATE INDEX CONCURRENTLY {} ON {} USING hnsw ({} {}) WITH (m = {}, ef_construction = {}) WHERE {}"
        ).format(sql.Identifier(name), _ident(schema.table_schema, schema.table), sql.Identifier(EMBEDDING),
                 sql.SQL(schema.opclass), sql.Literal(m), sql.Literal(ef_construction),
                 legacy_filter_sql(schema.metadata_column, key, value))  # fmt: skip
        reason = (
            f"{key} = '{value}' holds {count:,} of {total:,} rows ({share:.1%}): through the full HNSW index a "
            f"filtered search keeps about {share:.1%} of hnsw.ef_search candidates, fewer than the k the app asks "
            "for. A partial index on exactly the app's filter expression serves these searches with full "
            "results (check rows returned and recall)."
        )
        _index_change(schema, name, create, f"hnsw ({EMBEDDING} {schema.opclass}) WHERE {key} = '{value}'", reason,
                      result, method="hnsw", rows_estimate=count, dims=dims, m=m, ef_construction=ef_construction,
                      graph_bytes=hnsw_graph_bytes(count, dims, m))  # fmt: skip


def _plan_collection_btree(schema: Schema, result: IndexPlan) -> None:
    leading = next(
        (i for i in schema.indexes if i.valid and i.columns[:1] == ("collection_id",) and i.name != COLLECTION_INDEX),
        None,
    )
    if leading is not None:
        result.notes.append(f"{leading.name} already leads with collection_id: no B-tree on collection_id planned")
        return
    table = _ident(schema.table_schema, schema.table)
    create = sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} (collection_id)").format(
        sql.Identifier(COLLECTION_INDEX), table
    )
    serves = sql.SQL("SELECT id FROM {} WHERE collection_id = %(collection_id)s").format(table)
    _index_change(
        schema,
        COLLECTION_INDEX,
        create,
        "btree (collection_id)",
        "The foreign key collection_id has no index: deleting a collection (ON DELETE CASCADE) scans the "
        "whole table, and a selective collection filter cannot use one. It competes with HNSW for the app's "
        "search (a B-tree on collection_id plus a sort, instead of HNSW): built after HNSW and kept only if it "
        "serves its own query and leaves the app's search no slower.",
        result,
        method="btree",
        competes_with_hnsw=True,
        serves="rows of one collection (LangChain's delete and get by collection, ON DELETE CASCADE)",
        serves_sql=serves.as_string(),
    )


def hnsw_graph_bytes(rows: int, dims: int, m: int) -> int:
    """Estimated memory of an HNSW build's in-memory graph: per row the vector, 2*m layer-0 neighbours, overhead.

    The estimate (4 bytes a dimension + 16 bytes a neighbour + 168 bytes) is within a few per cent of where
    pgvector 0.8 reports "hnsw graph no longer fits into maintenance_work_mem".
    """
    return int(max(rows, 0) * (dims * 4 + 8 + m * 2 * 16 + 160))


def maintenance_work_mem_kb(
    rows: int, dims: int, m: int, *, ram_bytes: int, ram_share: float = 0.25, current_kb: int = 65_536
) -> int:
    """The maintenance_work_mem (kB) for an HNSW build: the graph plus 20 %, capped at ``ram_share`` of RAM.

    Never below ``current_kb`` (the server's own setting): a build must not get less than it would anyway.
    """
    if not 0 < ram_share <= 0.9:
        raise ValueError(f"ram_share {ram_share}: allowed is 0 < ram_share <= 0.9")
    wanted = math.ceil(hnsw_graph_bytes(rows, dims, m) * 1.2 / 1024)
    cap = int(ram_bytes * ram_share / 1024)
    return max(current_kb, min(wanted, cap))


# --- applying ---------------------------------------------------------------------------------


def _autocommit(connect: Callable[[], psycopg.Connection]) -> psycopg.Connection:
    conn = connect()
    if not conn.autocommit:
        conn.autocommit = True  # CREATE INDEX CONCURRENTLY cannot run in a transaction block
    return conn


def _current_type(conn: psycopg.Connection, regclass: str) -> str | None:
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s",
        (regclass, EMBEDDING),
    ).fetchone()
    return row[0] if row else None


class ColumnApplier:
    """Changes the type of ``embedding`` (kind ``column``): ``vector`` <-> ``vector(N)``; idempotent both ways.

    Attributes:
        timings: seconds each ALTER took, by change name.
    """

    kind = "column"

    def __init__(self, connect: Callable[[], psycopg.Connection], *, lock_timeout: str = "10s") -> None:
        """``lock_timeout`` bounds the wait for the exclusive lock, so the app is not queued behind the ALTER."""
        self.connect = connect
        self.lock_timeout = lock_timeout
        self.timings: dict[str, float] = {}

    def apply(self, changes: Sequence[Change]) -> None:
        """Alter each column to its ``after`` type (skipped when it already has it)."""
        for change in changes:
            self._alter(change, change.after, change.details["sql"])

    def undo(self, changes: Sequence[Change]) -> None:
        """Alter each column back to its ``before`` type (skipped when it already has it)."""
        for change in changes:
            self._alter(change, change.before, change.details["undo_sql"])

    def _alter(self, change: Change, target: str, statement: str) -> None:
        with _autocommit(self.connect) as conn:
            current = _current_type(conn, change.details["regclass"])
            if current is None:
                raise ChangeError(f"{change.name}: column not found")
            if current == target:
                log.info("%s is already %s", change.name, target)
                return
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (self.lock_timeout,))
            started = time.perf_counter()
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                hint = (
                    " (drop the HNSW index on it first: undo the index changes before this one)"
                    if ("does not have dimensions" in str(exc))
                    else ""
                )
                raise ChangeError(f"{change.name}: {current} -> {target} failed: {exc}{hint}") from exc
            self.timings[change.name] = round(time.perf_counter() - started, 3)
            log.info("%s: %s -> %s in %.1f s", change.name, current, target, self.timings[change.name])


class AnalyzeApplier:
    """Runs ANALYZE (kind ``analyze``) so that the planner sees the table as it now is.

    Statistics are not configuration, and no statement restores older ones: undo leaves them, which is
    what autovacuum would do anyway (a rolled-back table is analyzed again by it when enough changed).
    """

    kind = ANALYZE_KIND

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self.connect = connect
        self.timings: dict[str, float] = {}

    def apply(self, changes: Sequence[Change]) -> None:
        """ANALYZE each change's table."""
        with _autocommit(self.connect) as conn:
            for change in own(self, changes):
                started = time.perf_counter()
                conn.execute(change.details["sql"])
                self.timings[change.name] = round(time.perf_counter() - started, 3)

    def undo(self, changes: Sequence[Change]) -> None:
        """Nothing to restore: the statistics stay (see the class)."""
        for change in own(self, changes):
            log.info("%s: statistics are kept on undo", change.name)


@dataclass
class BuildReport:
    """What one index build did."""

    seconds: float = 0.0
    maintenance_work_mem: str = ""
    max_parallel_maintenance_workers: int = 0
    phases: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def graph_spilled(self) -> bool:
        """True when pgvector said the HNSW graph outgrew maintenance_work_mem (a much slower build)."""
        return any(GRAPH_NOTICE in n for n in self.notices)


class IndexApplier:
    """Builds and drops indexes (kind ``index``) with CREATE/DROP INDEX CONCURRENTLY.

    Attributes:
        timings: seconds each build took, by index name.
        builds: a :class:`BuildReport` per index built (settings, progress phases, notices).
    """

    kind = "index"

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        *,
        progress: bool = True,
        maintenance_work_mem: str | None = None,
        max_parallel_maintenance_workers: int = 2,
        ram_bytes: int | None = None,
        ram_share: float = 0.25,
        poll_s: float = 0.2,
    ) -> None:
        """Args:
        connect: opens a new connection to the app's database (made autocommit here).
        progress: show a progress bar fed from pg_stat_progress_create_index.
        maintenance_work_mem: a fixed value (e.g. "2GB") for every build; by default HNSW builds get
            :func:`maintenance_work_mem_kb` (the graph, capped at ``ram_share`` of ``ram_bytes``).
        max_parallel_maintenance_workers: for the build's session (pgvector >= 0.6 builds HNSW in parallel).
        ram_bytes: the database server's RAM; by default this machine's, right for the lab.
        ram_share: the largest share of RAM one build may take.
        poll_s: how often progress is read.
        """
        if max_parallel_maintenance_workers < 0:
            raise ValueError(f"max_parallel_maintenance_workers {max_parallel_maintenance_workers}: must be >= 0")
        self.connect = connect
        self.progress = progress
        self.maintenance_work_mem = maintenance_work_mem
        self.max_parallel_maintenance_workers = max_parallel_maintenance_workers
        self.ram_bytes = ram_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        self.ram_share = ram_share
        self.poll_s = poll_s
        self.timings: dict[str, float] = {}
        self.builds: dict[str, BuildReport] = {}

    def apply(self, changes: Sequence[Change]) -> None:
        """Build each index; an INVALID leftover of the same name is dropped first, a valid one kept."""
        with _autocommit(self.connect) as conn:
            for change in changes:
                state = _index_state(conn, change.details["regclass"])
                if state == "valid":
                    log.info("%s already exists and is valid: kept", change.name)
                    continue
                if state == "invalid":
                    log.info("dropping the INVALID leftover %s before rebuilding it", change.name)
                    conn.execute(change.details["undo_sql"])
                report = self._configure(conn, change)
                self._build(conn, change, report)
                if _index_state(conn, change.details["regclass"]) != "valid":
                    raise ChangeError(
                        f"index {change.name} was built but pg_index.indisvalid is false: drop it "
                        "(undo) and look for its error in the server log"
                    )

    def undo(self, changes: Sequence[Change]) -> None:
        """Drop each index (DROP INDEX CONCURRENTLY IF EXISTS); an INVALID ``before`` is not recreated."""
        with _autocommit(self.connect) as conn:
            for change in changes:
                conn.execute(change.details["undo_sql"])

    def report(self) -> pd.DataFrame:
        """One row per build: seconds, settings, whether the graph spilled out of memory."""
        rows = [
            {
                "index": name,
                "seconds": b.seconds,
                "maintenance_work_mem": b.maintenance_work_mem,
                "workers": b.max_parallel_maintenance_workers,
                "graph_spilled": b.graph_spilled,
                "phases": " > ".join(b.phases),
            }
            for name, b in self.builds.items()
        ]
        return pd.DataFrame(
            rows, columns=["index", "seconds", "maintenance_work_mem", "workers", "graph_spilled", "phases"]
        )

    def _configure(self, conn: psycopg.Connection, change: Change) -> BuildReport:
        setting = self.maintenance_work_mem
        if setting is None:
            current = int(
                conn.execute("SELECT setting FROM pg_settings WHERE name = 'maintenance_work_mem'").fetchone()[0]
            )
            setting = f"{current}kB"
            if change.details.get("method") == "hnsw":
                d = change.details
                kb = maintenance_work_mem_kb(
                    d["rows_estimate"],
                    d["dims"],
                    d["m"],
                    ram_bytes=self.ram_bytes,
                    ram_share=self.ram_share,
                    current_kb=current,
                )
                setting = f"{kb}kB"
                if kb * 1024 < d["graph_bytes"]:
                    log.warning(
                        "%s: the HNSW graph (~%s) exceeds %s of RAM; the build will spill to disk",
                        change.name,
                        pretty_bytes(d["graph_bytes"]),
                        f"{self.ram_share:.0%}",
                    )
        conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (setting,))
        conn.execute(
            "SELECT set_config('max_parallel_maintenance_workers', %s, false)",
            (str(self.max_parallel_maintenance_workers),),
        )
        return BuildReport(
            maintenance_work_mem=setting, max_parallel_maintenance_workers=self.max_parallel_maintenance_workers
        )

    def _build(self, conn: psycopg.Connection, change: Change, report: BuildReport) -> None:
        self.builds[change.name] = report

        def on_notice(diag: psycopg.errors.Diagnostic) -> None:
            report.notices.append(diag.message_primary or "")
            if GRAPH_NOTICE in (diag.message_primary or ""):
                log.warning("%s: %s (slow build: raise maintenance_work_mem)", change.name, diag.message_primary)

        conn.add_notice_handler(on_notice)
        started = time.perf_counter()
        try:
            if self.progress:
                self._build_watched(conn, change, report)
            else:
                conn.execute(change.details["sql"])
        finally:
            conn.remove_notice_handler(on_notice)
            report.seconds = round(time.perf_counter() - started, 3)
        self.timings[change.name] = report.seconds

    def _build_watched(self, conn: psycopg.Connection, change: Change, report: BuildReport) -> None:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                conn.execute(change.details["sql"])
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)

        pid = conn.info.backend_pid
        worker = threading.Thread(target=run, name=f"build {change.name}", daemon=True)
        with _autocommit(self.connect) as watch, progress_bar(desc=change.name, unit="tuple", leave=True) as bar:
            worker.start()
            try:
                while worker.is_alive():
                    _show_progress(watch, pid, bar, report)
                    worker.join(self.poll_s)
            except BaseException:
                conn.cancel_safe()  # a KeyboardInterrupt must not leave the build running; undo drops the leftover
                worker.join()
                raise
        if errors:
            raise errors[0]


def _show_progress(watch: psycopg.Connection, pid: int, bar: Any, report: BuildReport) -> None:
    row = watch.execute(
        "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total "
        "FROM pg_stat_progress_create_index WHERE pid = %s",
        (pid,),
    ).fetchone()
    if row is None:
        return
    phase, blocks_done, blocks_total, tuples_done, tuples_total = row
    if not report.phases or report.phases[-1] != phase:
        report.phases.append(phase)
    done, total, unit = (tuples_done, tuples_total, "tuple") if tuples_total else (blocks_done, blocks_total, "block")
    bar.unit, bar.total, bar.n = unit, total or None, done
    bar.set_postfix_str(phase, refresh=False)
    bar.refresh()


def _index_state(conn: psycopg.Connection, regclass: str) -> str | None:
    row = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (regclass,)).fetchone()
    return None if row is None else "valid" if row[0] else "invalid"


# --- verifying --------------------------------------------------------------------------------


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


# --- helpers ----------------------------------------------------------------------------------


def _ident(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def pretty_bytes(size: float) -> str:
    """1536 -> '1.5 kB'."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
