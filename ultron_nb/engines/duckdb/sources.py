"""History under ``SOURCE/date=YYYY-MM-DD/hour=HH/``: discovery and bad-input detection.

:func:`inspect_source` lists the files of the requested hours (through DuckDB's ``glob``, so any
location DuckDB reads works), reads each file's schema, and profiles the key and time columns
in one scan that attributes every row to its file (``filename`` column). Remote history
(``s3://``, ``hdfs://``, ``webhdfs://``) is read through fsspec (:mod:`.remote`). It reports, by
file and column:

``missing_partition`` (also accepted as ``missing_hour`` in ``allow``)
    an hour of the range has no data file (the expected directory is named);
``empty_partition``
    an hour's files hold no rows;
``schema_drift``
    a column is added, removed or changes type between consecutive files (both files named);
``missing_column``
    a file lacks the key or time column;
``mixed_time_units``
    the time column mixes epoch seconds, milliseconds, microseconds, nanoseconds, strings or
    typed timestamps (numbers are classified by magnitude: below 1e11 seconds, below 1e14
    milliseconds, below 1e17 microseconds, else nanoseconds);
``mixed_time_zones``
    naive and zone-qualified times are mixed, or strings carry different UTC offsets;
``bad_time``
    time strings that do not parse (an example value is given);
``null_time``
    rows without an event time (they cannot be ordered);
``null_key``
    rows whose key is NULL: counted per file, never dropped silently;
``out_of_range``
    rows of the selected hours whose event time lies outside ``[start, end)`` (severity
    ``info``: they are not written and the manifest counts them).

Every kind except ``out_of_range`` is an ``error`` unless listed in ``allow`` (then a
``warning``). With mixed units or zones allowed, each value is converted by its own detected
unit, and naive values are taken as UTC.

Event times become naive UTC ``TIMESTAMP`` values: ``TIMESTAMPTZ`` and offset strings are
converted to UTC, epoch numbers by their detected unit.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from ultron_nb.engines.duckdb.connection import (
    ident,
    scan_sql,
)
from ultron_nb.engines.duckdb.discovery import (
    HourFile,
    discover,
    file_schema,
    parquet_schemas,
    source_root,
)
from ultron_nb.engines.duckdb.remote import attach, mask
from ultron_nb.engines.duckdb.report import (
    ERROR,
    INFO,
    WARNING,
    CheckResult,
    problems_frame,
)
from ultron_nb.engines.duckdb.timeclasses import (
    ZONE_RE,
    class_expr,
    classes_for,
    conv_for_class,
    conversion_sql,
    normalize_zone,
    time_category,
    time_problems,
    typed_class,
)
from ultron_nb.engines.duckdb.times import to_utc_naive
from ultron_nb.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FILE_COL = "__ultron_file"
#: Other names accepted by ``allow``.
ALIASES = {"missing_hour": "missing_partition", "empty_hour": "empty_partition"}
PROBLEM_KINDS = (
    "missing_partition", "empty_partition", "schema_drift", "missing_column",
    "mixed_time_units", "mixed_time_zones", "bad_time", "null_time", "null_key", "out_of_range",
)


@dataclass
class FileProfile:
    rows: int = 0
    null_keys: int = 0
    null_time: int = 0
    bad_time: int = 0
    bad_example: str | None = None
    out_of_range: int = 0
    written: int = 0
    routed_null_keys: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    min_time: datetime | None = None
    max_time: datetime | None = None


@dataclass
class SourcePlan:
    """Everything :mod:`.prepare` needs to read the history, plus the bad-input report."""

    source: str
    fmt: str
    key: tuple[str, ...]
    time: str
    start: datetime
    end: datetime
    files: list[HourFile]
    columns: list[tuple[str, str]]
    scan: str
    scan_params: list[Any]
    time_expr: str
    profiles: dict[str, FileProfile]
    report: CheckResult

    def scan_args(self) -> list[Any]:
        """Parameters for :attr:`scan` (the file list first)."""
        return [[f.path for f in self.files], *self.scan_params]


# ----------------------------------------------------------------------------- time bounds
def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Every hour whose partition may hold events of ``[start, end)``."""
    hour = start.replace(minute=0, second=0, microsecond=0)
    out = []
    while hour < end:
        out.append(hour)
        hour += timedelta(hours=1)
    return out


def _fmt_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def key_null_sql(key: Sequence[str]) -> str:
    return "(" + " OR ".join(f"{ident(k)} IS NULL" for k in key) + ")"


# ----------------------------------------------------------------------------- inspection
class Problems:
    """Collects problems; a kind listed in ``allowed`` is a warning instead of an error."""

    def __init__(self, allowed: set[str]):
        self.allowed = allowed
        self.rows: list[dict[str, Any]] = []

    def __call__(self, kind: str, detail: str, *, file: str | None = None,
                 column: str | None = None, rows: int | None = None,
                 severity: str | None = None) -> None:
        sev = severity or (WARNING if kind in self.allowed else ERROR)
        self.rows.append({"kind": kind, "severity": sev, "detail": detail,
                          "file": None if file is None else mask(file), "column": column,
                          "rows": rows})


def check_allow(allow: Iterable[str], null_keys: str) -> set[str]:
    """The problem kinds to accept (``missing_hour`` is another name of
    ``missing_partition``)."""
    allowed = {ALIASES.get(a, a) for a in allow}
    unknown = allowed - set(PROBLEM_KINDS)
    if unknown:
        raise ConfigError(f"allow: unknown problem kind(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(PROBLEM_KINDS)})")
    if "null_key" in allowed:
        raise ConfigError("allow: null keys are never ignored; pass null_keys='route' to write "
                          "them aside")
    if null_keys not in ("fail", "route"):
        raise ConfigError(f"null_keys: {null_keys!r} is not 'fail' or 'route'")
    return allowed


def time_range(start: Any, end: Any) -> tuple[datetime, datetime]:
    t0, t1 = to_utc_naive(start, "from"), to_utc_naive(end, "to")
    if t1 <= t0:
        raise ConfigError(f"to ({t1}) must be after from ({t0})")
    return t0, t1


def select_files(all_files: list[HourFile], hours: list[datetime]) -> list[HourFile]:
    wanted = {(h.strftime("%Y-%m-%d"), h.hour) for h in hours}
    return [f for f in all_files if (f.date, f.hour) in wanted]


def inspect_source(con: duckdb.DuckDBPyConnection, source: str | Path, *, key: Sequence[str],
                   time: str, start: Any, end: Any, fmt: str | None = None,
                   allow: Iterable[str] = (), null_keys: str = "fail",
                   storage_options: Mapping[str, Any] | None = None) -> SourcePlan:
    """Find, check and profile the history of ``[start, end)``.

    Returns a :class:`SourcePlan` whose ``report`` lists every problem (see the module
    docstring); the caller decides whether to raise. ``null_keys="route"`` makes null keys an
    ``info`` (they are written aside) instead of an ``error``. Remote history (``s3://``,
    ``hdfs://`` ...) is read through fsspec with ``storage_options``.
    """
    add = Problems(check_allow(allow, null_keys))
    if not key:
        raise ConfigError("key: at least one key column is required")
    t0, t1 = time_range(start, end)
    root = source_root(source)
    attach(con, root, storage_options)
    all_files, fmt = discover(con, root, fmt)
    hours = hours_between(t0, t1)
    files = select_files(all_files, hours)
    present = {(f.date, f.hour) for f in files}
    for h in hours:
        d, hr = h.strftime("%Y-%m-%d"), h.hour
        if (d, hr) not in present:
            add("missing_partition", f"no data file for {d} hour {hr:02d}",
                file=f"{root}/date={d}/hour={hr:02d}/")
    if fmt == "parquet":
        columns_by_file = parquet_schemas(con, [f.path for f in files])
    else:
        columns_by_file = {f.path: file_schema(con, f.path, fmt) for f in files}
    _schema_problems(files, columns_by_file, key, time, add)
    profiles: dict[str, FileProfile] = {f.path: FileProfile() for f in files}
    union: list[tuple[str, str]] = []
    time_expr = "CAST(NULL AS TIMESTAMP)"
    scan, scan_params = scan_sql(fmt, filename=FILE_COL)
    if files:
        union, scan, scan_params, time_expr = _profile_files(
            con, root, fmt, files, columns_by_file, key, time, (t0, t1), profiles, add)
        _row_problems(root, files, profiles, key, time, (t0, t1), null_keys, add)
    report = CheckResult(
        check="source",
        problems=problems_frame(add.rows, ["file", "column", "rows"]),
        summary=_summary_frame(mask(root), fmt, hours, files, profiles, add.rows),
        details=_details_frame(files, profiles),
    )
    return SourcePlan(source=root, fmt=fmt, key=tuple(key), time=time, start=t0, end=t1,
                      files=files, columns=union, scan=scan, scan_params=scan_params,
                      time_expr=time_expr, profiles=profiles, report=report)


def _profile_files(con: duckdb.DuckDBPyConnection, root: str, fmt: str, files: list[HourFile],
                   columns_by_file: dict[str, list[tuple[str, str]]], key: Sequence[str],
                   time: str, bounds: tuple[datetime, datetime],
                   profiles: dict[str, FileProfile], add: Problems
                   ) -> tuple[list[tuple[str, str]], str, list[Any], str]:
    """Profile every file in one scan; return the union schema, the scan and the time
    expression that converts every time class found."""
    union, scan, scan_params, category, union_type = _union(con, root, fmt, files, time, key)
    classes = _profile(con, scan, [[f.path for f in files], *scan_params], key=key, time=time,
                       category=category, union_type=union_type, t0=bounds[0], t1=bounds[1],
                       profiles=profiles)
    per_file_typed = {p: typed_class(dict(cols).get(time, "TIMESTAMP"))
                      for p, cols in columns_by_file.items()}
    used = time_problems(files, profiles, classes, category, per_file_typed, time, add)
    if category == "typed":
        for path, prof in profiles.items():
            if "typed" in prof.classes:
                prof.classes[per_file_typed.get(path, "timestamp")] = prof.classes.pop("typed")
    return union, scan, scan_params, conversion_sql(category, ident(time), union_type, used)


def _row_problems(root: str, files: list[HourFile], profiles: dict[str, FileProfile],
                  key: Sequence[str], time: str, bounds: tuple[datetime, datetime],
                  null_keys: str, add: Problems) -> None:
    t0, t1 = bounds
    for f in files:
        prof = profiles[f.path]
        if prof.null_keys:
            add("null_key", f"{prof.null_keys} row(s) with a NULL key", file=f.path,
                column=", ".join(key), rows=prof.null_keys,
                severity=INFO if null_keys == "route" else None)
        if prof.null_time:
            add("null_time", f"{prof.null_time} row(s) without an event time", file=f.path,
                column=time, rows=prof.null_time)
        if prof.bad_time:
            add("bad_time", f"{prof.bad_time} time value(s) do not parse, e.g. "
                f"{prof.bad_example!r}", file=f.path, column=time, rows=prof.bad_time)
        if prof.out_of_range:
            add("out_of_range", f"{prof.out_of_range} row(s) outside [{t0}, {t1})",
                file=f.path, column=time, rows=prof.out_of_range, severity=INFO)
    by_hour: dict[tuple[str, int], int] = defaultdict(int)
    for f in files:
        by_hour[(f.date, f.hour)] += profiles[f.path].rows
    for (d, hr), rows in sorted(by_hour.items()):
        if rows == 0:
            add("empty_partition", f"the files of {d} hour {hr:02d} hold no rows",
                file=f"{root}/date={d}/hour={hr:02d}/")


def _schema_problems(files: list[HourFile], columns_by_file: dict[str, list[tuple[str, str]]],
                     key: Sequence[str], time: str, add: Any) -> None:
    previous: HourFile | None = None
    for f in files:
        cols = dict(columns_by_file[f.path])
        for needed in (*key, time):
            if needed not in cols:
                add("missing_column", f"column {needed!r} is missing", file=f.path,
                    column=needed)
        if previous is not None:
            before = dict(columns_by_file[previous.path])
            for name, typ in cols.items():
                if name not in before:
                    add("schema_drift", f"column {name!r} ({typ}) added after "
                        f"{previous.path}", file=f.path, column=name)
                elif before[name] != typ:
                    add("schema_drift", f"column {name!r} changed type from {before[name]} "
                        f"(in {previous.path}) to {typ}", file=f.path, column=name)
            for name, typ in before.items():
                if name not in cols:
                    add("schema_drift", f"column {name!r} ({typ}) of {previous.path} "
                        "removed", file=f.path, column=name)
        previous = f


def _union(con: duckdb.DuckDBPyConnection, root: str, fmt: str, files: list[HourFile],
           time: str, key: Sequence[str]) -> tuple[list[tuple[str, str]], str, list[Any], str,
                                                   str]:
    scan, params = scan_sql(fmt, filename=FILE_COL)
    paths = [f.path for f in files]
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {scan}", [paths, *params]).fetchall()
    except duckdb.Error as exc:
        raise DataError(f"{mask(root)}: the files cannot be read together: "
                        f"{str(exc).splitlines()[0]}") from None
    union = [(str(r[0]), str(r[1])) for r in rows if str(r[0]) != FILE_COL]
    names = dict(union)
    missing = [c for c in (*key, time) if c not in names]
    if missing:
        raise DataError(f"{mask(root)}: no column {', '.join(map(repr, missing))} in any file "
                        f"(columns: {', '.join(names)})")
    if fmt == "json":
        # Read the time column as text so every value can be classified the same way;
        # DuckDB's own detection would turn mixed representations into JSON or VARCHAR.
        override = {n: ("VARCHAR" if n == time else t) for n, t in union}
        scan, params = scan_sql(fmt, filename=FILE_COL, columns=override)
        union = [(n, "VARCHAR" if n == time else t) for n, t in union]
    union_type = dict(union)[time]
    category = time_category(union_type)
    if category == "unsupported":
        raise DataError(f"{mask(root)}: time column {time!r} has type {union_type}, which is not a "
                        "timestamp, an epoch number or a date-time string")
    return union, scan, params, category, union_type


def _profile(con: duckdb.DuckDBPyConnection, scan: str, args: list[Any], *, key: Sequence[str],
             time: str, category: str, union_type: str, t0: datetime, t1: datetime,
             profiles: dict[str, FileProfile]) -> dict[str, dict[str, int]]:
    """One scan: rows, null keys/times, unparseable and out-of-range counts per file and class."""
    v = "__v"
    cls = class_expr(category, v)
    conv_case = " ".join(
        f"WHEN '{c}' THEN {conv_for_class(category, c, v, union_type)}"
        for c in classes_for(category))
    zone = (f"CASE WHEN __cls = 'string_tz' THEN regexp_extract(trim(CAST({v} AS VARCHAR), "
            f"' \"'), '{ZONE_RE}', 1) END") if category == "string" else "NULL"
    if category == "typed":
        bad = "0"
        bad_example = "NULL"
    else:
        bad = "count(*) FILTER (WHERE __v_notnull AND __t IS NULL)"
        bad_example = f"min(CASE WHEN __v_notnull AND __t IS NULL THEN CAST({v} AS VARCHAR) END)"
    sql = f"""
        WITH c AS (
            SELECT {ident(FILE_COL)} AS __f, {ident(time)} AS __v,
                   {key_null_sql(key)} AS __knull
            FROM {scan}
        ), d AS (
            SELECT __f, __v, __knull, {cls} AS __cls FROM c
        ), e AS (
            SELECT __f, __knull, __cls, {zone} AS __zone, __v, __v IS NOT NULL AS __v_notnull,
                   CASE __cls {conv_case} END AS __t
            FROM d
        )
        SELECT __f, __cls, __zone, count(*),
               count(*) FILTER (WHERE __knull),
               {bad},
               {bad_example},
               count(*) FILTER (WHERE __t < ? OR __t >= ?),
               count(*) FILTER (WHERE NOT __knull AND __t >= ? AND __t < ?),
               count(*) FILTER (WHERE __knull AND __t >= ? AND __t < ?),
               min(__t) FILTER (WHERE __t >= ? AND __t < ?),
               max(__t) FILTER (WHERE __t >= ? AND __t < ?)
        FROM e GROUP BY ALL
    """
    rows = con.execute(sql, [*args, t0, t1, t0, t1, t0, t1, t0, t1, t0, t1]).fetchall()
    return _tally(rows, profiles)


def _tally(rows: list[tuple[Any, ...]], profiles: dict[str, FileProfile]
           ) -> dict[str, dict[str, int]]:
    """Add the profile scan's rows (one per file, class and zone) to the file profiles."""
    classes: dict[str, dict[str, int]] = defaultdict(dict)
    for (f, c, z, n, nk, bad, bad_ex, oor, written, routed, tmin, tmax) in rows:
        prof = profiles.setdefault(str(f), FileProfile())
        prof.rows += n
        prof.null_keys += nk
        prof.out_of_range += oor
        prof.written += written
        prof.routed_null_keys += routed
        if c is None:
            prof.null_time += n
        elif c == "unparseable" or bad:
            prof.bad_time += bad
            if bad_ex is not None:
                prof.bad_example = min(prof.bad_example or bad_ex, bad_ex)
        if c not in (None, "unparseable"):
            label = c if c != "string_tz" else f"string_tz{normalize_zone(z)}"
            prof.classes[label] = prof.classes.get(label, 0) + n - (bad or 0)
            classes[str(f)][label] = classes[str(f)].get(label, 0) + n - (bad or 0)
        if tmin is not None:
            prof.min_time = tmin if prof.min_time is None else min(prof.min_time, tmin)
            prof.max_time = tmax if prof.max_time is None else max(prof.max_time, tmax)
    return classes


def _details_frame(files: list[HourFile], profiles: dict[str, FileProfile]) -> Any:
    import pandas as pd

    rows = []
    for f in files:
        p = profiles[f.path]
        rows.append({
            "file": f.path, "date": f.date, "hour": f.hour, "rows": p.rows,
            "written": p.written, "null_keys": p.null_keys, "null_time": p.null_time,
            "bad_time": p.bad_time, "out_of_range": p.out_of_range,
            "time_classes": ", ".join(f"{k}:{v}" for k, v in sorted(p.classes.items())),
            "min_time": _fmt_time(p.min_time), "max_time": _fmt_time(p.max_time),
        })
    columns = ["file", "date", "hour", "rows", "written", "null_keys", "null_time", "bad_time",
               "out_of_range", "time_classes", "min_time", "max_time"]
    return pd.DataFrame(rows, columns=columns)


def _summary_frame(root: str, fmt: str, hours: list[datetime], files: list[HourFile],
                   profiles: dict[str, FileProfile], problems: list[dict[str, Any]]) -> Any:
    import pandas as pd

    errors = sum(1 for p in problems if p["severity"] == ERROR)
    return pd.DataFrame([{
        "source": root, "format": fmt, "hours": len(hours), "files": len(files),
        "rows": sum(p.rows for p in profiles.values()),
        "writable_rows": sum(p.written for p in profiles.values()),
        "null_keys": sum(p.null_keys for p in profiles.values()),
        "out_of_range": sum(p.out_of_range for p in profiles.values()),
        "problems": len(problems), "errors": errors, "ok": errors == 0,
    }])
