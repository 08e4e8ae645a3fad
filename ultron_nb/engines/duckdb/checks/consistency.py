"""The consistency check: replayed output against the live output, row by row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from ultron_nb.engines.duckdb.checks.common import (
    NUMERIC_PREFIX,
    iso,
    keys_of,
    summary_frame,
    ts_expr,
)
from ultron_nb.engines.duckdb.connection import (
    columns_of,
    connect,
    ident,
    register_input,
    require_columns,
)
from ultron_nb.engines.duckdb.report import ERROR, CheckResult, problems_frame

_TABLES = ("__ultron_j", "__ultron_r", "__ultron_l")


@dataclass(frozen=True)
class _Sides:
    keys: list[str]
    time: str
    match: list[str]  # the columns rows are matched on
    values: list[str]  # the columns compared
    views: dict[str, str]  # "replayed"/"live" -> view
    times: dict[str, str]  # "replayed"/"live" -> UTC time expression
    types: dict[str, dict[str, str]]


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
        sides = _sides(con, replayed, live, keys_of(key), time, values)
        lo, hi = _window(con, sides, window)
        if lo is None or hi is None or lo > hi:
            return _no_overlap(lo, hi)
        for name, table in (("replayed", "__ultron_r"), ("live", "__ultron_l")):
            con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {_side_sql(sides, name)}",
                        [lo, hi])
        problems: list[dict[str, Any]] = []
        dups = _duplicates(con, sides, limit, problems)
        diffs, tol = _diffs(sides, tolerance)
        counts = _join(con, sides, diffs, tol)
        _examples(con, sides, diffs, counts["mismatch"], limit, problems)
        for table in _TABLES:
            con.execute(f"DROP TABLE IF EXISTS {table}")
        ok = not (counts["mismatch"] or counts["miss_live"] or counts["miss_replay"]
                  or dups["replayed"] or dups["live"])
        return CheckResult(
            check="consistency",
            problems=problems_frame(problems, ["key", "time", "column", "replayed", "live"]),
            summary=summary_frame(
                window_start=iso(lo), window_end=iso(hi), replayed_rows=counts["n_r"],
                live_rows=counts["n_l"], equal=counts["equal"],
                value_mismatch=counts["mismatch"], missing_in_live=counts["miss_live"],
                missing_in_replay=counts["miss_replay"],
                duplicate_keys=dups["replayed"] + dups["live"], overlap=True, ok=ok),
        )
    finally:
        if own:
            con.close()


def _sides(con: duckdb.DuckDBPyConnection, replayed: Any, live: Any, keys: list[str],
           time: str, values: Sequence[str] | None) -> _Sides:
    views = {"replayed": register_input(con, replayed, what="replayed"),
             "live": register_input(con, live, what="live")}
    cols = {name: columns_of(con, view) for name, view in views.items()}
    for name, found in cols.items():
        require_columns(found, [*keys, time], name)
    types = {name: dict(found) for name, found in cols.items()}
    match = [*keys, time] if time not in keys else keys
    if values is None:
        values = [c for c, _ in cols["replayed"] if c in types["live"] and c not in match]
    else:
        for name, found in cols.items():
            require_columns(found, values, name)
    times = {name: ts_expr(ident(time), types[name][time], f"{name} column {time!r}")
             for name in views}
    return _Sides(keys, time, match, list(values), views, times, types)


def _window(con: duckdb.DuckDBPyConnection, sides: _Sides, window: tuple[Any, Any] | None
            ) -> tuple[Any, Any]:
    if window is not None:
        from ultron_nb.engines.duckdb.times import to_utc_naive

        return to_utc_naive(window[0], "window start"), to_utc_naive(window[1], "window end")
    bounds = [con.execute(f"SELECT min({sides.times[n]}), max({sides.times[n]}) FROM "
                          f"{sides.views[n]}").fetchall()[0] for n in ("replayed", "live")]
    if any(v is None for pair in bounds for v in pair):
        return None, None
    return max(bounds[0][0], bounds[1][0]), min(bounds[0][1], bounds[1][1])


def _no_overlap(lo: Any, hi: Any) -> CheckResult:
    import pandas as pd

    summary = summary_frame(window_start=iso(lo), window_end=iso(hi), replayed_rows=0,
                            live_rows=0, equal=0, value_mismatch=0, missing_in_live=0,
                            missing_in_replay=0, duplicate_keys=0, overlap=False, ok=False)
    problem = {"kind": "no_overlap", "severity": ERROR,
               "detail": "the replayed and live outputs share no event-time window"}
    return CheckResult("consistency", problems_frame([problem], []), summary, pd.DataFrame())


def _side_sql(sides: _Sides, name: str) -> str:
    t_expr = sides.times[name]
    sel = [ident(k) for k in sides.keys if k != sides.time] + [
        f"{t_expr} AS {ident(sides.time)}"]
    sel += [ident(v) for v in sides.values if v not in sides.match]
    return (f"SELECT {', '.join(sel)} FROM {sides.views[name]} "
            f"WHERE {t_expr} >= ? AND {t_expr} <= ?")


def _record(sides: _Sides, kind: str, detail: str, row: Sequence[Any], **extra: Any
            ) -> dict[str, Any]:
    rec = dict(zip(sides.match, row, strict=True))
    key = ", ".join(f"{k}={rec.get(k)!r}" for k in sides.keys if k != sides.time)
    return {"kind": kind, "severity": ERROR, "detail": detail, "key": key,
            "time": iso(rec[sides.time]), "column": None, "replayed": None, "live": None,
            **extra}


def _duplicates(con: duckdb.DuckDBPyConnection, sides: _Sides, limit: int,
                problems: list[dict[str, Any]]) -> dict[str, int]:
    group = ", ".join(ident(c) for c in sides.match)
    dups = {}
    for name, table in (("replayed", "__ultron_r"), ("live", "__ultron_l")):
        dup_sql = f"SELECT {group} FROM {table} GROUP BY ALL HAVING count(*) > 1"
        dups[name] = int(con.execute(f"SELECT count(*) FROM ({dup_sql})").fetchall()[0][0])
        if dups[name]:
            for row in con.execute(f"{dup_sql} ORDER BY ALL LIMIT ?", [int(limit)]).fetchall():
                problems.append(_record(sides, "duplicate_key",
                                        f"{name} has several rows for this key and time", row))
    return dups


def _diffs(sides: _Sides, tolerance: float) -> tuple[list[tuple[str, str]], list[float]]:
    """(column, SQL that is true when the two sides differ) per compared column."""
    diffs, params = [], []
    r_types, l_types = sides.types["replayed"], sides.types["live"]
    for v in sides.values:
        if v in sides.match:
            continue
        rv, lv = f"r.{ident(v)}", f"l.{ident(v)}"
        numeric = r_types[v].upper().startswith(NUMERIC_PREFIX) and l_types[
            v].upper().startswith(NUMERIC_PREFIX)
        if numeric and tolerance > 0:
            diffs.append((v, f"NOT ({rv} IS NOT DISTINCT FROM {lv} OR abs({rv} - {lv}) <= ?)"))
            params.append(float(tolerance))
        else:
            diffs.append((v, f"{rv} IS DISTINCT FROM {lv}"))
    return diffs, params


def _join(con: duckdb.DuckDBPyConnection, sides: _Sides, diffs: list[tuple[str, str]],
          params: list[float]) -> dict[str, int]:
    on = " AND ".join(f"r.{ident(c)} IS NOT DISTINCT FROM l.{ident(c)}" for c in sides.match)
    flag_cols = ", ".join(f"({cond}) AS {ident('__d_' + v)}" for v, cond in diffs)
    any_diff = " OR ".join(ident("__d_" + v) for v, _ in diffs) or "false"
    pairs = ", ".join(f"r.{ident(v)} AS {ident('__r_' + v)}, l.{ident(v)} AS "
                      f"{ident('__l_' + v)}" for v, _ in diffs)
    matched = ", ".join(f"coalesce(r.{ident(c)}, l.{ident(c)}) AS {ident(c)}"
                        for c in sides.match)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE __ultron_j AS
            SELECT *, coalesce({any_diff}, false) AS differs FROM (
                SELECT {matched}, r.__in IS NOT NULL AS in_r, l.__in IS NOT NULL AS in_l
                       {', ' + flag_cols if flag_cols else ''} {', ' + pairs if pairs else ''}
                FROM (SELECT *, true AS __in FROM __ultron_r) r
                FULL OUTER JOIN (SELECT *, true AS __in FROM __ultron_l) l ON {on}
            )""", params)
    got = con.execute(
        "SELECT count(*) FILTER (WHERE in_r AND in_l AND NOT differs), "
        "count(*) FILTER (WHERE in_r AND in_l AND differs), "
        "count(*) FILTER (WHERE in_r AND NOT in_l), count(*) FILTER (WHERE in_l AND NOT "
        "in_r), (SELECT count(*) FROM __ultron_r), (SELECT count(*) FROM __ultron_l) "
        "FROM __ultron_j").fetchall()[0]
    return dict(zip(("equal", "mismatch", "miss_live", "miss_replay", "n_r", "n_l"),
                    (int(c) for c in got), strict=True))


def _examples(con: duckdb.DuckDBPyConnection, sides: _Sides, diffs: list[tuple[str, str]],
              mismatch: int, limit: int, problems: list[dict[str, Any]]) -> None:
    order = ", ".join(ident(c) for c in sides.match)
    for kind, cond, detail in (
        ("missing_in_live", "in_r AND NOT in_l", "replayed row has no live counterpart"),
        ("missing_in_replay", "in_l AND NOT in_r", "live row has no replayed counterpart"),
    ):
        for row in con.execute(f"SELECT {order} FROM __ultron_j WHERE {cond} ORDER BY {order} "
                               "LIMIT ?", [int(limit)]).fetchall():
            problems.append(_record(sides, kind, detail, row))
    if not mismatch:
        return
    pick = ", ".join(f"{ident('__d_' + v)}, {ident('__r_' + v)}, {ident('__l_' + v)}"
                     for v, _ in diffs)
    n = len(sides.match)
    for row in con.execute(f"SELECT {order}, {pick} FROM __ultron_j WHERE in_r AND in_l AND "
                           f"differs ORDER BY {order} LIMIT ?", [int(limit)]).fetchall():
        rest = row[n:]
        for i, (v, _) in enumerate(diffs):
            flag, rv, lv = rest[3 * i: 3 * i + 3]
            if flag:
                problems.append(_record(sides, "value_mismatch", f"{v}: replayed {rv!r}, live "
                                        f"{lv!r}", row[:n], column=v, replayed=rv, live=lv))
