"""LangChain's embedding table as it is: columns, types, dimensions, size, indexes, statistics, pgvector.

:func:`introspect` reads the table, never assuming its columns, into a :class:`Schema`: everything
planning needs, so that planning needs no server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import psycopg
from psycopg import sql

from ragperf.core.changes import ChangeError

TABLE = "langchain_pg_embedding"


EMBEDDING = "embedding"


COLLECTIONS_TABLE = "langchain_pg_collection"


METADATA_COLUMNS = ("cmetadata", "metadata")


DISTANCES = {"<=>": "cosine", "<->": "l2", "<#>": "ip", "<+>": "l1"}


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
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(table_schema, table))).fetchone()[0]
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
    check_key(key)
    rows = conn.execute(
        sql.SQL("SELECT {} ->> {}, count(*) FROM {} GROUP BY 1 ORDER BY 2 DESC LIMIT 50").format(
            sql.Identifier(meta), sql.Literal(key), ident(table_schema, table)
        )
    ).fetchall()
    return {value: int(count) for value, count in rows if value is not None}


def check_key(key: str) -> None:
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
    ).format(col=sql.Identifier(EMBEDDING), tbl=ident(table_schema, table), n=sql.Literal(sample_rows))
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


def ident(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def pretty_bytes(size: float) -> str:
    """1536 -> '1.5 kB'."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
