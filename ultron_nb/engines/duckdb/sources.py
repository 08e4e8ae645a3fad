"""History under ``SOURCE/date=YYYY-MM-DD/hour=HH/``: discovery and bad-input detection.

:func:`inspect_source` lists the files of the requested hours (through DuckDB's ``glob``, so any
location DuckDB reads works), reads each file's schema, and profiles the key and time columns
in one scan that attributes every row to its file (``filename`` column). It reports, by file and
column:

``missing_partition``
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
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from ultron_nb.engines.duckdb.connection import (
    detect_format,
    ident,
    normalize_format,
    scan_sql,
    temporal_kind,
    utc_timestamp,
)
from ultron_nb.engines.duckdb.report import (
    ERROR,
    INFO,
    WARNING,
    CheckResult,
    problems_frame,
)
from ultron_nb.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FILE_COL = "__ultron_file"
PROBLEM_KINDS = (
    "missing_partition", "empty_partition", "schema_drift", "missing_column",
    "mixed_time_units", "mixed_time_zones", "bad_time", "null_time", "null_key", "out_of_range",
)
_HIVE = re.compile(r"date=(\d{4}-\d{2}-\d{2})[/\\]hour=(\d{1,2})[/\\]([^/\\]+)$")

_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE")
_STRING = ("VARCHAR", "JSON")

# Classification of raw time values (the patterns are constants of this module).
_NUM_RE = r"^-?[0-9]+(\.[0-9]+)?$"
_DT_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?$"
_DT_TZ_RE = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
             r" ?(Z|UTC|[+-][0-9]{2}(:?[0-9]{2})?)$")
_ZONE_RE = r"(Z|UTC|[+-][0-9]{2}(:?[0-9]{2})?)$"

EPOCH_CLASSES = ("epoch_s", "epoch_ms", "epoch_us", "epoch_ns")
_UNIT_NAMES = {
    "epoch_s": "epoch seconds", "epoch_ms": "epoch milliseconds",
    "epoch_us": "epoch microseconds", "epoch_ns": "epoch nanoseconds",
    "string": "date-time strings", "string_tz": "date-time strings with a UTC offset",
    "timestamp": "typed timestamps", "timestamp_tz": "typed timestamps with time zone",
}


@dataclass(frozen=True)
class HourFile:
    """One data file of the history and the hour partition it sits in."""

    path: str
    date: str
    hour: int

    @property
    def hour_start(self) -> datetime:
        return datetime.fromisoformat(self.date) + timedelta(hours=self.hour)


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
def to_utc_naive(value: Any, what: str) -> datetime:
    """A naive UTC datetime from a datetime, date, pandas Timestamp or ISO string."""
    if value is None:
        raise ConfigError(f"{what}: a time is required")
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(f"{what}: cannot parse {value!r} as a time "
                              "(use YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS])") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


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


# ----------------------------------------------------------------------------- discovery
def _root(source: str | Path) -> str:
    text = str(source)
    if "://" in text:
        return text.rstrip("/")
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"{path}: no such directory")
    return str(path)


def discover(con: duckdb.DuckDBPyConnection, root: str, fmt: str | None,
             ) -> tuple[list[HourFile], str]:
    """Every visible data file under ``root/date=*/hour=*/`` and the format."""
    pattern = root + "/date=*/hour=*/*"
    found = [str(r[0]) for r in con.execute("SELECT file FROM glob(?)", [pattern]).fetchall()]
    files: list[HourFile] = []
    for path in sorted(found):
        match = _HIVE.search(path)
        if not match or match.group(3).startswith((".", "_")):
            continue
        files.append(HourFile(path, match.group(1), int(match.group(2))))
    fmt = normalize_format(fmt)
    if fmt is None:
        kinds = {detect_format(f.path) for f in files} - {None}
        if len(kinds) > 1:
            examples = {k: next(f.path for f in files if detect_format(f.path) == k)
                        for k in kinds if k}
            raise DataError(f"{root}: mixed file formats: " + ", ".join(
                f"{k} ({v})" for k, v in sorted(examples.items())))
        if not kinds:
            if files:
                raise ConfigError(f"{root}: cannot tell the format of {files[0].path}; "
                                  "pass fmt='parquet' or fmt='json'")
            fmt = "parquet"
        else:
            fmt = kinds.pop() or "parquet"
        files = [f for f in files if detect_format(f.path) == fmt]
    return files, fmt


def parquet_schemas(con: duckdb.DuckDBPyConnection, paths: list[str]
                    ) -> dict[str, list[tuple[str, str]]]:
    """Top-level (name, DuckDB type) of every Parquet file, from their footers in one call."""
    if not paths:
        return {}
    try:
        rows = con.execute("SELECT file_name, name, duckdb_type, num_children FROM "
                           "parquet_schema(?)", [paths]).fetchall()
    except duckdb.Error:
        return {p: file_schema(con, p, "parquet") for p in paths}
    flat: dict[str, list[tuple[str, str | None, int]]] = defaultdict(list)
    for file, name, typ, children in rows:
        flat[str(file)].append((str(name), typ, int(children or 0)))
    out: dict[str, list[tuple[str, str]]] = {}
    for path in paths:
        elements = flat.get(path)
        if not elements:
            out[path] = file_schema(con, path, "parquet")
            continue
        # Depth-first: the root, then each top-level column followed by its subtree.
        top: list[tuple[str, str]] = []
        i, remaining = 1, elements[0][2]
        while remaining and i < len(elements):
            name, typ, children = elements[i]
            top.append((name, str(typ)))
            pending, i = children, i + 1
            while pending and i < len(elements):
                pending += elements[i][2] - 1
                i += 1
            remaining -= 1
        if any(t == "None" for _, t in top):
            top = file_schema(con, path, "parquet")
        out[path] = top
    return out


def file_schema(con: duckdb.DuckDBPyConnection, path: str, fmt: str) -> list[tuple[str, str]]:
    scan, params = scan_sql(fmt, union_by_name=False)
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {scan}", [[path], *params]).fetchall()
    except duckdb.Error as exc:
        raise DataError(f"{path}: cannot read as {fmt}: {str(exc).splitlines()[0]}") from None
    return [(str(r[0]), str(r[1])) for r in rows]


def _time_category(duck_type: str) -> str:
    base = duck_type.upper()
    if temporal_kind(base):
        return "typed"
    if base in _NUMERIC or base.startswith("DECIMAL"):
        return "numeric"
    if base in _STRING:
        return "string"
    return "unsupported"


def _typed_class(duck_type: str) -> str:
    return "timestamp_tz" if temporal_kind(duck_type) == "tz" else "timestamp"


# ----------------------------------------------------------------------------- SQL pieces
def _epoch_case(num: str) -> str:
    """Class of a numeric value by magnitude (see the module docstring)."""
    return (f"CASE WHEN abs({num}) < 1e11 THEN 'epoch_s' WHEN abs({num}) < 1e14 THEN 'epoch_ms' "
            f"WHEN abs({num}) < 1e17 THEN 'epoch_us' ELSE 'epoch_ns' END")


def _epoch_conv(cls: str, num: str, exact: str) -> str:
    """TIMESTAMP from an epoch number of class ``cls``; ``exact`` is the value as BIGINT."""
    if cls == "epoch_s":
        return f"make_timestamp(CAST(round({num} * 1000000) AS BIGINT))"
    if cls == "epoch_ms":
        return f"make_timestamp(CAST(round({num} * 1000) AS BIGINT))"
    if cls == "epoch_us":
        return f"make_timestamp({exact})"
    return f"make_timestamp({exact} // 1000)"


def _class_expr(category: str, v: str) -> str:
    if category == "typed":
        return "'typed'"
    if category == "numeric":
        return f"CASE WHEN {v} IS NULL THEN NULL ELSE {_epoch_case(f'CAST({v} AS DOUBLE)')} END"
    s = f"trim(CAST({v} AS VARCHAR), ' \"')"
    return (
        f"CASE WHEN {v} IS NULL THEN NULL "
        f"WHEN regexp_full_match({s}, '{_NUM_RE}') THEN "
        f"{_epoch_case(f'TRY_CAST({s} AS DOUBLE)')} "
        f"WHEN regexp_full_match({s}, '{_DT_RE}') THEN 'string' "
        f"WHEN regexp_full_match({s}, '{_DT_TZ_RE}') THEN 'string_tz' "
        f"ELSE 'unparseable' END"
    )


def _conv_for_class(category: str, cls: str, v: str, union_type: str) -> str:
    """TIMESTAMP (naive UTC) from the raw value ``v`` known to be of class ``cls``."""
    if category == "typed":
        return utc_timestamp(v, union_type)
    if category == "numeric":
        num = f"CAST({v} AS DOUBLE)"
        exact = f"CAST({v} AS BIGINT)" if not union_type.upper().startswith(
            ("FLOAT", "DOUBLE", "DECIMAL")) else f"CAST(round({v}) AS BIGINT)"
        return _epoch_conv(cls, num, exact)
    s = f"trim(CAST({v} AS VARCHAR), ' \"')"
    if cls in EPOCH_CLASSES:
        num = f"TRY_CAST({s} AS DOUBLE)"
        return _epoch_conv(cls, num, f"TRY_CAST({s} AS BIGINT)")
    if cls == "string":
        return f"TRY_CAST({s} AS TIMESTAMP)"
    if cls == "string_tz":
        return (f"timezone('UTC', TRY_CAST(regexp_replace({s}, ' ?UTC$', '+00:00') "
                "AS TIMESTAMPTZ))")
    return "CAST(NULL AS TIMESTAMP)"


def _classes_for(category: str) -> tuple[str, ...]:
    if category == "typed":
        return ("typed",)
    if category == "numeric":
        return EPOCH_CLASSES
    return (*EPOCH_CLASSES, "string", "string_tz")


def conversion_sql(category: str, v: str, union_type: str, classes: Iterable[str]) -> str:
    """The event-time expression: one conversion, or a per-row CASE over several classes."""
    wanted = [c for c in _classes_for(category) if c in set(classes)] or list(
        _classes_for(category)[:1])
    if len(wanted) == 1:
        return _conv_for_class(category, wanted[0], v, union_type)
    whens = " ".join(
        f"WHEN '{c}' THEN {_conv_for_class(category, c, v, union_type)}" for c in wanted)
    return f"(CASE {_class_expr(category, v)} {whens} END)"


def key_null_sql(key: Sequence[str]) -> str:
    return "(" + " OR ".join(f"{ident(k)} IS NULL" for k in key) + ")"


def _normalize_zone(zone: str | None) -> str | None:
    if zone is None:
        return None
    text = zone.strip()
    if text in ("Z", "UTC"):
        return "+00:00"
    sign, digits = text[0], text[1:].replace(":", "")
    digits = (digits + "00")[:4]
    return f"{sign}{digits[:2]}:{digits[2:]}"


# ----------------------------------------------------------------------------- inspection
def inspect_source(con: duckdb.DuckDBPyConnection, source: str | Path, *, key: Sequence[str],
                   time: str, start: Any, end: Any, fmt: str | None = None,
                   allow: Iterable[str] = (), null_keys: str = "fail") -> SourcePlan:
    """Find, check and profile the history of ``[start, end)``.

    Returns a :class:`SourcePlan` whose ``report`` lists every problem (see the module
    docstring); the caller decides whether to raise. ``null_keys="route"`` makes null keys an
    ``info`` (they are written aside) instead of an ``error``.
    """
    allowed = set(allow)
    unknown = allowed - set(PROBLEM_KINDS)
    if unknown:
        raise ConfigError(f"allow: unknown problem kind(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(PROBLEM_KINDS)})")
    if "null_key" in allowed:
        raise ConfigError("allow: null keys are never ignored; pass null_keys='route' to write "
                          "them aside")
    if null_keys not in ("fail", "route"):
        raise ConfigError(f"null_keys: {null_keys!r} is not 'fail' or 'route'")
    if not key:
        raise ConfigError("key: at least one key column is required")
    t0 = to_utc_naive(start, "from")
    t1 = to_utc_naive(end, "to")
    if t1 <= t0:
        raise ConfigError(f"to ({t1}) must be after from ({t0})")
    root = _root(source)
    all_files, fmt = discover(con, root, fmt)
    hours = hours_between(t0, t1)
    wanted = {(h.strftime("%Y-%m-%d"), h.hour) for h in hours}
    files = [f for f in all_files if (f.date, f.hour) in wanted]

    problems: list[dict[str, Any]] = []

    def add(kind: str, detail: str, *, file: str | None = None, column: str | None = None,
            rows: int | None = None, severity: str | None = None) -> None:
        sev = severity or (WARNING if kind in allowed else ERROR)
        problems.append({"kind": kind, "severity": sev, "detail": detail, "file": file,
                         "column": column, "rows": rows})

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
        union, scan, scan_params, category, union_type = _union(
            con, root, fmt, files, time, key)
        classes = _profile(con, scan, [[f.path for f in files], *scan_params], key=key,
                           time=time, category=category, union_type=union_type, t0=t0, t1=t1,
                           profiles=profiles)
        per_file_typed = {p: _typed_class(dict(cols).get(time, "TIMESTAMP"))
                          for p, cols in columns_by_file.items()}
        used = _time_problems(files, profiles, classes, category, per_file_typed, time, add)
        if category == "typed":
            for path, prof in profiles.items():
                if "typed" in prof.classes:
                    prof.classes[per_file_typed.get(path, "timestamp")] = prof.classes.pop(
                        "typed")
        time_expr = conversion_sql(category, ident(time), union_type, used)
        for f in files:
            prof = profiles[f.path]
            if prof.null_keys:
                add("null_key", f"{prof.null_keys} row(s) with a NULL key", file=f.path,
                    column=", ".join(key), rows=prof.null_keys,
                    severity=INFO if null_keys == "route" else None)
            if prof.null_time:
                add("null_time", f"{prof.null_time} row(s) without an event time",
                    file=f.path, column=time, rows=prof.null_time)
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

    details = _details_frame(files, profiles)
    report = CheckResult(
        check="source",
        problems=problems_frame(problems, ["file", "column", "rows"]),
        summary=_summary_frame(root, fmt, hours, files, profiles, problems),
        details=details,
    )
    return SourcePlan(source=root, fmt=fmt, key=tuple(key), time=time, start=t0, end=t1,
                      files=files, columns=union, scan=scan, scan_params=scan_params,
                      time_expr=time_expr, profiles=profiles, report=report)


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
        raise DataError(f"{root}: the files cannot be read together: "
                        f"{str(exc).splitlines()[0]}") from None
    union = [(str(r[0]), str(r[1])) for r in rows if str(r[0]) != FILE_COL]
    names = dict(union)
    missing = [c for c in (*key, time) if c not in names]
    if missing:
        raise DataError(f"{root}: no column {', '.join(map(repr, missing))} in any file "
                        f"(columns: {', '.join(names)})")
    if fmt == "json":
        # Read the time column as text so every value can be classified the same way;
        # DuckDB's own detection would turn mixed representations into JSON or VARCHAR.
        override = {n: ("VARCHAR" if n == time else t) for n, t in union}
        scan, params = scan_sql(fmt, filename=FILE_COL, columns=override)
        union = [(n, "VARCHAR" if n == time else t) for n, t in union]
    union_type = dict(union)[time]
    category = _time_category(union_type)
    if category == "unsupported":
        raise DataError(f"{root}: time column {time!r} has type {union_type}, which is not a "
                        "timestamp, an epoch number or a date-time string")
    return union, scan, params, category, union_type


def _profile(con: duckdb.DuckDBPyConnection, scan: str, args: list[Any], *, key: Sequence[str],
             time: str, category: str, union_type: str, t0: datetime, t1: datetime,
             profiles: dict[str, FileProfile]) -> dict[str, dict[str, int]]:
    """One scan: rows, null keys/times, unparseable and out-of-range counts per file and class."""
    v = "__v"
    cls = _class_expr(category, v)
    conv_case = " ".join(
        f"WHEN '{c}' THEN {_conv_for_class(category, c, v, union_type)}"
        for c in _classes_for(category))
    zone = (f"CASE WHEN __cls = 'string_tz' THEN regexp_extract(trim(CAST({v} AS VARCHAR), "
            f"' \"'), '{_ZONE_RE}', 1) END") if category == "string" else "NULL"
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
            label = c if c != "string_tz" else f"string_tz{_normalize_zone(z)}"
            prof.classes[label] = prof.classes.get(label, 0) + n - (bad or 0)
            classes[str(f)][label] = classes[str(f)].get(label, 0) + n - (bad or 0)
        if tmin is not None:
            prof.min_time = tmin if prof.min_time is None else min(prof.min_time, tmin)
            prof.max_time = tmax if prof.max_time is None else max(prof.max_time, tmax)
    return classes


def _time_problems(files: list[HourFile], profiles: dict[str, FileProfile],
                   classes: dict[str, dict[str, int]], category: str,
                   typed: dict[str, str], time: str, add: Any) -> set[str]:
    """Report mixed units and zones; return the classes the conversion must handle."""
    per_file: dict[str, dict[str, int]] = {}
    for f in files:
        found = dict(classes.get(f.path, {}))
        if category == "typed" and "typed" in found:
            found[typed[f.path]] = found.pop("typed")
        per_file[f.path] = {k: v for k, v in found.items() if v > 0}
    totals: dict[str, int] = defaultdict(int)
    for found in per_file.values():
        for label, n in found.items():
            totals[label] += n
    if not totals:
        return {"typed"} if category == "typed" else set()

    def unit(label: str) -> str:
        if label.startswith("string"):
            return "string"
        if label.startswith("timestamp"):
            return "timestamp"
        return label

    def aware(label: str) -> bool | None:
        if label.startswith("string_tz") or label == "timestamp_tz":
            return True
        if label in ("string", "timestamp"):
            return False
        return None

    unit_totals: dict[str, int] = defaultdict(int)
    for label, n in totals.items():
        unit_totals[unit(label)] += n
    main_unit = max(unit_totals, key=lambda u: (unit_totals[u], u))
    if len(unit_totals) > 1:
        for f in files:
            for label, n in sorted(per_file[f.path].items()):
                if unit(label) != main_unit:
                    add("mixed_time_units",
                        f"{n} value(s) are {_UNIT_NAMES.get(unit(label), label)} while most "
                        f"({unit_totals[main_unit]}) are {_UNIT_NAMES.get(main_unit)}",
                        file=f.path, column=time, rows=n)
    zone_totals: dict[str, int] = defaultdict(int)
    for label, n in totals.items():
        if aware(label) is not None:
            zone_key = "naive" if not aware(label) else (
                label[len("string_tz"):] if label.startswith("string_tz") else "UTC")
            zone_totals[zone_key] += n
    if len(zone_totals) > 1:
        main_zone = max(zone_totals, key=lambda z: (zone_totals[z], z))

        def describe(z: str) -> str:
            return "no time zone" if z == "naive" else f"offset {z}"

        for f in files:
            for label, n in sorted(per_file[f.path].items()):
                if aware(label) is None:
                    continue
                z = "naive" if not aware(label) else (
                    label[len("string_tz"):] if label.startswith("string_tz") else "UTC")
                if z != main_zone:
                    add("mixed_time_zones",
                        f"{n} value(s) have {describe(z)} while most ({zone_totals[main_zone]})"
                        f" have {describe(main_zone)}", file=f.path, column=time, rows=n)
    if category == "typed":
        return {"typed"}
    return {("string_tz" if label.startswith("string_tz") else label) for label in totals}


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
