"""Point-in-time lookups: each sample joined to the feature versions valid at its event time.

How one lookup runs, per feature table:

1. The samples are numbered (their **row id**: position in the input) and only their key,
   time and known-at columns go to DuckDB; times follow :mod:`ultron_nb.engines.duckdb.times`.
2. Each sample key is mapped to the table's integer key code (a hash join against the table's
   key dictionary), then one ordered merge (:mod:`.merge`) against the table's clean index (one
   current row per key and version time, sorted by both) finds the latest version with
   ``version_time <= sample time``. TTL: a version older than ``sample time - ttl`` is no match.
3. Known-time mode (``known_at``): a match ingested after the sample's known-at time is
   replaced by the latest version that *was* known then (a walk back through that key's whole
   history, for those samples only).
4. The feature values are gathered by row position (Arrow ``take``) in the samples' order, so
   the result has exactly one row per sample, in input order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ultron_nb.engines.duckdb.connection import columns_of, ident, read_arrow, require_columns
from ultron_nb.engines.duckdb.features.layout import INGEST
from ultron_nb.engines.duckdb.features.merge import asof
from ultron_nb.engines.duckdb.features.state import CODE, TableState
from ultron_nb.engines.duckdb.times import is_naive, to_utc_naive, utc_arrow, utc_sql
from ultron_nb.errors import ConfigError, DataError

OUTPUTS = ("pandas", "arrow", "duckdb")


@dataclass(frozen=True)
class Request:
    """One feature table of a lookup: which features, by which sample columns, how fresh."""

    state: TableState
    features: tuple[str, ...]
    sample_key: tuple[str, ...]
    ttl: timedelta | None

    @property
    def name(self) -> str:
        return self.state.meta.name


@dataclass(frozen=True)
class Samples:
    """The samples as the lookup sees them (row id order = input order)."""

    frame: Any  # the pandas DataFrame given, or None
    table: pa.Table | None  # the Arrow table (None until needed for a DataFrame input)
    times: pa.Array  # naive UTC sample times
    known: pa.Array | None  # naive UTC known-at times (known-time mode)
    keys: pa.Table  # the sample key columns
    notes: dict[str, Any]


def parse_refs(tables: str | Sequence[str]) -> list[tuple[str, list[str] | None]]:
    """``"t"``, ``"t:f1,f2"`` or a list of them as [(table, features or None = all)]."""
    refs = [tables] if isinstance(tables, str) else list(tables)
    if not refs:
        raise ConfigError("tables: name at least one feature table")
    out: dict[str, list[str] | None] = {}
    for ref in refs:
        if not isinstance(ref, str) or not ref.strip():
            raise ConfigError(f"tables: {ref!r} is not a table name or 'table:feature'")
        name, _, feats = ref.partition(":")
        chosen = [f.strip() for f in feats.split(",") if f.strip()] if feats else None
        if name not in out:
            out[name] = chosen
        elif out[name] is not None:
            out[name] = None if chosen is None else [*out[name], *chosen]  # type: ignore[misc]
    return list(out.items())


def per_table(value: Any, table: str, what: str) -> Any:
    """``value[table]`` for a mapping (None when absent), else ``value`` itself."""
    if isinstance(value, Mapping):
        unknown = [k for k in value if not isinstance(k, str)]
        if unknown:
            raise ConfigError(f"{what}: keys must be table names")
        return value.get(table)
    return value


def prepare_samples(cur: duckdb.DuckDBPyConnection, samples: Any, time: str,
                    keys: Sequence[str], known_at: Any, unit: str | None) -> Samples:
    """Number the samples and convert their times (one rule, see :mod:`..times`)."""
    frame = samples if _is_frame(samples) else None
    table = None if frame is not None else read_arrow(cur, samples, what="samples")
    known_col = known_at if isinstance(known_at, str) and _has_column(
        frame, table, known_at) else None
    needed = list(dict.fromkeys([*keys, time, *([known_col] if known_col else [])]))
    require_columns(list(frame.columns) if frame is not None else table.column_names,
                    needed, "samples")
    narrow = pa.Table.from_pandas(frame[needed], preserve_index=False) if frame is not None \
        else table.select(needed)
    cur.register("__ultron_sn", narrow)
    try:
        types = dict(columns_of(cur, "__ultron_sn"))
        exprs = [f"{utc_sql(ident(time), types[time], f'samples column {time!r}', unit)} AS t"]
        params: list[Any] = []
        if known_col:
            exprs.append(f"{utc_sql(ident(known_col), types[known_col], 'known_at column', unit)}"
                         " AS k")
        elif known_at is not None:
            exprs.append("CAST(? AS TIMESTAMP) AS k")
            params.append(_known_time(known_at))
        got = cur.sql(f"SELECT {', '.join(exprs)} FROM __ultron_sn", params=params).to_arrow_table()
    finally:
        cur.unregister("__ultron_sn")
    naive = [c for c in (time, known_col) if c and is_naive(types[c])]
    notes = {"time_zone": "UTC", "naive_times_taken_as_utc": naive, "time_unit": unit,
             "known_at": None if known_at is None else (known_col or str(
                 _known_time(known_at))), "rows": narrow.num_rows}
    return Samples(frame, table, got.column("t").combine_chunks(),
                   got.column("k").combine_chunks() if "k" in got.column_names else None,
                   narrow.select(list(dict.fromkeys(keys))), notes)


def _known_time(value: Any) -> Any:
    try:
        return to_utc_naive(value, "known_at")
    except ConfigError:
        raise ConfigError(f"known_at: {value!r} is neither a samples column nor a time") from None


def _is_frame(value: Any) -> bool:
    return hasattr(value, "iloc") and hasattr(value, "columns")


def _has_column(frame: Any, table: pa.Table | None, name: str) -> bool:
    return name in (frame.columns if frame is not None else table.column_names)


def positions(cur: duckdb.DuckDBPyConnection, req: Request, s: Samples
              ) -> tuple[np.ndarray, dict[str, int]]:
    """For each sample, the history row it joins in ``req``'s table (-1: none)."""
    code = sample_codes(cur, req, s)
    t, has_t = _micros(s.times)
    live = req.state.sorted_live()
    has_t &= code >= 0
    at = asof(live["keys"], live["packing"], code, t, has_t)
    matched = at >= 0
    found = live["row"][at]  # at = -1 reads the last row: masked next
    found[~matched] = -1
    late = np.zeros(len(code), dtype=bool)
    if s.known is not None:
        known, has_known = _micros(s.known)
        late = matched & has_known & (req.state.times(INGEST)[found] > known)
    fresh = np.ones(len(code), dtype=bool)
    if req.ttl:
        oldest = t - int(req.ttl / timedelta(microseconds=1))
        fresh = ~matched | (req.state.times(req.state.meta.version_time)[found] >= oldest)
    stats = {"no_key": int((code < 0).sum()),
             "expired": int((matched & ~fresh & ~late).sum()), "known_time_fallback": 0}
    idx = np.where(fresh & ~late, found, -1)
    if late.any():
        stats["known_time_fallback"] = int(late.sum())
        rows = np.flatnonzero(late)
        idx[rows] = known_fallback(cur, req, code[rows], t[rows], known[rows], found[rows])
    stats["matched"] = int((idx >= 0).sum())
    return idx, stats


def sample_codes(cur: duckdb.DuckDBPyConnection, req: Request, s: Samples) -> np.ndarray:
    """Each sample's key as the table's key code (-1: a NULL key or one the table has not)."""
    meta = req.state.meta
    n = len(s.times)
    query = {"__r": pa.array(np.arange(n, dtype=np.int64))}
    for i, col in enumerate(req.sample_key):
        query[f"__k{i}"] = s.keys.column(col)
    cur.register("__ultron_q", pa.table(query))
    cur.register("__ultron_d", req.state.keys)
    try:
        on = " AND ".join(f"q.__k{i} = d.{ident(k)}" for i, k in enumerate(meta.key))
        got = cur.sql(f"SELECT q.__r, d.{CODE} FROM __ultron_q q JOIN __ultron_d d ON {on}"
                      ).fetchnumpy()
    except duckdb.Error as exc:
        raise DataError(f"as_of {meta.name!r}: {str(exc).splitlines()[0]}") from None
    finally:
        cur.unregister("__ultron_q")
        cur.unregister("__ultron_d")
    code = np.full(n, -1, dtype=np.int64)
    code[np.asarray(got["__r"], dtype=np.int64)] = np.asarray(got[CODE], dtype=np.int64)
    return code


def _micros(times: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Naive timestamps as ``int64`` microseconds (0 where NULL) and the not-NULL mask."""
    ints = times.cast(pa.timestamp("us")).cast(pa.int64())
    return pc.fill_null(ints, 0).to_numpy(), ints.is_valid().to_numpy(zero_copy_only=False)


def known_fallback(cur: duckdb.DuckDBPyConnection, req: Request, code: np.ndarray,
                   t: np.ndarray, known: np.ndarray, current: np.ndarray) -> np.ndarray:
    """For samples whose current match (history row ``current``) was ingested after their
    known-at time, the latest version known then (a history row, -1: none).

    Every row of the table, sorted by key, version time, ingest time and position, is one
    array; the current match is the last row of its (key, version time). Walking back from
    it visits the candidates in exactly the order of preference, so the first row ingested
    by the known-at time is the answer (none once the walk leaves the key, or passes the TTL).
    """
    walk = req.state.walk(cur)
    oldest = t - (int(req.ttl / timedelta(microseconds=1)) if req.ttl
                  else np.iinfo(np.int64).max // 2)
    p = walk["position"][current]
    answer = np.full(len(code), -1, dtype=np.int64)
    active = np.arange(len(code))
    while len(active):
        q = p[active]
        inside = (q >= 0) & (walk["code"][np.maximum(q, 0)] == code[active]) & (
            walk["vt"][np.maximum(q, 0)] >= oldest[active])
        active, q = active[inside], q[inside]  # walked off the key or past the TTL: none
        hit = walk["ingest"][q] <= known[active]
        answer[active[hit]] = walk["row"][q[hit]]
        active = active[~hit]
        p[active] -= 1
    return answer


def gather(req: Request, idx: np.ndarray) -> dict[str, pa.Array]:
    """The feature values (and version and ingest times, UTC-aware) of rows ``idx``."""
    meta = req.state.meta
    hist = req.state.history()
    missing = idx < 0
    safe = np.where(missing, 0, idx)
    out = {f: take(hist.column(f), safe, missing) for f in req.features}
    out["__version_time"] = utc_arrow(take(hist.column(meta.version_time), safe, missing))
    out["__ingest_time"] = utc_arrow(take(hist.column(INGEST), safe, missing))
    return out


def take(column: pa.ChunkedArray, rows: np.ndarray, missing: np.ndarray) -> pa.Array:
    """``column[rows]`` with NULLs where ``missing``: a numpy gather for a fixed-width column
    without NULLs (several times faster than Arrow's ``take``), Arrow's ``take`` otherwise."""
    kind = column.type
    fixed = pa.types.is_integer(kind) or pa.types.is_floating(kind) or \
        pa.types.is_timestamp(kind)
    if fixed and column.null_count == 0 and column.num_chunks == 1:
        values = column.chunk(0).to_numpy()
        return pa.array(values[rows], type=kind, mask=missing if missing.any() else None)
    return column.take(pa.array(rows, mask=missing)).combine_chunks()


def output_names(requests: Sequence[Request], sample_columns: Sequence[str]
                 ) -> list[list[tuple[str, str]]]:
    """[(source, output name)] per table: a feature is renamed ``<table>__<feature>`` when a
    sample column or another table's feature has the same name."""
    counts: dict[str, int] = {}
    for req in requests:
        for f in req.features:
            counts[f] = counts.get(f, 0) + 1
    taken = set(sample_columns)
    names = []
    for req in requests:
        cols = [(f, f if f not in taken and counts[f] == 1 else f"{req.name}__{f}")
                for f in req.features]
        cols += [("__version_time", f"{req.name}__version_time"),
                 ("__ingest_time", f"{req.name}__ingest_time")]
        clash = [out for _, out in cols if out in taken]
        if clash:
            raise DataError(f"samples already have column(s) {', '.join(clash)}")
        names.append(cols)
    return names


def assemble(s: Samples, time: str, known_col: str | None, columns: list[tuple[str, pa.Array]],
             notes: dict[str, Any], output: str, con: duckdb.DuckDBPyConnection) -> Any:
    """The samples (time columns as UTC-aware timestamps) with the feature columns appended."""
    meta = dict(notes)
    replaced = {time: utc_arrow(s.times)}
    if known_col and s.known is not None:
        replaced[known_col] = utc_arrow(s.known)
    if output == "pandas" and s.frame is not None:  # the user's frame, columns added
        out = _with_columns(s.frame, {name: arr.to_pandas().array
                                      for name, arr in [*replaced.items(), *columns]})
        out.attrs["ultron"] = meta
        return out
    table = s.table if s.table is not None else pa.Table.from_pandas(s.frame,
                                                                     preserve_index=False)
    for name, arr in replaced.items():
        table = table.set_column(table.column_names.index(name), name, arr)
    for name, arr in columns:
        table = table.append_column(name, arr)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"ultron": json.dumps(meta).encode()})
    if output == "arrow":
        return table
    if output == "duckdb":
        return con.from_arrow(table)
    frame = table.to_pandas()
    frame.attrs["ultron"] = meta
    return frame


def _with_columns(frame: Any, new: dict[Any, Any]) -> Any:
    """``frame`` (not copied) with columns ``new`` replacing or following its own, as one new
    frame built at once (setting columns one by one reshuffles pandas' blocks each time)."""
    if not (frame.columns.is_unique and frame.columns.nlevels == 1):
        out = frame.copy(deep=False)
        for name, values in new.items():
            out[name] = values
        return out
    data = {c: new.pop(c) if c in new else frame[c] for c in frame.columns}
    data.update(new)
    return type(frame)(data, index=frame.index, copy=False)
