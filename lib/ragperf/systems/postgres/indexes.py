"""Phase 1.2, indexes: plan the column type fix, ANALYZE and the indexes of LangChain's embedding table (pure).

The legacy app's search is ``ORDER BY embedding <=> $1 LIMIT k`` with ``WHERE collection_id = ...``
and, in quality mode, ``jsonb_path_match(cmetadata, ...)``. Only an HNSW index with the operator
class of that distance operator can serve it, and pgvector refuses to build one on a ``vector``
column without dimensions, which is how LangChain creates it when ``embedding_length`` is unset.

:func:`plan` turns a :class:`~ragperf.systems.postgres.embeddings.Schema` into
:class:`~ragperf.core.changes.Change` records; :mod:`~ragperf.systems.postgres.indexbuild` makes and
unmakes them; :mod:`~ragperf.systems.postgres.appsearch` and :mod:`~ragperf.systems.postgres.serving`
show whether the app's real query uses them and what they cost in recall.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import sql

from ragperf.core.changes import Change, ChangeError
from ragperf.systems.postgres.embeddings import EMBEDDING, Schema, check_key, ident, pretty_bytes

HNSW_INDEX = "ragperf_embedding_hnsw"


GIN_INDEX = "ragperf_cmetadata_gin"


COLLECTION_INDEX = "ragperf_embedding_collection_id"


ANALYZE_KIND = "analyze"


HNSW_MAX_DIMS = {"vector": 2000, "halfvec": 4000}


PARTIAL_SHARE = 0.2  # below this share of rows a filter value gets its own partial HNSW index


REWRITE_MB_PER_S = 30.0  # rough, conservative rewrite speed for the ALTER TYPE warning (lab: ~35 MB/s)


class IndexPlan(list[Change]):
    """The planned changes (a list of :class:`Change`), plus ``notes``: what was deliberately not planned, and why."""

    def __init__(self, changes: Iterable[Change] = (), notes: Iterable[str] = ()) -> None:
        super().__init__(changes)
        self.notes: list[str] = list(notes)


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
    table = ident(schema.table_schema, schema.table)
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
    (:func:`ragperf.systems.postgres.serving.adopt`)."""
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
    table = ident(schema.table_schema, schema.table)
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
    qualified = ident(schema.table_schema, name)
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
        ident(schema.table_schema, schema.table),
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
        sql.Identifier(GIN_INDEX), ident(schema.table_schema, schema.table), sql.Identifier(meta)
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
    check_key(key)
    meta = schema.metadata_column
    name = f"ragperf_embedding_{key}"
    table = ident(schema.table_schema, schema.table)
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
        ).format(sql.Identifier(name), ident(schema.table_schema, schema.table), sql.Identifier(EMBEDDING),
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
    table = ident(schema.table_schema, schema.table)
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
