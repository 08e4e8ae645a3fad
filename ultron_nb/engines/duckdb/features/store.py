"""The embedded versioned feature store: Parquet on disk, Arrow in memory, DuckDB merges.

A row is one *version* of an entity's features: its key, its **version time** (the event time
the values became valid), its **ingest time** (when the store learnt them) and the values.
Writes resolve duplicates and restatements (:mod:`.write`); lookups join each sample to the
version valid at its event time — and, in known-time mode, known at its known-at time
(:mod:`.lookup`). Times follow one rule whatever their form (:mod:`..times`).

A table is loaded into memory once (:meth:`DuckDBFeatureStore.preload`, on a background thread)
and kept current by every write of this store: a write pays its own bookkeeping (dedupe,
restatements, key codes) so that a lookup is one ordered merge against a clean index. Writes by
other processes are picked up from disk (new files only) at the next operation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ultron_nb.engines.duckdb.connection import connect, cursor, read_arrow
from ultron_nb.engines.duckdb.features import lookup
from ultron_nb.engines.duckdb.features.layout import INGEST, TableDir, TableMeta, list_tables
from ultron_nb.engines.duckdb.features.state import TableState
from ultron_nb.engines.duckdb.features.write import (
    WriteResult,
    check_meta,
    normalize,
    superseded,
)
from ultron_nb.engines.duckdb.times import check_unit, parse_duration, utc_arrow
from ultron_nb.errors import ConfigError, NotFoundError

log = logging.getLogger(__name__)


def _keys(key: str | Sequence[str]) -> tuple[str, ...]:
    keys = (key,) if isinstance(key, str) else tuple(key)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ConfigError("key: give one column name or a list of column names")
    return keys


class DuckDBFeatureStore:
    """Versioned features under ``root`` (see the module docstring).

    Thread-safe: each operation uses its own cursor on one in-memory DuckDB database; loads run
    on a small background pool. Close it (or use it as a context manager) to stop the pool.
    """

    def __init__(self, root: str | Path, *, threads: int | None = None):
        self.root = Path(root)
        self._con = connect(threads=threads)
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ultron-preload")
        self._states: dict[str, TableState] = {}
        self._loads: dict[str, Future[str]] = {}
        self._closed = False

    def __enter__(self) -> DuckDBFeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the preload pool, forget the loaded tables and close the DuckDB database."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._states.clear()
        self._con.close()

    def tables(self) -> list[str]:
        """The names of the feature tables in the store."""
        return list_tables(self.root)

    def meta(self, table: str) -> TableMeta:
        """The key, version-time column and columns of ``table``."""
        return TableDir(self.root, table).meta()

    # ------------------------------------------------------------------ loading
    def _state(self, table: str, cur: duckdb.DuckDBPyConnection) -> TableState:
        """The in-memory state of ``table``, caught up with what is on disk."""
        folder = TableDir(self.root, table)
        with self._lock:
            state = self._states.get(table)
            if state is None:
                state = TableState(folder.meta())
                self._states[table] = state
            state.catch_up(cur, folder)
            return state

    def preload(self, table: str) -> Future[str]:
        """Load ``table`` into memory on a background thread; the future's result is the
        table's name. Calling it again while a load runs returns the same future."""
        if self._closed:
            raise ConfigError("the feature store is closed")
        TableDir(self.root, table).meta()  # NotFoundError now, not in the future
        with self._lock:
            running = self._loads.get(table)
            if running is not None and not running.done():
                return running
            future = self._pool.submit(self._load, table)
            self._loads[table] = future
            return future

    def _load(self, table: str) -> str:
        cur = cursor(self._con)
        try:
            state = self._state(table, cur)
            state.sorted_live()  # build the lookup index now, off the caller's thread
            log.debug("loaded feature table %s: %d rows, %d current", table, state.rows,
                      state.current)
            return table
        finally:
            cur.close()

    def _ready(self, table: str, cur: duckdb.DuckDBPyConnection) -> TableState:
        with self._lock:
            running = self._loads.get(table)
        if running is not None and not running.done():
            running.result()
        state = self._state(table, cur)
        if not state.rows:
            raise NotFoundError(f"feature table {table!r} has no versions")
        return state

    # ------------------------------------------------------------------ write
    def write(self, table: str, data: Any, key: str | Sequence[str], version_time: str, *,
              ingest_time: str | None = None, unit: str | None = None,
              null_keys: str = "fail") -> WriteResult:
        """Store ``data``'s rows as versions of ``table`` (created on first write).

        ``data`` is a DataFrame, Arrow table, DuckDB relation or Parquet/JSON/CSV path with the
        ``key`` column(s), the ``version_time`` column, optionally an ``ingest_time`` column
        (default: now), and the feature values. Times follow one rule (naive = UTC; epoch
        numbers need ``unit``). Duplicates and restatements are resolved as :mod:`.write`
        says. NULL keys are refused, or dropped and counted with ``null_keys="drop"``; NULL or
        unparseable times are refused; the columns must match the table's earlier writes.
        """
        keys, unit = _keys(key), check_unit(unit)
        folder = TableDir(self.root, table)
        cur = cursor(self._con)
        try:
            data = read_arrow(cur, data, what="features")
            batch = normalize(cur, table, data, keys, version_time, ingest_time, unit, null_keys)
            with folder.lock():
                existing = folder.meta() if folder.exists() else None
                check_meta(existing, batch.meta)
                folder.write_meta(batch.meta)
                state = self._state(table, cur)
                return self._commit(cur, folder, state, batch)
        finally:
            cur.close()

    def _commit(self, cur: duckdb.DuckDBPyConnection, folder: TableDir, state: TableState,
                batch: Any) -> WriteResult:
        seq = max(folder.writes(), default=0) + 1
        rows_tmp, sup_tmp = folder.tmp_file("w", seq), None
        # The file is written while DuckDB finds the key codes and the restated rows.
        writing = self._pool.submit(pq.write_table, batch.rows, rows_tmp, compression="lz4",
                                    use_dictionary=False)
        try:
            codes = state.assign_codes(cur, batch.groups, batch.group_keys)
            gone = superseded(cur, state, batch, codes)
            writing.result()
            if len(gone):
                sup_tmp = folder.tmp_file("s", seq)
                pq.write_table(state.pairs(gone, seq), sup_tmp)
            with self._lock:
                folder.publish(seq, rows_tmp, sup_tmp)
                state.apply(seq, batch.rows, codes, gone, batch.order)
        finally:
            if not writing.done():
                writing.exception()  # wait: never leave a file being written behind
            rows_tmp.unlink(missing_ok=True)
            if sup_tmp is not None:
                sup_tmp.unlink(missing_ok=True)
        restated = int((gone < state.rows - batch.rows.num_rows).sum())
        result = WriteResult(folder.name, seq, batch.rows_in, batch.rows.num_rows,
                             batch.duplicates, restated, len(gone) - restated,
                             batch.null_keys_dropped, state.current)
        log.info("%s", result)
        return result

    # ------------------------------------------------------------------ lookups
    def as_of(self, tables: str | Sequence[str], samples: Any,
              key: str | Sequence[str] | Mapping[str, Any] | None = None,
              time: str = "ts", *, known_at: Any = None, ttl: Any = None,
              unit: str | None = None, output: str = "pandas") -> Any:
        """Join each sample to the version of each table valid at its event time.

        ``tables``: a table name, ``"table:feature1,feature2"`` (a subset of its features) or a
        list of them. ``samples``: DataFrame, Arrow table, DuckDB relation or path. ``key``: the
        sample column(s) matching each table's key (a mapping per table; default: the table's
        own key names). ``time``: the samples' event-time column.

        The result has one row per sample, in input order: the sample's columns (its time —
        and a ``known_at`` column — as UTC-aware timestamps), each chosen feature (renamed
        ``<table>__<feature>`` on a name clash), ``<table>__version_time`` and
        ``<table>__ingest_time`` of the version joined: the latest with ``version_time <=
        time``, NULLs when there is none. ``ttl`` (one duration, or a mapping per table):
        versions older than ``time - ttl`` do not match. ``known_at`` (a timestamp, or the name
        of a samples column): known-time mode, versions ingested after it are invisible.
        ``output``: ``"pandas"``, ``"arrow"`` or ``"duckdb"`` (a relation on this store's
        connection). Notes on the times are in ``result.attrs["ultron"]`` (pandas) or the Arrow
        schema metadata.
        """
        if output not in lookup.OUTPUTS:
            raise ConfigError(f"output: {output!r} is not one of {', '.join(lookup.OUTPUTS)}")
        unit = check_unit(unit)
        cur = cursor(self._con)
        try:
            requests = self._requests(cur, tables, key, ttl)
            sample_keys = [c for r in requests for c in r.sample_key]
            s = lookup.prepare_samples(cur, samples, time, sample_keys, known_at, unit)
            known_col = s.notes["known_at"] if s.known is not None and isinstance(
                known_at, str) and s.notes["known_at"] == known_at else None
            names = lookup.output_names(requests, _columns(s))
            columns: list[tuple[str, pa.Array]] = []
            stats: dict[str, Any] = {}
            for req, cols in zip(requests, names, strict=True):
                idx, stats[req.name] = lookup.positions(cur, req, s)
                values = lookup.gather(req, idx)
                columns += [(out, values[src]) for src, out in cols]
            notes = {**s.notes, "tables": stats}
            return lookup.assemble(s, time, known_col, columns, notes, output, self._con)
        finally:
            cur.close()

    def _requests(self, cur: duckdb.DuckDBPyConnection, tables: str | Sequence[str],
                  key: Any, ttl: Any) -> list[lookup.Request]:
        refs = lookup.parse_refs(tables)
        for what, value in (("key", key), ("ttl", ttl)):
            stray = sorted(set(value) - {n for n, _ in refs}) if isinstance(value, Mapping) \
                else []
            if stray:
                raise ConfigError(f"{what}: {', '.join(map(repr, stray))} is not one of the "
                                  f"tables looked up ({', '.join(n for n, _ in refs)})")
        out = []
        for name, chosen in refs:
            state = self._ready(name, cur)
            meta = state.meta
            features = tuple(chosen) if chosen is not None else tuple(meta.features)
            unknown = [f for f in features if f not in meta.features]
            if unknown:
                raise ConfigError(f"feature table {name!r} has no feature "
                                  f"{', '.join(map(repr, unknown))} (features: "
                                  f"{', '.join(meta.features)})")
            sample_key = lookup.per_table(key, name, "key")
            sample_key = meta.key if sample_key is None else _keys(sample_key)
            if len(sample_key) != len(meta.key):
                raise ConfigError(f"feature table {name!r} is keyed by {', '.join(meta.key)}; "
                                  f"got {len(sample_key)} sample key column(s)")
            limit = lookup.per_table(ttl, name, "ttl")
            out.append(lookup.Request(state, features, tuple(sample_key), None if limit is None
                                      else parse_duration(limit, f"ttl of {name!r}")))
        return out

    def versions(self, table: str, key: Any = None, *, history: bool = False) -> Any:
        """The current versions of one entity (``key`` value, a tuple for compound keys),
        oldest first, with their ingest time; with no ``key``, of every entity. ``history``
        adds the superseded rows (what was known before a restatement) and a ``current``
        column."""
        cur = cursor(self._con)
        try:
            state = self._ready(table, cur)
        finally:
            cur.close()
        meta = state.meta
        rows = state.history().append_column("current", pa.array(state.live_mask()))
        if key is not None:
            values = list(key) if isinstance(key, (tuple, list)) else [key]
            if len(values) != len(meta.key):
                raise ConfigError(f"feature table {table!r} is keyed by "
                                  f"{', '.join(meta.key)}; give {len(meta.key)} key value(s)")
            for name, value in zip(meta.key, values, strict=True):
                column = rows.column(name)
                try:  # a key typed on a command line is text
                    wanted = pa.scalar(value).cast(column.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise ConfigError(f"feature table {table!r}: key {name!r} is "
                                      f"{column.type}, not {value!r}") from None
                rows = rows.filter(pc.equal(column, wanted))
        if not history:
            rows = rows.filter(rows.column("current")).drop_columns(["current"])
        vt = rows.column_names.index(meta.version_time)
        rows = rows.set_column(vt, meta.version_time, utc_arrow(rows.column(vt)))
        ing = rows.column_names.index(INGEST)
        rows = rows.set_column(ing, "ingest_time", utc_arrow(rows.column(ing)))
        order = [*meta.key, meta.version_time, "ingest_time"]
        return rows.sort_by([(c, "ascending") for c in order]).to_pandas()


def _columns(s: lookup.Samples) -> list[str]:
    return list(s.frame.columns) if s.frame is not None else list(s.table.column_names)
