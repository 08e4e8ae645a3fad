"""The version-consistency check: the feature version each sample read must be the feature
node's, with its values, and (optionally) the one valid at the sample's event time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

_TABLES = ("__ultron_f", "__ultron_s", "__ultron_e")


class _Examples:
    """Counts one kind of problem and keeps up to ``limit`` examples of it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, keys: list[str], limit: int):
        self.con, self.keys, self.limit = con, keys, limit
        self.problems: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}

    def count(self, kind: str, sql: str, params: Sequence[Any] = ()) -> int:
        n = int(self.con.execute(sql, list(params)).fetchall()[0][0])
        self.counts[kind] = self.counts.get(kind, 0) + n
        return n

    def add(self, kind: str, sql: str, detail: Callable[[Sequence[Any]], str],
            params: Sequence[Any] = ()) -> None:
        rows = self.con.execute(sql + " LIMIT ?", [*params, int(self.limit)]).fetchall()
        for row in rows:
            rec = dict(zip(self.keys, row[: len(self.keys)], strict=True))
            extra = row[len(self.keys):]
            self.problems.append({
                "kind": kind, "severity": ERROR, "detail": detail(extra),
                "key": ", ".join(f"{k}={rec[k]!r}" for k in self.keys),
                "sample_time": iso(extra[0]), "version": iso(extra[1]),
                "column": extra[2] if len(extra) > 2 else None})


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
        keys = keys_of(key)
        values = _stage(con, feature_output, samples, keys, sample_time, version, feature_time,
                        values)
        found = _Examples(con, keys, limit)
        kq = [ident(k) for k in keys]
        _duplicates(found, kq)
        base = _unknown_and_future(found, kq)
        _mismatches(found, kq, values, base)
        found.counts["stale_version"] = found.counts["missing_version"] = 0
        if latest:
            _not_latest(found, kq)
        total, with_version = con.execute(
            "SELECT count(*), count(__sv) FROM __ultron_s").fetchall()[0]
        for table in _TABLES:
            con.execute(f"DROP TABLE IF EXISTS {table}")
        ok = not any(found.counts.values())
        return CheckResult(
            check="version_consistency",
            problems=problems_frame(found.problems, ["key", "sample_time", "version", "column"]),
            summary=summary_frame(samples=int(total), with_version=int(with_version), ok=ok,
                                  **found.counts),
        )
    finally:
        if own:
            con.close()


def _stage(con: duckdb.DuckDBPyConnection, feature_output: Any, samples: Any, keys: list[str],
           sample_time: str, version: str, feature_time: str,
           values: Sequence[str] | None) -> list[str]:
    """Stage both sides as ``__ultron_f`` (key, __vt, values) and ``__ultron_s`` (key, __st,
    __sv, values); return the compared value columns."""
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
    kq = ", ".join(ident(k) for k in keys)
    vals = "".join(", " + ident(v) for v in values)
    con.execute(f"CREATE OR REPLACE TEMP TABLE __ultron_f AS SELECT {kq}, {ft} AS __vt{vals} "
                f"FROM {f_view}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE __ultron_s AS SELECT {kq}, {st} AS __st, "
                f"{sv} AS __sv{vals} FROM {s_view}")
    return list(values)


def _duplicates(found: _Examples, kq: list[str]) -> None:
    group = f"SELECT {', '.join(kq)}, __vt FROM __ultron_f GROUP BY ALL HAVING count(*) > 1"
    if found.count("duplicate_version", f"SELECT count(*) FROM ({group})"):
        found.add("duplicate_version", f"SELECT {', '.join(kq)}, NULL, __vt FROM __ultron_f "
                  "GROUP BY ALL HAVING count(*) > 1 ORDER BY ALL",
                  lambda e: "the feature output holds this version more than once")


def _unknown_and_future(found: _Examples, kq: list[str]) -> str:
    """Count unknown and future versions; return the FROM clause joining samples to the
    versions they read."""
    key_sel = ", ".join(f"s.{k}" for k in kq)
    join_on = " AND ".join(f"f.{k} IS NOT DISTINCT FROM s.{k}" for k in kq)
    base = (f"FROM __ultron_s s LEFT JOIN (SELECT DISTINCT ON ({', '.join(kq)}, __vt) * "
            f"FROM __ultron_f) f ON {join_on} AND f.__vt = s.__sv")
    unknown = "s.__sv IS NOT NULL AND f.__vt IS NULL"
    if found.count("unknown_version", f"SELECT count(*) {base} WHERE {unknown}"):
        found.add("unknown_version", f"SELECT {key_sel}, s.__st, s.__sv {base} WHERE {unknown} "
                  "ORDER BY s.__st", lambda e: f"version {iso(e[1])} is not in the feature "
                  "output")
    if found.count("future_version", "SELECT count(*) FROM __ultron_s WHERE __sv > __st"):
        found.add("future_version", f"SELECT {key_sel}, s.__st, s.__sv FROM __ultron_s s "
                  "WHERE s.__sv > s.__st ORDER BY s.__sv - s.__st DESC",
                  lambda e: f"version {iso(e[1])} is later than the sample time {iso(e[0])}")
    return base


def _mismatches(found: _Examples, kq: list[str], values: list[str], base: str) -> None:
    key_sel = ", ".join(f"s.{k}" for k in kq)
    found.counts["value_mismatch"] = 0
    for v in values:
        cond = f"f.__vt IS NOT NULL AND s.{ident(v)} IS DISTINCT FROM f.{ident(v)}"
        if found.count("value_mismatch", f"SELECT count(*) {base} WHERE {cond}"):
            found.add("value_mismatch",
                      f"SELECT {key_sel}, s.__st, s.__sv, CAST(? AS VARCHAR), s.{ident(v)}, "
                      f"f.{ident(v)} {base} WHERE {cond} ORDER BY s.__st",
                      lambda e: f"{e[2]}: the sample read {e[3]!r}, the feature output has "
                                f"{e[4]!r}", [v])


def _not_latest(found: _Examples, kq: list[str]) -> None:
    """Stale (a later valid version existed) and missing (nothing read though one existed)."""
    key_sel = ", ".join(f"s.{k}" for k in kq)
    asof_on = " AND ".join(f"s.{k} = f.{k}" for k in kq)
    known_on = " AND ".join(f"s.{k} IS NOT DISTINCT FROM k.{k}" for k in kq)
    found.con.execute(
        f"CREATE OR REPLACE TEMP TABLE __ultron_e AS SELECT s.*, f.__vt AS __expected, "
        f"k.__vt IS NOT NULL AS __known "
        f"FROM __ultron_s s ASOF LEFT JOIN (SELECT {', '.join(kq)}, __vt FROM __ultron_f) f "
        f"ON {asof_on} AND s.__st >= f.__vt "
        f"LEFT JOIN (SELECT DISTINCT {', '.join(kq)}, __vt FROM __ultron_f) k "
        f"ON {known_on} AND k.__vt = s.__sv")
    # Stale: a version that exists but is not the one valid at the sample time (unknown
    # versions are reported as such, not again as stale).
    checks = (("stale_version", "__known AND __expected > __sv",
               lambda e: f"read version {iso(e[1])} but {iso(e[3])} was valid at the sample "
                         f"time {iso(e[0])}"),
              ("missing_version", "__sv IS NULL AND __expected IS NOT NULL",
               lambda e: f"read no version but {iso(e[3])} was valid at the sample time "
                         f"{iso(e[0])}"))
    for kind, cond, detail in checks:
        found.counts[kind] = 0
        if found.count(kind, f"SELECT count(*) FROM __ultron_e WHERE {cond}"):
            found.add(kind, f"SELECT {key_sel}, s.__st, s.__sv, NULL, s.__expected FROM "
                      f"__ultron_e s WHERE {cond} ORDER BY s.__st", detail)
