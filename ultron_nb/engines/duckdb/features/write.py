"""A write into a feature table: normalise the rows, resolve duplicates, find what they restate.

Rules (the latest ingest wins, within one write and across writes):

- every row gets an **ingest time**: its ``ingest_time`` column, or the write's wall-clock
  time (UTC) when there is none;
- rows with the same key, version time *and* ingest time in one write are one version: the
  later row of the input wins (they are counted as ``duplicates``);
- rows with the same key and version time but different ingest times are all kept: the one
  with the latest ingest is current, the others are what was known before (a restatement is a
  new version of what was known, not a replacement of the old value);
- against the rows already stored, the same rule holds, ties on the ingest time going to the
  later write. Rows that arrive already outdated (an older ingest than the stored row) are
  kept for known-time lookups and counted as ``outdated``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ultron_nb.engines.duckdb.connection import columns_of, ident, require_columns
from ultron_nb.engines.duckdb.features.layout import INGEST, TableMeta
from ultron_nb.engines.duckdb.features.state import CODE, TableState, encode_keys, sort_order
from ultron_nb.engines.duckdb.times import utc_sql
from ultron_nb.errors import ConfigError, DataError


@dataclass(frozen=True)
class WriteResult:
    """What one write stored (see :mod:`.write` for the rules)."""

    table: str
    write: int
    rows_in: int
    versions: int
    duplicates: int
    restated: int
    outdated: int
    null_keys_dropped: int
    current: int

    def __str__(self) -> str:
        return (f"feature table {self.table}: write {self.write} stored {self.versions} "
                f"version(s) of {self.rows_in} row(s) ({self.duplicates} duplicate(s) resolved, "
                f"{self.restated} earlier version(s) restated, {self.outdated} already "
                f"outdated, {self.null_keys_dropped} null key(s) dropped); {self.current} "
                "current version(s)")

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(str(self))}</p>"


@dataclass(frozen=True)
class Batch:
    """The normalised rows of one write, in input order. ``groups[i]``: the key of row ``i`` as
    an index into ``group_keys`` (one row per distinct key); ``latest[i]``: row ``i`` is the
    latest ingest of its (key, version time); ``order``: the rows sorted by key, version time,
    ingest time."""

    rows: pa.Table
    meta: TableMeta
    rows_in: int
    duplicates: int
    null_keys_dropped: int
    groups: np.ndarray
    group_keys: pa.Table
    latest: np.ndarray
    order: np.ndarray


def normalize(cur: duckdb.DuckDBPyConnection, table: str, data: pa.Table,
              keys: tuple[str, ...], version_time: str, ingest_time: str | None,
              unit: str | None, null_keys: str) -> Batch:
    """Check and normalise ``data`` for ``table``: times in UTC, nulls refused or dropped,
    duplicates resolved (:func:`resolve`)."""
    if null_keys not in ("fail", "drop"):
        raise ConfigError(f"null_keys: {null_keys!r} is not 'fail' or 'drop'")
    if ingest_time in (*keys, version_time):
        raise ConfigError(f"ingest_time: {ingest_time!r} is a key or the version time")
    cur.register("__ultron_w", data)
    try:
        cols = columns_of(cur, "__ultron_w")
        wanted = [*keys, version_time, *([ingest_time] if ingest_time else [])]
        require_columns(cols, wanted, f"feature table {table!r} input")
        types = dict(cols)
        what = f"feature table {table!r}: column"
        vt = utc_sql(ident(version_time), types[version_time], f"{what} {version_time!r}", unit)
        ing = "NULL" if ingest_time is None else utc_sql(
            ident(ingest_time), types[ingest_time], f"{what} {ingest_time!r}", unit)
        null_key = " OR ".join(f"{ident(k)} IS NULL" for k in keys)
        got = cur.sql(f"SELECT {vt} AS vt, CAST({ing} AS TIMESTAMP) AS ing, ({null_key}) AS kn "
                      "FROM __ultron_w").to_arrow_table()
    finally:
        cur.unregister("__ultron_w")
    knull = got.column("kn").to_numpy()
    vt_arr, ing_arr = got.column("vt").combine_chunks(), got.column("ing").combine_chunks()
    if ingest_time is None:  # every row of the write was learnt now
        now = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "us")
        ing_arr = pa.array(np.full(data.num_rows, now))
    _check_nulls(table, knull, vt_arr, ing_arr, version_time, ingest_time, null_keys)
    rest = [c for c, _ in cols if c not in (*keys, version_time, ingest_time)]
    rows = pa.table({**{k: data.column(k) for k in keys}, version_time: vt_arr,
                     INGEST: ing_arr, **{c: data.column(c) for c in rest}})
    meta = TableMeta(table, keys, version_time, (*((k, types[k]) for k in keys),
                     (version_time, "TIMESTAMP"), *((c, types[c]) for c in rest)))
    return resolve(cur, rows, ~knull, meta)


def resolve(cur: duckdb.DuckDBPyConnection, rows: pa.Table, valid: np.ndarray,
            meta: TableMeta) -> Batch:
    """Of the ``valid`` rows (a key), those equal on key, version time and ingest time are one
    version: keep the later; mark the latest ingest of each (key, version time). The rows
    kept stay in input order and are copied once at most; ``order`` sorts them by key,
    version time, ingest time."""
    sub = np.flatnonzero(valid)
    every = len(sub) == rows.num_rows
    keyed = rows.select(list(meta.key))
    groups, group_keys = encode_keys(keyed if every else keyed.take(pa.array(sub)), meta.key)
    vt = rows.column(meta.version_time).cast(pa.int64()).to_numpy()[sub]
    ing = rows.column(INGEST).cast(pa.int64()).to_numpy()[sub]
    order = sort_order(groups, vt, ing)  # positions in ``sub``
    g, v, i = groups[order], vt[order], ing[order]
    same_vt = (g[1:] == g[:-1]) & (v[1:] == v[:-1])
    same_all = same_vt & (i[1:] == i[:-1])
    kept = np.ones(len(sub), dtype=bool)
    if same_all.any():  # drop the earlier of equal rows (the sort keeps input order on ties)
        dropped = np.append(same_all, False)
        kept[order[dropped]] = False
        order = order[~dropped]
        same_vt = (g[~dropped][1:] == g[~dropped][:-1]) & (v[~dropped][1:] == v[~dropped][:-1])
    renumber = np.cumsum(kept) - 1
    latest = np.zeros(int(kept.sum()), dtype=bool)
    order = renumber[order]
    latest[order] = np.append(~same_vt, True) if len(order) else latest
    if not (every and kept.all()):
        keep = np.zeros(rows.num_rows, dtype=bool)
        keep[sub[kept]] = True
        rows = rows.filter(pa.array(keep))
    return Batch(rows, meta, len(valid), len(sub) - int(kept.sum()), len(valid) - len(sub),
                 groups[kept], group_keys, latest, order)


def _check_nulls(table: str, knull: np.ndarray, vt: pa.Array, ing: pa.Array,
                 version_time: str, ingest_time: str | None, null_keys: str) -> None:
    n_key = int(knull.sum())
    has_key = pa.array(~knull)
    n_time = int(pc.sum(pc.and_(vt.is_null(), has_key)).as_py() or 0)
    n_ingest = int(pc.sum(pc.and_(ing.is_null(), has_key)).as_py() or 0)
    if n_key and null_keys == "fail":
        raise DataError(f"feature table {table!r}: {n_key} row(s) with a NULL key; nothing "
                        "written (null_keys='drop' drops and counts them)")
    if n_time:
        raise DataError(f"feature table {table!r}: {n_time} row(s) without a version time "
                        f"(column {version_time!r}, or it does not parse); nothing written")
    if n_ingest:
        raise DataError(f"feature table {table!r}: {n_ingest} row(s) without an ingest time "
                        f"(column {ingest_time!r}, or it does not parse); nothing written")


def check_meta(old: TableMeta | None, new: TableMeta) -> None:
    """Refuse a write whose key, version time or columns differ from the table's."""
    if old is None:
        return
    table = new.name
    if old.key != new.key or old.version_time != new.version_time:
        raise DataError(f"feature table {table!r} is keyed by {', '.join(old.key)} with "
                        f"version time {old.version_time!r}; this write uses "
                        f"{', '.join(new.key)} and {new.version_time!r}")
    before, after = dict(old.columns), dict(new.columns)
    for name, typ in new.columns:
        if name not in before:
            raise DataError(f"feature table {table!r}: column {name!r} is new (the table has "
                            f"{', '.join(before)})")
        if before[name] != typ:
            raise DataError(f"feature table {table!r}: column {name!r} is {typ}, the table "
                            f"has {before[name]}")
    missing = [c for c in before if c not in after]
    if missing:
        raise DataError(f"feature table {table!r}: column(s) {', '.join(missing)} missing from "
                        "this write")


def superseded(cur: duckdb.DuckDBPyConnection, state: TableState, batch: Batch,
               codes: np.ndarray) -> np.ndarray:
    """Global positions of the rows that ``batch`` (appended next) makes non-current.

    Within the batch, every row but the latest-ingest one of its (key, version time); against
    the current rows, whichever of the two has the older ingest time (the stored one on a tie).
    """
    base = state.rows
    positions = np.arange(base, base + batch.rows.num_rows, dtype=np.int64)
    within = positions[~batch.latest]
    if not state.rows:
        return within
    mask = pa.array(batch.latest)
    new = pa.table({CODE: pa.array(codes), "__vt": batch.rows.column(state.meta.version_time),
                    "__ingest": batch.rows.column(INGEST), "__j": pa.array(positions)}
                   ).filter(mask)
    cur.register("__ultron_new", new)
    cur.register("__ultron_live", state.index(live_only=True))
    try:
        got = cur.execute(
            f"""SELECT CASE WHEN l.__ingest > n.__ingest THEN n.__j ELSE l.__i END AS pos
                FROM __ultron_new n JOIN __ultron_live l
                  ON l.{CODE} = n.{CODE} AND l.__vt = n.__vt""").fetchnumpy()["pos"]
    finally:
        cur.unregister("__ultron_new")
        cur.unregister("__ultron_live")
    return np.sort(np.concatenate([within, np.asarray(got, dtype=np.int64)]))
