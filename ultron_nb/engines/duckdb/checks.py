"""Quick checks on DuckDB: order, leakage, replay-vs-live consistency, version consistency.

Every check takes paths (a local topic directory, a Parquet or JSON-lines file or glob) or
in-memory data (pandas DataFrame, Arrow table, DuckDB relation) and returns a
:class:`~.report.CheckResult`: ``problems`` has one row per problem (examples are capped by
``limit``; the counts in ``summary`` are complete), ``summary`` one row of counts.

Times are compared as naive UTC timestamps: ``TIMESTAMPTZ`` values are converted to UTC and
date-time strings (as in JSON lines) are parsed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from ultron_nb.engines.duckdb.connection import (
    columns_of,
    connect,
    ident,
    register_input,
    require_columns,
    temporal_kind,
    utc_timestamp,
)
from ultron_nb.engines.duckdb.report import ERROR, CheckResult, problems_frame
from ultron_nb.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_NUMERIC_PREFIX = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                   "USMALLINT", "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL")


def ts_expr(column: str, duck_type: str, what: str) -> str:
    """A naive UTC ``TIMESTAMP`` expression for ``column`` (already quoted) of ``duck_type``."""
    upper = duck_type.upper()
    if temporal_kind(upper):
        return utc_timestamp(column, upper)
    if upper in ("VARCHAR", "JSON"):
        return f"TRY_CAST(trim(CAST({column} AS VARCHAR), '\"') AS TIMESTAMP)"
    raise DataError(f"{what}: column has type {duck_type}, not a timestamp (convert epoch "
                    "numbers to timestamps first: their unit is ambiguous)")


def _keys(key: str | Sequence[str]) -> list[str]:
    keys = [key] if isinstance(key, str) else list(key)
    if not keys:
        raise ConfigError("key: at least one key column is required")
    return keys


def _summary(**values: Any) -> Any:
    import pandas as pd

    return pd.DataFrame([values])


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
        return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (TypeError, ValueError):
        return str(value)


# ----------------------------------------------------------------------------- order
def check_order(data: Any, *, time: str | None = None, partition: str | None = None,
                limit: int = 100, con: duckdb.DuckDBPyConnection | None = None) -> CheckResult:
    """Every logical partition must be non-decreasing in event time.

    ``data`` is a local topic directory (partitions and time column from its manifest), a
    file or glob (each file is one partition, rows in file order), or a DataFrame / Arrow table
    (rows in order; ``partition`` names the partition column, else the whole table is one).
    Problems: ``out_of_order`` (partition, offset within the partition, segment file and line,
    previous and current time), ``null_time`` and ``bad_time``.
    """
    own = con is None
    con = con or connect()
    try:
        streams = list(_order_streams(con, data, time, partition))
        problems: list[dict[str, Any]] = []
        details = []
        total_bad = total_rows = total_null = 0
        for label, pieces in streams:
            result = _order_partition(label, pieces, limit - len(problems))
            problems.extend(result["problems"])
            total_bad += result["out_of_order"]
            total_null += result["null_time"]
            total_rows += result["rows"]
            details.append({k: result[k] for k in ("partition", "rows", "out_of_order",
                                                   "null_time", "min_time", "max_time")})
        import pandas as pd

        frame = problems_frame(problems, ["partition", "offset", "file", "line",
                                          "previous_time", "time"])
        return CheckResult(
            check="order",
            problems=frame,
            summary=_summary(partitions=len(streams), rows=total_rows, out_of_order=total_bad,
                             null_time=total_null, ok=total_bad == 0 and total_null == 0),
            details=pd.DataFrame(details, columns=["partition", "rows", "out_of_order",
                                                   "null_time", "min_time", "max_time"]),
        )
    finally:
        if own:
            con.close()


def _order_streams(con: duckdb.DuckDBPyConnection, data: Any, time: str | None,
                   partition: str | None) -> Any:
    """Yield (partition label, [(file or None, numpy datetime64 array), ...]) in order."""
    if isinstance(data, (str, Path)) and Path(data).is_dir() and (Path(data) / "_topic.json"
                                                                   ).is_file():
        from ultron_nb.engines.topics import LocalTopic

        topic = LocalTopic.open(data)
        time = time or topic.time_column
        if not time:
            raise ConfigError(f"{data}: the topic has no time column; pass time=")
        for k in range(topic.partitions):
            yield k, [(str(seg), _read_times(con, str(seg), time)) for seg in topic.segments(k)]
        return
    if isinstance(data, (str, Path)):
        if not time:
            raise ConfigError("time: name the event-time column")
        text = str(data)
        files = [str(r[0]) for r in con.execute("SELECT file FROM glob(?) ORDER BY file",
                                                [text]).fetchall()]
        if not files:
            raise DataError(f"{text}: no such file")
        for f in files:
            yield f, [(f, _read_times(con, f, time))]
        return
    if not time:
        raise ConfigError("time: name the event-time column")
    view = register_input(con, data, what="order")
    cols = columns_of(con, view)
    require_columns(cols, [time] + ([partition] if partition else []), "check_order input")
    expr = ts_expr(ident(time), dict(cols)[time], f"column {time!r}")
    if partition is None:
        times = con.sql(f"SELECT {expr} AS t FROM {view}").fetchnumpy()["t"]
        yield "all", [(None, _as_datetime64(times))]
        return
    got = con.sql(f"SELECT {ident(partition)} AS p, {expr} AS t FROM {view}").fetchnumpy()
    import numpy as np
    import pandas as pd

    parts = pd.Series(got["p"])
    times = _as_datetime64(got["t"])
    for value in pd.unique(parts):
        mask = (parts == value).to_numpy() if not pd.isna(value) else parts.isna().to_numpy()
        yield value, [(None, times[np.nonzero(mask)[0]])]


def _as_datetime64(values: Any) -> Any:
    import numpy as np

    arr = np.asarray(values)
    if hasattr(values, "mask"):
        arr = np.ma.filled(values.astype("datetime64[us]"), np.datetime64("NaT"))
    return arr.astype("datetime64[us]")


def _read_times(con: duckdb.DuckDBPyConnection, path: str, time: str) -> Any:
    """The event times of one file, in file order (insertion order is preserved)."""
    from ultron_nb.engines.duckdb.connection import detect_format

    fmt = detect_format(path) or "json"
    if fmt == "parquet":
        typ = str(con.execute(f"DESCRIBE SELECT {ident(time)} FROM read_parquet(?)",
                              [path]).fetchall()[0][1])
        raw = con.execute(f"SELECT {ts_expr(ident(time), typ, path)} AS t "
                          f"FROM read_parquet(?)", [path]).fetchnumpy()["t"]
        return _as_datetime64(raw)
    got = con.execute(
        "SELECT TRY_CAST(trim(raw, '\"') AS TIMESTAMP) AS t, "
        "raw IS NOT NULL AND TRY_CAST(trim(raw, '\"') AS TIMESTAMP) IS NULL AS bad "
        "FROM read_json(?, format = 'newline_delimited', columns = ?) AS r(raw)",
        [path, {time: "VARCHAR"}],
    ).fetchnumpy()
    import numpy as np

    bad = np.ma.filled(got["bad"], False) if hasattr(got["bad"], "mask") else got["bad"]
    if bad.any():
        first = int(np.nonzero(bad)[0][0])
        example = con.execute(
            "SELECT raw FROM read_json(?, format = 'newline_delimited', columns = ?) AS r(raw) "
            "LIMIT 1 OFFSET ?", [path, {time: "VARCHAR"}, first]).fetchall()[0][0]
        raise DataError(f"{path}: {int(bad.sum())} value(s) of column {time!r} are not "
                        f"timestamps, first at line {first + 1}: {example!r}")
    return _as_datetime64(got["t"])


def _order_partition(label: Any, pieces: list[tuple[str | None, Any]], room: int
                     ) -> dict[str, Any]:
    import numpy as np

    arrays = [arr for _, arr in pieces]
    times = np.concatenate(arrays) if arrays else np.array([], dtype="datetime64[us]")
    starts = np.cumsum([0] + [len(a) for a in arrays])
    nat = np.isnat(times)
    valid_idx = np.nonzero(~nat)[0]
    valid = times[valid_idx]
    drops = np.nonzero(valid[1:] < valid[:-1])[0] + 1 if len(valid) > 1 else np.array([], int)
    problems = []

    def locate(offset: int) -> tuple[str | None, int]:
        seg = int(np.searchsorted(starts, offset, side="right") - 1)
        return pieces[seg][0], offset - int(starts[seg]) + 1

    for i in drops[: max(room, 0)]:
        offset = int(valid_idx[i])
        prev = int(valid_idx[i - 1])
        file, line = locate(offset)
        problems.append({
            "kind": "out_of_order", "severity": ERROR,
            "detail": f"time goes back from {_iso(times[prev])} to {_iso(times[offset])}",
            "partition": label, "offset": offset, "file": file, "line": line,
            "previous_time": _iso(times[prev]), "time": _iso(times[offset]),
        })
    null_count = int(nat.sum())
    if null_count and len(problems) < max(room, 0):
        offset = int(np.nonzero(nat)[0][0])
        file, line = locate(offset)
        problems.append({
            "kind": "null_time", "severity": ERROR,
            "detail": f"{null_count} row(s) without an event time, first at offset {offset}",
            "partition": label, "offset": offset, "file": file, "line": line,
            "previous_time": None, "time": None,
        })
    return {
        "partition": label, "rows": len(times), "out_of_order": len(drops),
        "null_time": null_count, "problems": problems,
        "min_time": _iso(valid.min()) if len(valid) else None,
        "max_time": _iso(valid.max()) if len(valid) else None,
    }


# ----------------------------------------------------------------------------- leakage
def check_leakage(samples: Any, feature_time: str | Sequence[str], sample_time: str, *,
                  key: str | Sequence[str] | None = None, limit: int = 20,
                  con: duckdb.DuckDBPyConnection | None = None) -> CheckResult:
    """Rows whose joined feature version is later than the sample's event time.

    ``feature_time`` names the column(s) holding the version time each sample joined (for
    instance ``<table>__version_time`` from :meth:`as_of`). Problems: one ``leak`` row per
    example (the sample's key and time, the feature column, the version time and the lead);
    ``summary`` counts every leak per feature column.
    """
    own = con is None
    con = con or connect()
    try:
        view = register_input(con, samples, what="samples")
        cols = columns_of(con, view)
        types = dict(cols)
        ftimes = [feature_time] if isinstance(feature_time, str) else list(feature_time)
        keys = [] if key is None else _keys(key)
        require_columns(cols, [*ftimes, sample_time, *keys], "samples")
        s_expr = ts_expr(ident(sample_time), types[sample_time], f"column {sample_time!r}")
        problems: list[dict[str, Any]] = []
        summary: dict[str, Any] = {}
        total = int(con.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0])
        leaks_total = 0
        for fcol in ftimes:
            f_expr = ts_expr(ident(fcol), types[fcol], f"column {fcol!r}")
            n, with_version, max_lead = con.execute(
                f"SELECT count(*) FILTER (WHERE {f_expr} > {s_expr}), "
                f"count({f_expr}), max({f_expr} - {s_expr}) FILTER (WHERE {f_expr} > {s_expr})"
                f" FROM {view}"
            ).fetchall()[0]
            leaks_total += int(n)
            summary[f"{fcol}_leaks"] = int(n)
            summary[f"{fcol}_with_version"] = int(with_version)
            summary[f"{fcol}_max_lead"] = None if max_lead is None else str(max_lead)
            if not n:
                continue
            key_sel = "".join(f", {ident(k)} AS {ident('key_' + k)}" for k in keys)
            rows = con.execute(
                f"SELECT {s_expr} AS st, {f_expr} AS ft, {f_expr} - {s_expr} AS lead{key_sel} "
                f"FROM {view} WHERE {f_expr} > {s_expr} ORDER BY lead DESC, st LIMIT ?",
                [int(limit)],
            ).fetchall()
            for row in rows:
                st, ft, lead = row[0], row[1], row[2]
                entry = {
                    "kind": "leak", "severity": ERROR,
                    "detail": f"feature version {_iso(ft)} is {lead} after the sample time "
                              f"{_iso(st)}",
                    "feature_column": fcol, "sample_time": _iso(st), "feature_time": _iso(ft),
                    "lead": str(lead),
                }
                for k, value in zip(keys, row[3:], strict=True):
                    entry[k] = value
                problems.append(entry)
        frame = problems_frame(problems, ["feature_column", *keys, "sample_time",
                                          "feature_time", "lead"])
        return CheckResult(
            check="leakage", problems=frame,
            summary=_summary(rows=total, leaks=leaks_total, ok=leaks_total == 0, **summary),
        )
    finally:
        if own:
            con.close()


# ----------------------------------------------------------------------------- consistency
def check_consistency(replayed: Any, live: Any, *, key: str | Sequence[str], time: str,
                      window: tuple[Any, Any] | None = None,
                      values: Sequence[str] | None = None, tolerance: float = 0.0,
                      limit: int = 20, con: duckdb.DuckDBPyConnection | None = None,
                      ) -> CheckResult:
    """Replayed output against the live output over their overlapping event-time window.

    Rows are matched on the ``key`` columns and ``time``; ``values`` (default: every other
    common column) are compared, numbers within ``tolerance`` (absolute). ``window`` defaults
    to the overlap ``[max(min), min(max)]`` of the two sides' times. Problems:
    ``missing_in_live``, ``missing_in_replay``, ``value_mismatch`` (one row per differing
    column) and ``duplicate_key`` (a key and time present twice on one side).
    """
    own = con is None
    con = con or connect()
    try:
        keys = _keys(key)
        r_view = register_input(con, replayed, what="replayed")
        l_view = register_input(con, live, what="live")
        r_cols, l_cols = columns_of(con, r_view), columns_of(con, l_view)
        require_columns(r_cols, [*keys, time], "replayed")
        require_columns(l_cols, [*keys, time], "live")
        r_types, l_types = dict(r_cols), dict(l_cols)
        match_cols = [*keys, time] if time not in keys else keys
        if values is None:
            values = [c for c, _ in r_cols if c in l_types and c not in match_cols]
        else:
            require_columns(r_cols, values, "replayed")
            require_columns(l_cols, values, "live")
        r_t = ts_expr(ident(time), r_types[time], f"replayed column {time!r}")
        l_t = ts_expr(ident(time), l_types[time], f"live column {time!r}")
        if window is None:
            (r_min, r_max), (l_min, l_max) = (
                con.execute(f"SELECT min({r_t}), max({r_t}) FROM {r_view}").fetchall()[0],
                con.execute(f"SELECT min({l_t}), max({l_t}) FROM {l_view}").fetchall()[0],
            )
            if None in (r_min, r_max, l_min, l_max):
                lo = hi = None
            else:
                lo, hi = max(r_min, l_min), min(r_max, l_max)
        else:
            from ultron_nb.engines.duckdb.times import to_utc_naive

            lo, hi = to_utc_naive(window[0], "window start"), to_utc_naive(window[1],
                                                                           "window end")
        if lo is None or hi is None or lo > hi:
            import pandas as pd

            summary = _summary(window_start=_iso(lo), window_end=_iso(hi), replayed_rows=0,
                               live_rows=0, equal=0, value_mismatch=0, missing_in_live=0,
                               missing_in_replay=0, duplicate_keys=0, overlap=False, ok=False)
            problem = {"kind": "no_overlap", "severity": ERROR,
                       "detail": "the replayed and live outputs share no event-time window"}
            return CheckResult("consistency", problems_frame([problem], []), summary,
                               pd.DataFrame())

        def side(view: str, t_expr: str, types: dict[str, str]) -> str:
            sel = [f"{ident(k)}" for k in keys if k != time] + [f"{t_expr} AS {ident(time)}"]
            sel += [ident(v) for v in values if v not in match_cols]
            return (f"SELECT {', '.join(sel)} FROM {view} "
                    f"WHERE {t_expr} >= ? AND {t_expr} <= ?")

        con.execute(f"CREATE OR REPLACE TEMP TABLE __ultron_r AS {side(r_view, r_t, r_types)}",
                    [lo, hi])
        con.execute(f"CREATE OR REPLACE TEMP TABLE __ultron_l AS {side(l_view, l_t, l_types)}",
                    [lo, hi])
        group = ", ".join(ident(c) for c in match_cols)
        problems: list[dict[str, Any]] = []
        dups = {}
        for name, view in (("replayed", "__ultron_r"), ("live", "__ultron_l")):
            dup_sql = f"SELECT {group} FROM {view} GROUP BY ALL HAVING count(*) > 1"
            dups[name] = int(con.execute(f"SELECT count(*) FROM ({dup_sql})").fetchall()[0][0])
            if not dups[name]:
                continue
            for row in con.execute(f"{dup_sql} ORDER BY ALL LIMIT ?", [int(limit)]).fetchall():
                rec = dict(zip(match_cols, row, strict=True))
                problems.append({"kind": "duplicate_key", "severity": ERROR,
                                 "detail": f"{name} has several rows for this key and time",
                                 "key": _key_text(rec, keys, time), "time": _iso(rec[time]),
                                 "column": None, "replayed": None, "live": None})
        on = " AND ".join(f"r.{ident(c)} IS NOT DISTINCT FROM l.{ident(c)}" for c in match_cols)
        diffs = []
        tol_params: list[float] = []
        for v in values:
            if v in match_cols:
                continue
            rv, lv = f"r.{ident(v)}", f"l.{ident(v)}"
            numeric = r_types[v].upper().startswith(_NUMERIC_PREFIX) and l_types[
                v].upper().startswith(_NUMERIC_PREFIX)
            if numeric and tolerance > 0:
                diffs.append((v, f"NOT ({rv} IS NOT DISTINCT FROM {lv} OR "
                                 f"abs({rv} - {lv}) <= ?)"))
                tol_params.append(float(tolerance))
            else:
                diffs.append((v, f"{rv} IS DISTINCT FROM {lv}"))
        flag_cols = ", ".join(f"({cond}) AS {ident('__d_' + v)}" for v, cond in diffs)
        any_diff = " OR ".join(ident("__d_" + v) for v, _ in diffs) or "false"
        pairs = ", ".join(f"r.{ident(v)} AS {ident('__r_' + v)}, l.{ident(v)} AS "
                          f"{ident('__l_' + v)}" for v, _ in diffs)
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE __ultron_j AS
                SELECT *, coalesce({any_diff}, false) AS differs FROM (
                    SELECT {', '.join(f'coalesce(r.{ident(c)}, l.{ident(c)}) AS {ident(c)}'
                                      for c in match_cols)},
                           r.__in IS NOT NULL AS in_r, l.__in IS NOT NULL AS in_l
                           {', ' + flag_cols if flag_cols else ''}
                           {', ' + pairs if pairs else ''}
                    FROM (SELECT *, true AS __in FROM __ultron_r) r
                    FULL OUTER JOIN (SELECT *, true AS __in FROM __ultron_l) l ON {on}
                )""",
            tol_params,
        )
        counts = con.execute(
            "SELECT count(*) FILTER (WHERE in_r AND in_l AND NOT differs), "
            "count(*) FILTER (WHERE in_r AND in_l AND differs), "
            "count(*) FILTER (WHERE in_r AND NOT in_l), count(*) FILTER (WHERE in_l AND NOT "
            "in_r), (SELECT count(*) FROM __ultron_r), (SELECT count(*) FROM __ultron_l) "
            "FROM __ultron_j"
        ).fetchall()[0]
        equal, mismatch, miss_live, miss_replay, n_r, n_l = (int(c) for c in counts)
        order = ", ".join(ident(c) for c in match_cols)
        for kind, cond, detail in (
            ("missing_in_live", "in_r AND NOT in_l", "replayed row has no live counterpart"),
            ("missing_in_replay", "in_l AND NOT in_r", "live row has no replayed counterpart"),
        ):
            for row in con.execute(f"SELECT {order} FROM __ultron_j WHERE {cond} "
                                   f"ORDER BY {order} LIMIT ?", [int(limit)]).fetchall():
                rec = dict(zip(match_cols, row, strict=True))
                problems.append({"kind": kind, "severity": ERROR, "detail": detail,
                                 "key": _key_text(rec, keys, time), "time": _iso(rec[time]),
                                 "column": None, "replayed": None, "live": None})
        if mismatch:
            pick = ", ".join(
                f"{ident('__d_' + v)}, {ident('__r_' + v)}, {ident('__l_' + v)}"
                for v, _ in diffs)
            for row in con.execute(f"SELECT {order}, {pick} FROM __ultron_j WHERE in_r AND "
                                   f"in_l AND differs ORDER BY {order} LIMIT ?",
                                   [int(limit)]).fetchall():
                rec = dict(zip(match_cols, row[: len(match_cols)], strict=True))
                rest = row[len(match_cols):]
                for i, (v, _) in enumerate(diffs):
                    flag, rv, lv = rest[3 * i: 3 * i + 3]
                    if flag:
                        problems.append({
                            "kind": "value_mismatch", "severity": ERROR,
                            "detail": f"{v}: replayed {rv!r}, live {lv!r}",
                            "key": _key_text(rec, keys, time), "time": _iso(rec[time]),
                            "column": v, "replayed": rv, "live": lv})
        for table in ("__ultron_j", "__ultron_r", "__ultron_l"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        ok = not (mismatch or miss_live or miss_replay or dups["replayed"] or dups["live"])
        return CheckResult(
            check="consistency",
            problems=problems_frame(problems, ["key", "time", "column", "replayed", "live"]),
            summary=_summary(window_start=_iso(lo), window_end=_iso(hi), replayed_rows=n_r,
                             live_rows=n_l, equal=equal, value_mismatch=mismatch,
                             missing_in_live=miss_live, missing_in_replay=miss_replay,
                             duplicate_keys=dups["replayed"] + dups["live"], overlap=True,
                             ok=ok),
        )
    finally:
        if own:
            con.close()


def _key_text(rec: dict[str, Any], keys: list[str], time: str) -> str:
    return ", ".join(f"{k}={rec.get(k)!r}" for k in keys if k != time)


# ----------------------------------------------------------------------------- versions
def check_version_consistency(feature_output: Any, samples: Any, *, key: str | Sequence[str],
                              sample_time: str, version: str,
                              feature_time: str = "version_time",
                              values: Sequence[str] | None = None, latest: bool = True,
                              limit: int = 20, con: duckdb.DuckDBPyConnection | None = None,
                              ) -> CheckResult:
    """The feature version each sample read must exist in the feature node's output.

    ``samples[version]`` is the version time the sample node read for the sample's key;
    ``feature_output`` holds the feature node's versions (``key`` columns, ``feature_time`` and
    the feature ``values``, by default every column both sides share). Problems:

    - ``unknown_version``: no such (key, version) in the feature output;
    - ``value_mismatch``: the version exists but a value differs (one row per column);
    - ``future_version``: the version is later than the sample's event time (a leak);
    - ``stale_version`` (with ``latest``): the version exists, but a later one no later than
      the sample time existed, so the sample did not read the version valid at its event
      time;
    - ``missing_version`` (with ``latest``): the sample read nothing though a version existed;
    - ``duplicate_version``: the feature output holds a (key, version) twice.
    """
    own = con is None
    con = con or connect()
    try:
        keys = _keys(key)
        f_view = register_input(con, feature_output, what="features")
        s_view = register_input(con, samples, what="samples")
        f_cols, s_cols = columns_of(con, f_view), columns_of(con, s_view)
        require_columns(f_cols, [*keys, feature_time], "feature output")
        require_columns(s_cols, [*keys, sample_time, version], "samples")
        f_types, s_types = dict(f_cols), dict(s_cols)
        if values is None:
            values = [c for c, _ in f_cols if c in s_types and c not in (*keys, feature_time,
                                                                          sample_time, version)]
        else:
            require_columns(f_cols, values, "feature output")
            require_columns(s_cols, values, "samples")
        ft = ts_expr(ident(feature_time), f_types[feature_time], "feature output version")
        st = ts_expr(ident(sample_time), s_types[sample_time], "samples time")
        sv = ts_expr(ident(version), s_types[version], "samples version")
        kq = [ident(k) for k in keys]
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __ultron_f AS SELECT {', '.join(kq)}, {ft} AS __vt"
            f"{''.join(', ' + ident(v) for v in values)} FROM {f_view}")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __ultron_s AS SELECT {', '.join(kq)}, {st} AS __st,"
            f" {sv} AS __sv{''.join(', ' + ident(v) for v in values)} FROM {s_view}")
        problems: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        key_sel = ", ".join(f"s.{k}" for k in kq)

        def examples(kind: str, sql: str, detail: Any, params: Sequence[Any] = ()) -> None:
            rows = con.execute(sql + " LIMIT ?", [*params, int(limit)]).fetchall()
            for row in rows:
                rec = dict(zip(keys, row[: len(keys)], strict=True))
                extra = row[len(keys):]
                problems.append({"kind": kind, "severity": ERROR, "detail": detail(extra),
                                 "key": ", ".join(f"{k}={rec[k]!r}" for k in keys),
                                 "sample_time": _iso(extra[0]), "version": _iso(extra[1]),
                                 "column": extra[2] if len(extra) > 2 else None})

        n_dup = con.execute(f"SELECT count(*) FROM (SELECT {', '.join(kq)}, __vt FROM __ultron_f"
                            " GROUP BY ALL HAVING count(*) > 1)").fetchall()[0][0]
        counts["duplicate_version"] = int(n_dup)
        if n_dup:
            examples("duplicate_version",
                     f"SELECT {', '.join(kq)}, NULL, __vt FROM __ultron_f GROUP BY ALL "
                     f"HAVING count(*) > 1 ORDER BY ALL",
                     lambda e: "the feature output holds this version more than once")
        join_on = " AND ".join(f"f.{k} IS NOT DISTINCT FROM s.{k}" for k in kq)
        base = (f"FROM __ultron_s s LEFT JOIN (SELECT DISTINCT ON ({', '.join(kq)}, __vt) * "
                f"FROM __ultron_f) f ON {join_on} AND f.__vt = s.__sv")
        unknown = "s.__sv IS NOT NULL AND f.__vt IS NULL"
        counts["unknown_version"] = int(con.execute(
            f"SELECT count(*) {base} WHERE {unknown}").fetchall()[0][0])
        if counts["unknown_version"]:
            examples("unknown_version", f"SELECT {key_sel}, s.__st, s.__sv {base} "
                     f"WHERE {unknown} ORDER BY s.__st",
                     lambda e: f"version {_iso(e[1])} is not in the feature output")
        counts["future_version"] = int(con.execute(
            "SELECT count(*) FROM __ultron_s WHERE __sv > __st").fetchall()[0][0])
        if counts["future_version"]:
            examples("future_version", f"SELECT {key_sel}, s.__st, s.__sv FROM __ultron_s s "
                     "WHERE s.__sv > s.__st ORDER BY s.__sv - s.__st DESC",
                     lambda e: f"version {_iso(e[1])} is later than the sample time "
                               f"{_iso(e[0])}")
        mismatches = 0
        for v in values:
            cond = f"f.__vt IS NOT NULL AND s.{ident(v)} IS DISTINCT FROM f.{ident(v)}"
            n = int(con.execute(f"SELECT count(*) {base} WHERE {cond}").fetchall()[0][0])
            mismatches += n
            if n:
                examples("value_mismatch",
                         f"SELECT {key_sel}, s.__st, s.__sv, CAST(? AS VARCHAR), s.{ident(v)}, "
                         f"f.{ident(v)} {base} WHERE {cond} ORDER BY s.__st",
                         lambda e: f"{e[2]}: the sample read {e[3]!r}, the feature output "
                                   f"has {e[4]!r}", [v])
        counts["value_mismatch"] = mismatches
        counts["stale_version"] = counts["missing_version"] = 0
        if latest:
            asof_on = " AND ".join(f"s.{k} = f.{k}" for k in kq)
            known_on = " AND ".join(f"s.{k} IS NOT DISTINCT FROM k.{k}" for k in kq)
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE __ultron_e AS SELECT s.*, f.__vt AS __expected, "
                f"k.__vt IS NOT NULL AS __known "
                f"FROM __ultron_s s ASOF LEFT JOIN (SELECT {', '.join(kq)}, __vt FROM "
                f"__ultron_f) f ON {asof_on} AND s.__st >= f.__vt "
                f"LEFT JOIN (SELECT DISTINCT {', '.join(kq)}, __vt FROM __ultron_f) k "
                f"ON {known_on} AND k.__vt = s.__sv")
            # Stale: a version that exists but is not the one valid at the sample time
            # (unknown versions are reported as such, not again as stale).
            stale = "__known AND __expected > __sv"
            missing = "__sv IS NULL AND __expected IS NOT NULL"
            counts["stale_version"] = int(con.execute(
                f"SELECT count(*) FROM __ultron_e WHERE {stale}").fetchall()[0][0])
            counts["missing_version"] = int(con.execute(
                f"SELECT count(*) FROM __ultron_e WHERE {missing}").fetchall()[0][0])
            if counts["stale_version"]:
                examples("stale_version",
                         f"SELECT {key_sel}, s.__st, s.__sv, NULL, s.__expected FROM "
                         f"__ultron_e s WHERE {stale} ORDER BY s.__st",
                         lambda e: f"read version {_iso(e[1])} but {_iso(e[3])} was valid at "
                                   f"the sample time {_iso(e[0])}")
            if counts["missing_version"]:
                examples("missing_version",
                         f"SELECT {key_sel}, s.__st, s.__sv, NULL, s.__expected FROM "
                         f"__ultron_e s WHERE {missing} ORDER BY s.__st",
                         lambda e: f"read no version but {_iso(e[3])} was valid at the sample "
                                   f"time {_iso(e[0])}")
        total = int(con.execute("SELECT count(*) FROM __ultron_s").fetchall()[0][0])
        with_version = int(con.execute(
            "SELECT count(*) FROM __ultron_s WHERE __sv IS NOT NULL").fetchall()[0][0])
        for t in ("__ultron_f", "__ultron_s", "__ultron_e"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
        ok = not any(counts.values())
        return CheckResult(
            check="version_consistency",
            problems=problems_frame(problems, ["key", "sample_time", "version", "column"]),
            summary=_summary(samples=total, with_version=with_version, ok=ok, **counts),
        )
    finally:
        if own:
            con.close()


