"""Evaluating data-quality rules on a node's output with DuckDB SQL.

DuckDB rather than a validation library (pandera, Soda, Great Expectations): the outputs are
already read through DuckDB everywhere (:mod:`ultron_nb.engines.outputs`), a ``check`` rule's
predicate is DuckDB SQL as a DuckDB node's body is, a window is one filtered scan of the
files, and no second engine or its configuration enters the daemon. Every value of a rule
(bounds, window times) is bound as a parameter; only the rule's column names (quoted) and a
``check`` predicate (the user's SQL, as a node body) are part of the statement.

The measured value of each kind:

- ``rows``: rows in the window; ``nulls``: the share of NULLs of the column (0 without rows);
- ``range``: rows whose value lies outside the bounds; ``unique``: rows beyond the first of
  each key; ``check``: rows for which the predicate is not true;
- ``drift``: the population stability index of the column against a reference (the deciles
  of the first window with at least :data:`DRIFT_MIN_VALUES` values, kept by the caller), 0
  for the reference window itself and for a window with fewer values (too few to judge).

Freshness needs the wall clock and the node's watermark, not rows: :func:`freshness_lag`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from ultron_nb.engines.duckdb.connection import connect, ident
from ultron_nb.engines.duckdb.query import TableFiles, declare
from ultron_nb.errors import DataError
from ultron_nb.flow.quality import Rule, RuleKind

SAMPLES = 5  # offending rows kept with a violation
DRIFT_BINS = 10
DRIFT_MIN_VALUES = 50  # fewer values in a window: its drift is not judged
_EPS = 1e-4  # the share given to an empty bin (PSI of empty bins stays finite)
_WINDOW = "__ultron_window"


@dataclass(frozen=True)
class Measurement:
    """A rule's value on one window (or one run's output)."""

    rule: str
    value: float
    ok: bool
    rows: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    reference: dict[str, Any] | None = None  # a drift rule's new reference, when it set one


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    return str(value)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()
          ) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description or []]
    return [{n: _json_safe(v) for n, v in zip(names, row, strict=True)}
            for row in cur.fetchall()]


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> float:
    row = con.execute(sql, list(params)).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def _columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {str(r[0]) for r in con.execute(f"DESCRIBE {_WINDOW}").fetchall()}


def evaluate(rules: Sequence[Rule], table: TableFiles, *, time_column: str | None = None,
             start_ms: int | None = None, end_ms: int | None = None,
             references: Mapping[str, dict[str, Any]] | None = None) -> list[Measurement]:
    """Each of ``rules`` (freshness aside) on the rows of ``table`` whose ``time_column``
    lies in ``[start_ms, end_ms)`` (every row without a window). ``references`` hold the
    drift rules' references by rule name. A rule naming a column the output lacks, or a
    predicate DuckDB refuses, raises :class:`DataError` naming the node and the rule."""
    con = connect(threads=1)
    try:
        declare(con, table, f"quality of {table.name}")
        if time_column is not None and start_ms is not None and end_ms is not None:
            con.execute(f"CREATE TEMP TABLE {_WINDOW} AS SELECT * FROM {ident(table.name)} "
                        f"WHERE {ident(time_column)} >= ? AND {ident(time_column)} < ?",
                        [_when(start_ms), _when(end_ms)])
        else:
            con.execute(f"CREATE TEMP TABLE {_WINDOW} AS SELECT * FROM {ident(table.name)}")
        rows = int(_scalar(con, f"SELECT count(*) FROM {_WINDOW}"))
        known = _columns(con)
        out = []
        for rule in rules:
            if rule.kind is RuleKind.FRESHNESS:
                continue
            missing = [c for c in rule.columns if c not in known]
            if missing:
                raise DataError(f"node {rule.node!r}: rule {rule.name!r} names column "
                                f"{missing[0]!r}, which its output lacks (columns: "
                                f"{', '.join(sorted(known))})")
            try:
                out.append(_measure(con, rule, rows, (references or {}).get(rule.name)))
            except duckdb.Error as exc:
                first = str(exc).strip().splitlines()[0]
                raise DataError(f"node {rule.node!r}: rule {rule.name!r}: {first}") from None
        return out
    finally:
        con.close()


def _measure(con: duckdb.DuckDBPyConnection, rule: Rule, rows: int,
             reference: dict[str, Any] | None) -> Measurement:
    cols = ", ".join(ident(c) for c in rule.columns)
    if rule.kind is RuleKind.ROWS:
        return Measurement(rule.name, float(rows), rule.holds(rows), rows)
    if rule.kind is RuleKind.NULLS:
        col = ident(rule.columns[0])
        share = _scalar(con, f"SELECT avg(CASE WHEN {col} IS NULL THEN 1.0 ELSE 0.0 END) "
                             f"FROM {_WINDOW}") if rows else 0.0
        samples = _rows(con, f"SELECT * FROM {_WINDOW} WHERE {col} IS NULL LIMIT {SAMPLES}")
        return Measurement(rule.name, share, rule.holds(share), rows,
                           samples if not rule.holds(share) else [])
    if rule.kind in (RuleKind.RANGE, RuleKind.CHECK):
        if rule.kind is RuleKind.RANGE:
            col = ident(rule.columns[0])
            where, params = f"{col} IS NOT NULL AND NOT ({col} BETWEEN ? AND ?)", \
                [rule.low, rule.high]
        else:
            where, params = f"NOT coalesce(({rule.predicate}), false)", []
        bad = _scalar(con, f"SELECT count(*) FROM {_WINDOW} WHERE {where}", params)
        samples = _rows(con, f"SELECT * FROM {_WINDOW} WHERE {where} LIMIT {SAMPLES}",
                        params) if bad else []
        return Measurement(rule.name, bad, rule.holds(bad), rows, samples)
    if rule.kind is RuleKind.UNIQUE:
        extra = _scalar(con, f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n "
                             f"FROM {_WINDOW} GROUP BY {cols} HAVING count(*) > 1)")
        samples = _rows(con, f"SELECT {cols}, count(*) AS rows FROM {_WINDOW} GROUP BY "
                             f"{cols} HAVING count(*) > 1 ORDER BY rows DESC "
                             f"LIMIT {SAMPLES}") if extra else []
        return Measurement(rule.name, extra, rule.holds(extra), rows, samples)
    if rule.kind is RuleKind.DRIFT:
        return _drift(con, rule, rows, reference)
    raise DataError(f"node {rule.node!r}: rule {rule.name!r}: {rule.kind} is not measured "
                    "on rows")


def _shares(con: duckdb.DuckDBPyConnection, col: str, edges: Sequence[float]) -> list[float]:
    """The share of the window's non-NULL values in each of the bins ``edges`` bound."""
    if not edges:  # a constant reference: one bin
        return [1.0]
    cases = " ".join(f"WHEN {col} < ? THEN {i}" for i in range(len(edges)))
    counts = dict(con.execute(
        f"SELECT CASE {cases} ELSE {len(edges)} END AS bin, count(*) FROM {_WINDOW} "
        f"WHERE {col} IS NOT NULL GROUP BY bin", list(edges)).fetchall())
    total = sum(counts.values()) or 1
    return [counts.get(i, 0) / total for i in range(len(edges) + 1)]


def _drift(con: duckdb.DuckDBPyConnection, rule: Rule, rows: int,
           reference: dict[str, Any] | None) -> Measurement:
    col = ident(rule.columns[0])
    present = _scalar(con, f"SELECT count({col}) FROM {_WINDOW}")
    if present < DRIFT_MIN_VALUES:  # too few values to set or judge a distribution
        return Measurement(rule.name, 0.0, True, rows)
    if reference is None:
        quantiles = [i / DRIFT_BINS for i in range(1, DRIFT_BINS)]
        row = con.execute(f"SELECT quantile_cont({col}::DOUBLE, ?) FROM {_WINDOW}",
                          [quantiles]).fetchone()
        edges = sorted(set(float(v) for v in (row[0] if row else []) or []))
        reference = {"edges": edges, "shares": _shares(con, col, edges)}
        return Measurement(rule.name, 0.0, True, rows, reference=reference)
    edges = [float(e) for e in reference["edges"]]
    expected = [max(float(s), _EPS) for s in reference["shares"]]
    actual = [max(s, _EPS) for s in _shares(con, col, edges)]
    psi = round(sum((a - e) * math.log(a / e) for a, e in zip(actual, expected, strict=True)),
                4)
    return Measurement(rule.name, psi, rule.holds(psi), rows)


def freshness_lag(watermark_ms: int | None, now: float) -> float | None:
    """Seconds the node's watermark trails the wall clock (None before a watermark)."""
    if watermark_ms is None:
        return None
    return round(max(0.0, now - watermark_ms / 1000), 3)
