"""The leakage check: no sample may have joined a feature version later than its time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from ultron_nb.engines.duckdb.checks.common import iso, keys_of, summary_frame, ts_expr
from ultron_nb.engines.duckdb.connection import (
    columns_of,
    connect,
    ident,
    register_input,
    require_columns,
)
from ultron_nb.engines.duckdb.report import ERROR, CheckResult, problems_frame


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
        keys = [] if key is None else keys_of(key)
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
            if n:
                problems += _examples(con, view, s_expr, f_expr, fcol, keys, limit)
        frame = problems_frame(problems, ["feature_column", *keys, "sample_time",
                                          "feature_time", "lead"])
        return CheckResult(
            check="leakage", problems=frame,
            summary=summary_frame(rows=total, leaks=leaks_total, ok=leaks_total == 0, **summary),
        )
    finally:
        if own:
            con.close()


def _examples(con: duckdb.DuckDBPyConnection, view: str, s_expr: str, f_expr: str, fcol: str,
              keys: list[str], limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` leaks of feature column ``fcol``, the largest leads first."""
    key_sel = "".join(f", {ident(k)} AS {ident('key_' + k)}" for k in keys)
    rows = con.execute(
        f"SELECT {s_expr} AS st, {f_expr} AS ft, {f_expr} - {s_expr} AS lead{key_sel} "
        f"FROM {view} WHERE {f_expr} > {s_expr} ORDER BY lead DESC, st LIMIT ?",
        [int(limit)],
    ).fetchall()
    out = []
    for row in rows:
        st, ft, lead = row[0], row[1], row[2]
        entry = {"kind": "leak", "severity": ERROR,
                 "detail": f"feature version {iso(ft)} is {lead} after the sample time "
                           f"{iso(st)}",
                 "feature_column": fcol, "sample_time": iso(st), "feature_time": iso(ft),
                 "lead": str(lead)}
        entry.update(zip(keys, row[3:], strict=True))
        out.append(entry)
    return out
