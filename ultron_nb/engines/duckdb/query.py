"""A DuckDB node's query: its input tables as views, one ``SELECT``, the result as a file.

:func:`run_query` declares each input table (:class:`TableFiles`: the flow table's files in
order, their format and declared columns) as a view named like the flow table, checks that the
node's SQL is exactly one query, binds the named parameters it uses (``$window_start``, a
node parameter ...) from the values given, and writes the result atomically (a hidden
temporary file renamed into place) as Parquet, JSON lines or CSV. :func:`read_table` reads a
table the same way into a DataFrame (previews, Python nodes).

SQL values — file lists, the output path, the named parameters — are bound, never formatted
into the text; table names go through :func:`~.connection.ident`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ultron_nb.engines.duckdb.connection import connect, ident, scan_sql
from ultron_nb.errors import ConfigError, DataError, SqlError

if TYPE_CHECKING:
    import pandas as pd

#: Output formats and the file extension each gets.
FORMATS = {"parquet": ".parquet", "json": ".jsonl", "csv": ".csv"}

#: DuckDB type → the Flink SQL type a reader of the output declares.
_TO_FLINK = {
    "VARCHAR": "STRING", "BOOLEAN": "BOOLEAN", "TINYINT": "TINYINT", "SMALLINT": "SMALLINT",
    "INTEGER": "INT", "BIGINT": "BIGINT", "HUGEINT": "DECIMAL(38, 0)",
    "UTINYINT": "SMALLINT", "USMALLINT": "INT", "UINTEGER": "BIGINT",
    "UBIGINT": "DECIMAL(20, 0)", "FLOAT": "FLOAT", "DOUBLE": "DOUBLE", "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP(3)", "TIMESTAMP_MS": "TIMESTAMP(3)", "TIMESTAMP_S": "TIMESTAMP(3)",
    "TIMESTAMP_NS": "TIMESTAMP(9)", "TIMESTAMP WITH TIME ZONE": "TIMESTAMP_LTZ(3)",
}


@dataclass(frozen=True)
class TableFiles:
    """A flow table as a DuckDB node reads it.

    ``files`` in read order; ``fmt`` is ``json``, ``parquet`` or ``csv``; ``columns`` are
    (name, DuckDB type): JSON is read with exactly these columns (other keys, such as a
    hidden watermark column, are ignored), and a table without files yet is an empty table
    of these columns. The files must be complete (see :mod:`ultron_nb.engines.outputs`
    for files a Flink sink is still writing).
    """

    name: str
    files: tuple[str, ...]
    fmt: str
    columns: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class QueryOutput:
    """What :func:`run_query` wrote: the file, its row count and (name, DuckDB type)s."""

    path: Path
    rows: int
    columns: list[tuple[str, str]]


def flink_type(duck_type: str) -> str:
    """The Flink SQL type for a DuckDB column type (``STRING`` when there is no match)."""
    text = duck_type.upper().strip()
    return text if text.startswith("DECIMAL") else _TO_FLINK.get(text, "STRING")


def check_query(sql: str, *, what: str) -> None:
    """Raise :class:`SqlError` unless ``sql`` parses as exactly one query."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlError(f"{what}: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise SqlError(f"{what}: expected one SELECT, found {len(statements)} statements")
    if statements[0].type is not duckdb.StatementType.SELECT:
        kind = str(statements[0].type).rsplit(".", 1)[-1]
        raise SqlError(f"{what}: expected a SELECT query, not {kind}")


def bound_parameters(sql: str, values: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    """The named parameters ``sql`` uses (``$name``), taken from ``values``."""
    check_query(sql, what=what)
    used = set(duckdb.extract_statements(sql)[0].named_parameters)
    missing = sorted(used - set(values))
    if missing:
        raise SqlError(
            f"{what}: no value for ${', $'.join(missing)} (known: "
            f"{', '.join('$' + k for k in sorted(values)) or 'none'})"
        )
    return {k: values[k] for k in sorted(used)}


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def declare(con: duckdb.DuckDBPyConnection, table: TableFiles, what: str) -> None:
    """Make ``table`` a view (or an empty table of its columns) of connection ``con``."""
    _declare(con, table, what)


def _declare(con: duckdb.DuckDBPyConnection, table: TableFiles, what: str) -> None:
    name = ident(table.name)
    if not table.files:
        if not table.columns:
            raise DataError(f"{what}: table {table.name!r} has no data yet (and no known "
                            "columns)")
        cols = ", ".join(f"{ident(c)} {t}" for c, t in table.columns)
        con.execute(f"CREATE TEMP TABLE {name} ({cols})")
        return
    columns = dict(table.columns) if table.fmt == "json" and table.columns else None
    scan, extra = scan_sql(table.fmt, columns=columns)
    try:
        con.sql(f"SELECT * FROM {scan}", params=[list(table.files), *extra]) \
            .create_view(table.name, replace=True)
    except duckdb.Error as exc:
        raise DataError(f"{what}: table {table.name!r}: {_first_line(exc)}") from None


def run_query(
    sql: str,
    tables: Sequence[TableFiles],
    *,
    output: Path,
    fmt: str = "parquet",
    values: Mapping[str, Any] | None = None,
    what: str = "query",
    threads: int | None = None,
) -> QueryOutput:
    """Run ``sql`` over ``tables``; write the result to ``output`` (replaced atomically)."""
    if fmt not in FORMATS:
        raise ConfigError(f"{what}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    params = bound_parameters(sql, values or {}, what=what)
    con = connect(threads=threads)
    try:
        for table in tables:
            _declare(con, table, what)
        try:
            result = con.sql(sql, params=params)
            if result is None:
                raise SqlError(f"{what}: the query returns no rows")
            result.create_view("__ultron_result", replace=True)
            columns = [(str(c), str(t)) for c, t in zip(result.columns, result.types,
                                                        strict=True)]
        except duckdb.Error as exc:
            raise SqlError(f"{what}: {_first_line(exc)}") from None
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp")
        options = {"parquet": "FORMAT parquet", "json": "FORMAT json",
                   "csv": "FORMAT csv, HEADER true"}[fmt]
        try:
            written = con.execute(f"COPY __ultron_result TO ? ({options})", [str(tmp)])
            row = written.fetchone()
        except duckdb.Error as exc:
            tmp.unlink(missing_ok=True)
            raise SqlError(f"{what}: {_first_line(exc)}") from None
        os.replace(tmp, output)
        return QueryOutput(output, int(row[0]) if row else 0, columns)
    finally:
        con.close()


def read_table(table: TableFiles, *, limit: int | None = None) -> pd.DataFrame:
    """The rows of ``table`` as a DataFrame (the last ``limit`` of them), read as a query
    reads it: with its declared columns, and empty with them when it has no files."""
    con = connect(threads=1)
    try:
        _declare(con, table, "read")
        frame = con.sql(f"SELECT * FROM {ident(table.name)}").df()
    except duckdb.Error as exc:
        raise DataError(f"table {table.name!r}: {_first_line(exc)}") from None
    finally:
        con.close()
    if limit is not None and len(frame) > limit:
        frame = frame.iloc[-limit:].reset_index(drop=True)
    return frame
