"""History into Kafka-like logical partitions ordered by event time (the local topic layout).

How :func:`prepare_topic` works, in three DuckDB statements plus one ``COPY`` per partition:

1. :func:`~.sources.inspect_source` checks and profiles the input (one scan of the key and
   time columns); any error-severity problem raises :class:`~ultron_nb.errors.DataError`
   before anything is written.
2. One scan stages the rows of ``[start, end)`` in a temporary table with their partition
   ``hash(key) % N`` and their event time converted to naive UTC.
3. Each partition is written with ``COPY (SELECT ... WHERE p = k ORDER BY time, key, input
   position) TO 'p000k/seg-00000000.jsonl' (FORMAT json)``: one segment per partition, in
   exactly the order Flink must replay it. Sorting by event time first is cheaper than the
   ``ORDER BY key, time`` of a plain export, and each sort covers one partition only.

**Partitioner.** ``hash(key) % N`` uses DuckDB's 64-bit ``hash()`` of the key value (of all key
columns for a compound key). It is deterministic across runs, processes and machines for a given
DuckDB version; the manifest records ``partitioner`` and ``duckdb_version`` so that a change of
DuckDB, which may change the hash, is visible.

**Determinism.** Rows are ordered by (event time, key, input position): the position is the
row's place in the input (files in path order, rows in file order), which the staging table keeps
because insertion order is preserved. So the order is total and the output is byte-identical for
identical input and arguments: re-running reproduces the same files and manifest.

**Atomicity.** Everything is written into a hidden sibling directory, which then replaces
``out`` (two renames: ``out`` to a hidden old name, the new directory to ``out``; the old one is
then removed). A reader sees the old topic or the new one, never a half-written one; between the
two renames ``out`` is briefly absent. ``out`` is only replaced if it is absent, empty, or a
topic this function wrote.

**JSON for Flink.** One object per line; the event time and every other ``TIMESTAMP`` column is
written ``YYYY-MM-DD HH:MM:SS.sss`` (what Flink's ``json`` format reads for ``TIMESTAMP(3)``
with the default ``json.timestamp-format.standard = 'SQL'``); ``TIMESTAMPTZ`` columns are written
in UTC with a trailing ``Z`` (Flink's ``TIMESTAMP_LTZ(3)``).

**Null keys** are never dropped: with ``null_keys="fail"`` (default) they are an error counted per
file; with ``null_keys="route"`` they are written, ordered by time, to ``OUT/_null_keys.jsonl``
(hidden from Flink's file source by its leading underscore) and counted in the manifest.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from ultron_nb.engines.duckdb.connection import connect, ident, temporal_kind, utc_timestamp
from ultron_nb.engines.duckdb.remote import mask
from ultron_nb.engines.duckdb.report import Manifest, PartitionStats, SourceFile
from ultron_nb.engines.duckdb.sources import FILE_COL, SourcePlan, inspect_source, key_null_sql
from ultron_nb.engines.topics import MANIFEST, LocalTopic, partition_name, segment_name
from ultron_nb.errors import ConfigError, DataError, EngineError

log = logging.getLogger(__name__)

TS_FORMAT = "%Y-%m-%d %H:%M:%S.%g"
NULL_KEYS_FILE = "_null_keys.jsonl"
STAGE = "__ultron_stage"
P_COL = "__ultron_p"
TS_COL = "__ultron_ts"

_FLINK_TYPES = {
    "BOOLEAN": "BOOLEAN", "TINYINT": "TINYINT", "SMALLINT": "SMALLINT", "INTEGER": "INT",
    "BIGINT": "BIGINT", "HUGEINT": "DECIMAL(38, 0)", "UTINYINT": "SMALLINT",
    "USMALLINT": "INT", "UINTEGER": "BIGINT", "UBIGINT": "DECIMAL(20, 0)", "FLOAT": "FLOAT",
    "DOUBLE": "DOUBLE", "VARCHAR": "STRING", "DATE": "DATE", "TIME": "TIME(3)",
    "TIMESTAMP": "TIMESTAMP(3)", "TIMESTAMP_S": "TIMESTAMP(3)", "TIMESTAMP_MS": "TIMESTAMP(3)",
    "TIMESTAMP_NS": "TIMESTAMP(3)", "TIMESTAMP WITH TIME ZONE": "TIMESTAMP_LTZ(3)",
    "BLOB": "BYTES", "JSON": "STRING", "UUID": "STRING",
}


def flink_type(duck_type: str) -> str:
    """The Flink SQL type a DuckDB column is declared with in the topic manifest."""
    text = duck_type.upper()
    kind = temporal_kind(text)
    if kind == "tz":
        return "TIMESTAMP_LTZ(3)"
    if kind == "naive" and text != "DATE":
        return "TIMESTAMP(3)"
    if text.startswith("DECIMAL"):
        return text.replace(",", ", ")
    if text.endswith("[]"):
        return f"ARRAY<{flink_type(duck_type[:-2])}>"
    return _FLINK_TYPES.get(text, "STRING")


def normalize_key(key: str | Sequence[str]) -> tuple[str, ...]:
    keys = (key,) if isinstance(key, str) else tuple(key)
    if not keys or any(not isinstance(k, str) or not k for k in keys):
        raise ConfigError("key: give one column name or a list of column names")
    return keys


def _check_out(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    manifest = out / MANIFEST
    if manifest.is_file():
        topic = LocalTopic.open(out)
        if topic.extra.get("prepared_by") == "ultron_nb.backtrack":
            return
    if any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not a topic written by backtrack prepare; "
                          "refusing to replace it (choose another path or remove it)")


def _swap(tmp: Path, out: Path) -> None:
    old: Path | None = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _output_select(plan: SourcePlan) -> list[str]:
    """The JSON columns, in source order: timestamps formatted for Flink."""
    cols = []
    for name, typ in plan.columns:
        q = ident(name)
        if name == plan.time:
            cols.append(f"strftime(s.{TS_COL}, '{TS_FORMAT}') AS {q}")
        elif typ.upper() != "DATE" and temporal_kind(typ) == "naive":
            cols.append(f"strftime({utc_timestamp('s.' + q, typ)}, '{TS_FORMAT}') AS {q}")
        elif temporal_kind(typ) == "tz":
            cols.append(f"strftime({utc_timestamp('s.' + q, typ)}, '{TS_FORMAT}Z') AS {q}")
        else:
            cols.append(f"s.{q}")
    return cols


def _order_by(plan: SourcePlan) -> str:
    """Event time, then key, then input position: a total, reproducible order.

    The staging table is filled with insertion order preserved, so its ``rowid`` is the
    position of the row in the input (files in path order, rows in file order).
    """
    return ", ".join([f"s.{TS_COL}", *(f"s.{ident(k)}" for k in plan.key), "s.rowid"])


def prepare_topic(source: str | Path, *, key: str | Sequence[str], time: str, partitions: int,
                  start: Any, end: Any, out: str | Path, fmt: str | None = None,
                  allow: Iterable[str] = (), null_keys: str = "fail",
                  threads: int | None = None, memory_limit: str | None = None,
                  storage_options: Mapping[str, Any] | None = None) -> Manifest:
    """Re-organise ``source`` history of ``[start, end)`` into ``partitions`` ordered partitions.

    See the module docstring for the layout, the partitioner and the guarantees. Raises
    :class:`~ultron_nb.errors.DataError` (naming files and columns) when the input has problems
    not listed in ``allow``.
    """
    keys = normalize_key(key)
    if not isinstance(partitions, int) or partitions < 1:
        raise ConfigError(f"partitions: {partitions!r} is not a positive integer")
    if not time:
        raise ConfigError("time: the event-time column is required")
    target = Path(out).expanduser().resolve()
    _check_out(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    spill = target.parent / f".{target.name}.spill-{tag}"
    con = connect(threads=threads, memory_limit=memory_limit, temp_directory=spill)
    try:
        plan = inspect_source(con, source, key=keys, time=time, start=start, end=end, fmt=fmt,
                              allow=allow, null_keys=null_keys,
                              storage_options=storage_options)
        plan.report.raise_for_errors()
        if not plan.files:
            raise DataError(f"{mask(plan.source)}: no data file between {plan.start} and "
                            f"{plan.end}")
        manifest = _write(con, plan, partitions, tmp, target, null_keys)
        _swap(tmp, target)
        log.info("prepared %s: %d rows in %d partitions from %d files", target, manifest.rows,
                 partitions, len(plan.files))
        return manifest
    except duckdb.Error as exc:
        raise EngineError(f"DuckDB failed preparing {mask(source)}: "
                          f"{mask(str(exc).splitlines()[0])}") from None
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(spill, ignore_errors=True)


def _write(con: duckdb.DuckDBPyConnection, plan: SourcePlan, partitions: int, tmp: Path,
           target: Path, null_keys: str) -> Manifest:
    stats = _stage(con, plan, partitions, null_keys)
    columns = tuple((name, "TIMESTAMP(3)" if name == plan.time else flink_type(typ))
                    for name, typ in plan.columns)
    topic = LocalTopic(path=tmp, partitions=partitions, columns=list(columns),
                       time_column=plan.time).create()
    select, order = ", ".join(_output_select(plan)), _order_by(plan)
    part_stats: list[PartitionStats] = []
    for k in range(partitions):
        rows, lo, hi = stats.get(k, (0, None, None))
        segments: tuple[str, ...] = ()
        if rows:
            final = topic.partition_dir(k) / segment_name(0)
            _copy(con, select, f"s.{P_COL} = ?", [k], order, final)
            segments = (f"{partition_name(k)}/{final.name}",)
        part_stats.append(PartitionStats(k, rows, _fmt(lo), _fmt(hi), segments))
    routed, routed_path = stats.get(None, (0, None, None))[0], None
    if routed:
        _copy(con, select, f"s.{P_COL} IS NULL", [], order, tmp / NULL_KEYS_FILE)
        routed_path = str(target / NULL_KEYS_FILE)
    con.execute(f"DROP TABLE {STAGE}")
    written = sum(p.rows for p in part_stats)
    expected = sum(p.written for p in plan.profiles.values())
    if written != expected:
        raise EngineError(f"prepare wrote {written} rows but the profile counted {expected} "
                          "rows in range with a key; nothing was replaced")
    if routed != sum(p.routed_null_keys for p in plan.profiles.values()):
        raise EngineError("prepare routed a different number of null-key rows than profiled")
    manifest = _manifest(plan, target, partitions, tuple(part_stats), columns, routed_path)
    topic.write_manifest(**manifest.to_dict())
    return manifest


def _stage(con: duckdb.DuckDBPyConnection, plan: SourcePlan, partitions: int,
           null_keys: str) -> dict[int | None, tuple[int, Any, Any]]:
    """Stage the rows of the range with their partition; (rows, min, max time) by partition
    (None: routed null keys)."""
    key_cols = ", ".join(ident(k) for k in plan.key)
    part = f"CAST(hash({key_cols}) % {int(partitions)} AS INTEGER)"
    if null_keys == "route":
        part = f"CASE WHEN {key_null_sql(plan.key)} THEN NULL ELSE {part} END"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {STAGE} AS
            SELECT * FROM (
                SELECT {part} AS {P_COL}, {plan.time_expr} AS {TS_COL},
                       * EXCLUDE ({ident(plan.time)}, {ident(FILE_COL)})
                FROM {plan.scan}
            ) WHERE {TS_COL} >= ? AND {TS_COL} < ?""",
        [*plan.scan_args(), plan.start, plan.end],
    )
    return {
        (None if p is None else int(p)): (int(n), lo, hi)
        for p, n, lo, hi in con.execute(
            f"SELECT {P_COL}, count(*), min({TS_COL}), max({TS_COL}) FROM {STAGE} GROUP BY ALL"
        ).fetchall()
    }


def _copy(con: duckdb.DuckDBPyConnection, select: str, where: str, params: list[Any],
          order: str, final: Path) -> None:
    """Write the staged rows matching ``where`` to ``final`` (via a hidden name)."""
    hidden = final.with_name("." + final.name)
    con.execute(f"COPY (SELECT {select} FROM {STAGE} AS s WHERE {where} ORDER BY {order}) "
                "TO ? (FORMAT json)", [*params, str(hidden)])
    os.replace(hidden, final)


def _manifest(plan: SourcePlan, target: Path, partitions: int,
              part_stats: tuple[PartitionStats, ...], columns: tuple[tuple[str, str], ...],
              routed_path: str | None) -> Manifest:
    problems = plan.report.problems
    warnings = tuple(f"{r['kind']}: {r['detail']} ({r['file']})"
                     for r in problems[problems["severity"] == "warning"].to_dict("records"))
    profiles = plan.profiles.values()
    return Manifest(
        path=str(target), source=mask(plan.source), fmt=plan.fmt, key=plan.key, time=plan.time,
        start=_fmt(plan.start) or "", end=_fmt(plan.end) or "", partitions=part_stats,
        files=tuple(SourceFile(mask(f.path), f.date, f.hour, plan.profiles[f.path].rows,
                               plan.profiles[f.path].written) for f in plan.files),
        columns=columns, partitioner=f"duckdb hash({', '.join(plan.key)}) % {partitions}",
        rows=sum(p.rows for p in part_stats),
        out_of_range=sum(p.out_of_range for p in profiles),
        null_keys=sum(p.null_keys for p in profiles), null_keys_path=routed_path,
        dropped_null_time=sum(p.null_time + p.bad_time for p in profiles),
        warnings=warnings, duckdb_version=duckdb.__version__,
    )


def _fmt(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of a topic written by :func:`prepare_topic`."""
    topic = LocalTopic.open(path)
    return Manifest.from_topic(str(Path(path).resolve()), topic.columns, topic.extra)
