"""DuckDB connections and inputs.

:func:`connect` opens a connection with threads from ``os.cpu_count()``, the UTC time zone and
insertion order preserved (the checks rely on scans returning rows in file order).
:func:`register_input` turns whatever a user hands a check or the feature store (a path, a glob,
a local topic directory, a pandas DataFrame, an Arrow table, a DuckDB relation) into a view.

SQL values (paths, file lists, times, limits, JSON column maps) are always bound as
parameters, including the target of ``COPY ... TO ?``. Identifiers (column and view names)
cannot be parameters, so they go through :func:`ident`, which double-quotes them and doubles
embedded quotes. Settings go through the connection's ``config`` rather than ``SET`` SQL. The
only other text formatted into SQL is this package's own constants and integers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from ultron_nb.errors import ConfigError, DataError
from ultron_nb.flow.types import is_local_zoned

log = logging.getLogger(__name__)

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet", ".parq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")

#: Flink SQL type -> DuckDB type, for reading local topics back with their declared schema.
_FLINK_TO_DUCKDB = {
    "STRING": "VARCHAR", "VARCHAR": "VARCHAR", "CHAR": "VARCHAR", "BOOLEAN": "BOOLEAN",
    "TINYINT": "TINYINT", "SMALLINT": "SMALLINT", "INT": "INTEGER", "INTEGER": "INTEGER",
    "BIGINT": "BIGINT", "FLOAT": "FLOAT", "DOUBLE": "DOUBLE", "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP", "TIMESTAMP_LTZ": "TIMESTAMPTZ",
}


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (embedded double quotes doubled)."""
    return '"' + str(name).replace('"', '""') + '"'


def connect(database: str = ":memory:", *, threads: int | None = None,
            memory_limit: str | None = None, temp_directory: str | Path | None = None,
            ) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection set up for the toolkit.

    ``threads`` defaults to ``os.cpu_count()``; the session time zone is UTC, so naive
    timestamps and ``TIMESTAMPTZ`` values convert without surprises.
    """
    config: dict[str, Any] = {
        "threads": int(threads or os.cpu_count() or 1),
        "preserve_insertion_order": True,
    }
    if memory_limit:
        config["memory_limit"] = str(memory_limit)
    if temp_directory:
        config["temp_directory"] = str(temp_directory)
    con = duckdb.connect(database, config=config)
    con.execute("SET TimeZone = 'UTC'")  # a constant; ICU loads on first use
    return con


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of ``con`` in UTC too (a cursor does not inherit its connection's ``SET``)."""
    cur = con.cursor()
    cur.execute("SET TimeZone = 'UTC'")
    return cur


def temporal_kind(duck_type: str) -> str | None:
    """``"tz"`` for time-zone-aware timestamps, ``"naive"`` for other timestamps and dates,
    None for anything else (DuckDB spells these several ways: ``TIMESTAMP_NS``,
    ``TIMESTAMPTZ_NS``, ``TIMESTAMP WITH TIME ZONE`` ...)."""
    text = duck_type.upper().strip()
    if "TIME ZONE" in text or text.startswith("TIMESTAMPTZ"):
        return "tz"
    if text.startswith("TIMESTAMP") or text == "DATE":
        return "naive"
    return None


def utc_timestamp(column: str, duck_type: str) -> str:
    """A naive UTC ``TIMESTAMP`` expression for a temporal ``column`` (already quoted)."""
    if temporal_kind(duck_type) == "tz":
        return f"timezone('UTC', CAST({column} AS TIMESTAMPTZ))"
    return f"CAST({column} AS TIMESTAMP)"


def detect_format(path: str) -> str | None:
    """``parquet``, ``json`` or ``csv`` from a file name or glob, or None."""
    lower = path.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(JSON_SUFFIXES):
        return "json"
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def normalize_format(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    value = fmt.lower().strip()
    aliases = {"parquet": "parquet", "json": "json", "jsonl": "json", "ndjson": "json",
               "csv": "csv"}
    if value not in aliases:
        raise ConfigError(f"unknown format {fmt!r} (use parquet, json or csv)")
    return aliases[value]


def scan_sql(fmt: str, *, filename: str | None = None, union_by_name: bool = True,
             columns: dict[str, str] | None = None, ignore_errors: bool = False,
             ) -> tuple[str, list[Any]]:
    """A table-function call reading the file list bound to its first ``?``.

    Returns the SQL fragment and the extra parameters after the file list. With
    ``ignore_errors``, JSON lines that do not parse (the unfinished last line of a file
    being written) are skipped.
    """
    opts = ["hive_partitioning = false"]
    params: list[Any] = []
    if filename:
        opts.append("filename = ?")
        params.append(filename)
    if union_by_name:
        opts.append("union_by_name = true")
    if fmt == "parquet":
        return f"read_parquet(?, {', '.join(opts)})", params
    if fmt == "json":
        opts.append("format = 'newline_delimited'")
        if ignore_errors:
            opts.append("ignore_errors = true")
        if columns is not None:
            opts.append("columns = ?")
            params.append(columns)
        return f"read_json(?, {', '.join(opts)})", params
    if fmt == "csv":
        return f"read_csv(?, {', '.join(opts)})", params
    raise ConfigError(f"unknown format {fmt!r}")


def duckdb_type(flink_type: str) -> str:
    """The DuckDB type to read a column of Flink SQL type ``flink_type`` as."""
    text = flink_type.strip().upper()
    base = re.sub(r"\(.*\)", "", text).strip()
    base = base.replace(" NOT NULL", "").strip()
    if is_local_zoned(base):
        return "TIMESTAMPTZ"
    if base.startswith("TIMESTAMP"):
        return "TIMESTAMP"
    if base.startswith("DECIMAL"):
        match = re.search(r"\(\s*(\d+)\s*(?:,\s*(\d+))?\s*\)", text)
        return f"DECIMAL({match.group(1)},{match.group(2) or 0})" if match else "DECIMAL(18,3)"
    return _FLINK_TO_DUCKDB.get(base, "JSON")


def topic_files(path: Path) -> tuple[list[str], dict[str, Any]]:
    """The segment files of a local topic in partition then segment order, and its manifest."""
    from ultron_nb.engines.topics import MANIFEST, LocalTopic

    topic = LocalTopic.open(path)
    files = [str(seg) for k in range(topic.partitions) for seg in topic.segments(k)]
    manifest = json.loads((path / MANIFEST).read_text())
    return files, manifest


def register_input(con: duckdb.DuckDBPyConnection, data: Any, *, what: str = "input",
                   partition_column: str | None = None) -> str:
    """Make ``data`` queryable on ``con``; return the (quoted) name of a view over it.

    ``data`` may be a pandas DataFrame, an Arrow table or reader, a DuckDB relation, or a path:
    a local topic directory (its segments, in partition order; with ``partition_column`` the
    partition number is added as that column), another directory (every Parquet or JSON-lines
    file under it), a file, or a glob (format from the extension).
    """
    name = f"__ultron_{what}_{uuid.uuid4().hex[:10]}"
    if isinstance(data, (str, Path)):
        sql, params = _path_sql(Path(data) if not _is_remote(str(data)) else data,
                                partition_column)
        # A view cannot hold prepared parameters, a relation can: bind, then name it.
        try:
            con.sql(sql, params=params).create_view(name, replace=True)
        except duckdb.Error as exc:
            raise DataError(f"{what} {data}: cannot read: {str(exc).splitlines()[0]}") from None
        return ident(name)
    if isinstance(data, duckdb.DuckDBPyRelation):
        data = data.to_arrow_table()
    try:
        con.register(name, data)
    except Exception as exc:  # duckdb raises several types for unsupported objects
        raise ConfigError(f"{what}: cannot read a {type(data).__name__} "
                          "(use a path, a pandas DataFrame, an Arrow table or a DuckDB "
                          f"relation): {exc}") from None
    return ident(name)


def read_arrow(con: duckdb.DuckDBPyConnection, data: Any, *, what: str = "input") -> Any:
    """``data`` (anything :func:`register_input` takes) as a ``pyarrow.Table``, rows in input
    order (files in path order, rows in file order)."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if isinstance(data, duckdb.DuckDBPyRelation):
        return data.to_arrow_table()
    if hasattr(data, "to_parquet") and hasattr(data, "columns"):  # pandas.DataFrame
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise DataError(f"{what}: cannot convert the DataFrame: {exc}") from None
    view = register_input(con, data, what=what)
    try:
        return con.sql(f"SELECT * FROM {view}").to_arrow_table()
    except duckdb.Error as exc:
        raise DataError(f"{what} {data}: cannot read: {str(exc).splitlines()[0]}") from None
    finally:
        release_input(con, view)


def release_input(con: duckdb.DuckDBPyConnection, view: str) -> None:
    """Forget a name made by :func:`register_input` (a view or a registered object)."""
    name = view.strip('"').replace('""', '"')
    try:
        con.unregister(name)
    except duckdb.Error:
        pass
    con.execute(f"DROP VIEW IF EXISTS {ident(name)}")


def _is_remote(path: str) -> bool:
    return "://" in path


def _path_sql(path: Path | str, partition_column: str | None) -> tuple[str, list[Any]]:
    text = str(path)
    if isinstance(path, Path) and path.is_dir():
        from ultron_nb.engines.topics import MANIFEST

        if (path / MANIFEST).is_file():
            files, manifest = topic_files(path)
            if not files:
                raise DataError(f"{path}: the topic has no segments")
            columns = manifest.get("columns") or []
            mapped = {str(c): duckdb_type(str(t)) for c, t in columns} or None
            scan, extra = scan_sql("json", filename="__ultron_file", columns=mapped)
            part = ""
            if partition_column:
                part = (", CAST(regexp_extract(__ultron_file, '[/\\\\]p([0-9]+)[/\\\\][^/\\\\]+$',"
                        f" 1) AS INTEGER) AS {ident(partition_column)}")
            return (f"SELECT * EXCLUDE (__ultron_file){part} FROM {scan}", [files, *extra])
        found = sorted(str(p) for p in path.rglob("*")
                       if p.is_file() and not p.name.startswith((".", "_"))
                       and detect_format(p.name))
        if not found:
            raise DataError(f"{path}: no Parquet or JSON-lines files under it")
        formats = {detect_format(p) for p in found}
        if len(formats) > 1:
            raise DataError(f"{path}: mixed file formats under it ({', '.join(sorted(formats))})")
        scan, extra = scan_sql(formats.pop() or "parquet")
        return f"SELECT * FROM {scan}", [found, *extra]
    fmt = detect_format(text)
    if fmt is None:
        raise ConfigError(f"{text}: cannot tell the format from the name (expected .parquet, "
                          ".json, .jsonl or .csv)")
    if isinstance(path, Path) and not any(ch in text for ch in "*?[") and not path.exists():
        raise DataError(f"{text}: no such file")
    scan, extra = scan_sql(fmt)
    return f"SELECT * FROM {scan}", [[text], *extra]


def columns_of(con: duckdb.DuckDBPyConnection, view: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of every column of ``view``."""
    rows = con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def require_columns(available: Sequence[tuple[str, str]] | Sequence[str],
                    wanted: Sequence[str], what: str) -> None:
    """Raise :class:`DataError` naming ``what`` and the missing column(s)."""
    names = [c if isinstance(c, str) else c[0] for c in available]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(f"{what}: no column {', '.join(repr(m) for m in missing)} "
                        f"(columns: {', '.join(names)})")
