"""The embedded versioned feature store: Parquet files, DuckDB ASOF lookups, async preload.

Layout under the store's root (``settings.home / "features"`` by default)::

    ROOT/<table>/_table.json          key columns, version-time column, columns and types
    ROOT/<table>/v-00000001.parquet   one file per write, sorted by key then version time
    ROOT/<table>/v-00000002.parquet

A row is one *version* of an entity's features: its key, its version time (the event time the
values became valid, naive UTC) and the values. When two writes hold the same (key, version
time) the later write wins, so re-running a feature job over a range replaces its versions.

Lookups (:meth:`DuckDBFeatureStore.as_of`) use DuckDB's ``ASOF LEFT JOIN`` on the key and
``sample_time >= version_time``: each sample gets the latest version at or before its event time
and never a later one. The table is first *preloaded*: read from Parquet into a DuckDB
in-memory table by a background thread (:meth:`~DuckDBFeatureStore.preload` returns the
future); ``as_of`` waits for it. A write makes the next lookup preload again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ultron_nb.engines.duckdb.checks import ts_expr
from ultron_nb.engines.duckdb.connection import (
    columns_of,
    connect,
    ident,
    register_input,
    release_input,
    require_columns,
)
from ultron_nb.errors import ConfigError, DataError, NotFoundError

log = logging.getLogger(__name__)

META = "_table.json"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_FILE = re.compile(r"^v-(\d{8})\.parquet$")


@dataclass(frozen=True)
class TableMeta:
    """What a feature table is keyed by and holds."""

    name: str
    key: tuple[str, ...]
    version_time: str
    columns: tuple[tuple[str, str], ...]

    @property
    def features(self) -> list[str]:
        return [c for c, _ in self.columns if c not in self.key and c != self.version_time]


@dataclass
class _Loaded:
    signature: tuple[str, ...]
    name: str
    future: Future[str]


def _keys(key: str | Sequence[str]) -> tuple[str, ...]:
    keys = (key,) if isinstance(key, str) else tuple(key)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ConfigError("key: give one column name or a list of column names")
    return keys


class DuckDBFeatureStore:
    """Versioned features in Parquet under ``root``, looked up with DuckDB ASOF joins.

    Thread-safe: each operation uses its own cursor on one in-memory database; preloads run on
    a small background pool. Close it (or use it as a context manager) to stop the pool.
    """

    def __init__(self, root: str | Path, *, threads: int | None = None):
        self.root = Path(root)
        self._con = connect(threads=threads)
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ultron-preload")
        self._loaded: dict[str, _Loaded] = {}
        self._closed = False

    # ------------------------------------------------------------------ housekeeping
    def __enter__(self) -> DuckDBFeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the preload pool and close the DuckDB database."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._con.close()

    def _table_dir(self, table: str) -> Path:
        if not isinstance(table, str) or not _NAME.match(table):
            raise ConfigError(f"feature table name {table!r}: use letters, digits and "
                              "underscores, not starting with a digit")
        return self.root / table

    def tables(self) -> list[str]:
        """The names of the feature tables in the store."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / META).is_file())

    def meta(self, table: str) -> TableMeta:
        """The key, version-time column and columns of ``table``."""
        path = self._table_dir(table) / META
        if not path.is_file():
            raise NotFoundError(f"feature table {table!r} does not exist in {self.root}")
        data = json.loads(path.read_text())
        return TableMeta(table, tuple(data["key"]), str(data["version_time"]),
                         tuple((str(c), str(t)) for c, t in data["columns"]))

    def _files(self, table: str) -> list[Path]:
        folder = self._table_dir(table)
        return sorted(p for p in folder.iterdir() if _FILE.match(p.name)) if folder.is_dir() \
            else []

    # ------------------------------------------------------------------ write
    def write(self, table: str, data: Any, key: str | Sequence[str], version_time: str) -> int:
        """Append versions to ``table`` (created on first write); return the rows written.

        ``data`` is a DataFrame, Arrow table, DuckDB relation or Parquet/JSON path with the
        ``key`` column(s), the ``version_time`` column (a timestamp, a time-zone-aware
        timestamp — converted to UTC — or a date-time string) and the feature values. NULL keys
        or version times and duplicate (key, version time) pairs are refused with
        :class:`DataError`; the columns must match the table's earlier writes.
        """
        keys = _keys(key)
        folder = self._table_dir(table)
        cur = self._con.cursor()
        view: str | None = None
        try:
            view = register_input(cur, data, what="features")
            cols = columns_of(cur, view)
            require_columns(cols, [*keys, version_time], f"feature table {table!r} input")
            types = dict(cols)
            vt = ts_expr(ident(version_time), types[version_time],
                         f"feature table {table!r}: column {version_time!r}")
            kq = [ident(k) for k in keys]
            rest = [c for c, _ in cols if c not in keys and c != version_time]
            select = ", ".join([*kq, f"{vt} AS {ident(version_time)}",
                                *(ident(c) for c in rest)])
            cur.execute(f"CREATE OR REPLACE TEMP VIEW __ultron_w AS SELECT {select} FROM {view}")
            new_cols = tuple(columns_of(cur, "__ultron_w"))
            self._check_meta(table, keys, version_time, new_cols)
            null_filter = " OR ".join(f"{k} IS NULL" for k in kq)
            total, null_keys, null_times = cur.execute(
                f"SELECT count(*), count(*) FILTER (WHERE {null_filter}), "
                f"count(*) FILTER (WHERE {ident(version_time)} IS NULL) FROM __ultron_w"
            ).fetchall()[0]
            if null_keys:
                raise DataError(f"feature table {table!r}: {null_keys} row(s) with a NULL key "
                                f"({', '.join(keys)}); nothing written")
            if null_times:
                raise DataError(f"feature table {table!r}: {null_times} row(s) without a "
                                f"version time (column {version_time!r}, or it does not "
                                "parse); nothing written")
            dup = cur.execute(
                f"SELECT count(*) FROM (SELECT {', '.join(kq)}, {ident(version_time)} FROM "
                "__ultron_w GROUP BY ALL HAVING count(*) > 1)").fetchall()[0][0]
            if dup:
                raise DataError(f"feature table {table!r}: {dup} (key, {version_time}) pair(s) "
                                "appear more than once in one write; nothing written")
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".v-{uuid.uuid4().hex}.parquet"
            try:
                cur.execute(
                    f"COPY (SELECT * FROM __ultron_w ORDER BY {', '.join(kq)}, "
                    f"{ident(version_time)}) TO ? (FORMAT parquet)", [str(tmp)])
                with self._lock:
                    self._publish(folder, tmp)
                    self._write_meta(folder, table, keys, version_time, new_cols)
            finally:
                tmp.unlink(missing_ok=True)
            log.info("feature table %s: wrote %d versions", table, total)
            return int(total)
        finally:
            if view is not None:
                cur.execute("DROP VIEW IF EXISTS __ultron_w")
                release_input(cur, view)
            cur.close()

    def _check_meta(self, table: str, keys: tuple[str, ...], version_time: str,
                    cols: tuple[tuple[str, str], ...]) -> None:
        try:
            meta = self.meta(table)
        except NotFoundError:
            return
        if meta.key != keys or meta.version_time != version_time:
            raise DataError(f"feature table {table!r} is keyed by {', '.join(meta.key)} with "
                            f"version time {meta.version_time!r}; this write uses "
                            f"{', '.join(keys)} and {version_time!r}")
        old, new = dict(meta.columns), dict(cols)
        for name, typ in cols:
            if name not in old:
                raise DataError(f"feature table {table!r}: column {name!r} is new (the table "
                                f"has {', '.join(old)})")
            if old[name] != typ:
                raise DataError(f"feature table {table!r}: column {name!r} is {typ}, the "
                                f"table has {old[name]}")
        missing = [c for c in old if c not in new]
        if missing:
            raise DataError(f"feature table {table!r}: column(s) {', '.join(missing)} missing "
                            "from this write")

    def _publish(self, folder: Path, tmp: Path) -> Path:
        """Give ``tmp`` the next free version-file name without ever replacing one."""
        existing = [int(m.group(1)) for p in folder.iterdir() if (m := _FILE.match(p.name))]
        seq = max(existing, default=0) + 1
        while True:
            target = folder / f"v-{seq:08d}.parquet"
            try:
                os.link(tmp, target)  # fails if another writer took the name
                return target
            except FileExistsError:
                seq += 1

    def _write_meta(self, folder: Path, table: str, keys: tuple[str, ...], version_time: str,
                    cols: tuple[tuple[str, str], ...]) -> None:
        path = folder / META
        if path.is_file():
            return
        body = {"table": table, "key": list(keys), "version_time": version_time,
                "columns": [list(c) for c in cols]}
        tmp = folder / f".{META}.tmp"
        tmp.write_text(json.dumps(body, indent=2))
        os.replace(tmp, path)

    # ------------------------------------------------------------------ preload
    def preload(self, table: str) -> Future[str]:
        """Load ``table`` into an in-memory DuckDB table on a background thread.

        Returns a future whose result is the in-memory table's name. Calling it again for an
        unchanged table returns the same future; after a write (or a failed load) it loads
        again.
        """
        if self._closed:
            raise ConfigError("the feature store is closed")
        meta = self.meta(table)
        with self._lock:
            files = self._files(table)
            signature = tuple(str(f) for f in files)
            loaded = self._loaded.get(table)
            failed = loaded is not None and loaded.future.done() and (
                loaded.future.exception() is not None)
            if loaded is not None and loaded.signature == signature and not failed:
                return loaded.future
            name = f"__ultron_ft_{table}_{uuid.uuid4().hex[:8]}"
            future = self._pool.submit(self._load, meta, list(signature), name,
                                       loaded.name if loaded else None)
            self._loaded[table] = _Loaded(signature, name, future)
            return future

    def _load(self, meta: TableMeta, files: list[str], name: str, old: str | None) -> str:
        cur = self._con.cursor()
        try:
            kq = ", ".join(ident(k) for k in meta.key)
            vt = ident(meta.version_time)
            cols = ", ".join(ident(c) for c, _ in meta.columns)
            if len(files) == 1:
                sql = f"SELECT {cols} FROM read_parquet(?)"
            else:  # the latest write of a (key, version time) wins
                sql = (f"SELECT {cols} FROM read_parquet(?, filename = '__ultron_f') QUALIFY "
                       f"row_number() OVER (PARTITION BY {kq}, {vt} ORDER BY __ultron_f DESC)"
                       " = 1")
            cur.execute(f"CREATE OR REPLACE TABLE {ident(name)} AS {sql}", [files])
            if old is not None:
                cur.execute(f"DROP TABLE IF EXISTS {ident(old)}")
            log.debug("preloaded feature table %s from %d file(s)", meta.name, len(files))
            return name
        finally:
            cur.close()

    def _ready(self, table: str) -> tuple[TableMeta, str]:
        meta = self.meta(table)
        if not self._files(table):
            raise NotFoundError(f"feature table {table!r} has no versions")
        return meta, self.preload(table).result()

    # ------------------------------------------------------------------ lookups
    def as_of(self, table: str, samples: Any, key: str | Sequence[str], time: str, *,
              output: str = "pandas", keep_order: bool = False) -> Any:
        """Join each sample to the version of ``table`` valid at its event time.

        For every row of ``samples`` (DataFrame, Arrow table, relation or path) the result has
        the sample's columns, the table's feature columns (renamed ``<table>__<column>`` if a
        sample column has the same name) and ``<table>__version_time``: the latest version
        with ``version_time <= samples[time]`` for the same key, or NULLs when there is none.
        ``output`` is ``"pandas"`` (default) or ``"arrow"``. Rows come back in no particular
        order unless ``keep_order`` is set.
        """
        if output not in ("pandas", "arrow"):
            raise ConfigError(f"output: {output!r} is not 'pandas' or 'arrow'")
        keys = _keys(key)
        meta, loaded = self._ready(table)
        if len(keys) != len(meta.key):
            raise ConfigError(f"feature table {table!r} is keyed by {', '.join(meta.key)}; "
                              f"got {len(keys)} sample key column(s)")
        cur = self._con.cursor()
        view: str | None = None
        try:
            if keep_order:
                samples = _with_row_number(samples)
            view = register_input(cur, samples, what="samples")
            cols = columns_of(cur, view)
            require_columns(cols, [*keys, time], "samples")
            types = dict(cols)
            t = ts_expr(f"s.{ident(time)}", types[time], f"samples column {time!r}")
            names = {c for c, _ in cols}
            feats = []
            for c in meta.features:
                alias = c if c not in names else f"{table}__{c}"
                feats.append(f"f.{ident(c)} AS {ident(alias)}")
            feats.append(f"f.{ident(meta.version_time)} AS {ident(table + '__version_time')}")
            on = " AND ".join(f"s.{ident(sk)} = f.{ident(fk)}"
                              for sk, fk in zip(keys, meta.key, strict=True))
            sample_cols = "s.* EXCLUDE (__ultron_rn)" if keep_order else "s.*"
            sql = (f"SELECT {sample_cols}, {', '.join(feats)} FROM {view} AS s "
                   f"ASOF LEFT JOIN {ident(loaded)} AS f ON {on} AND {t} >= "
                   f"f.{ident(meta.version_time)}")
            if keep_order:
                sql += " ORDER BY s.__ultron_rn"
            rel = cur.sql(sql)
            return rel.df() if output == "pandas" else rel.to_arrow_table()
        except duckdb.Error as exc:
            raise DataError(f"as_of {table!r}: {str(exc).splitlines()[0]}") from None
        finally:
            if view is not None:
                release_input(cur, view)
            cur.close()

    def versions(self, table: str, key: Any = None) -> Any:
        """The versions of one entity (``key`` value, a tuple for compound keys), oldest
        first; with no ``key``, every version of the table ordered by key and time."""
        meta, loaded = self._ready(table)
        cur = self._con.cursor()
        try:
            order = ", ".join([*(ident(k) for k in meta.key), ident(meta.version_time)])
            if key is None:
                return cur.execute(f"SELECT * FROM {ident(loaded)} ORDER BY {order}").df()
            values = list(key) if isinstance(key, (tuple, list)) else [key]
            if len(values) != len(meta.key):
                raise ConfigError(f"feature table {table!r} is keyed by "
                                  f"{', '.join(meta.key)}; give {len(meta.key)} key value(s)")
            where = " AND ".join(f"{ident(k)} = ?" for k in meta.key)
            return cur.execute(f"SELECT * FROM {ident(loaded)} WHERE {where} ORDER BY {order}",
                               values).df()
        finally:
            cur.close()


def _with_row_number(samples: Any) -> Any:
    """``samples`` with an ``__ultron_rn`` column numbering its rows (for ``keep_order``)."""
    import numpy as np

    if isinstance(samples, (str, Path)):
        raise ConfigError("keep_order needs in-memory samples (a DataFrame or Arrow table)")
    if isinstance(samples, duckdb.DuckDBPyRelation):
        samples = samples.to_arrow_table()
    if hasattr(samples, "append_column"):  # pyarrow.Table
        import pyarrow as pa

        return samples.append_column("__ultron_rn", pa.array(np.arange(samples.num_rows)))
    if hasattr(samples, "assign"):  # pandas.DataFrame
        return samples.assign(__ultron_rn=np.arange(len(samples)))
    raise ConfigError(f"keep_order: cannot number the rows of a {type(samples).__name__}")
