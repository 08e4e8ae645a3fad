"""Versioned features and point-in-time lookups.

A feature table holds *versions*: rows keyed by entity with a version time (the event time the
values became valid) and an ingest time (when they were learnt). Sample generation looks features
up *as of* each sample's event time, so a sample never sees a version later than its event time
("feature crossing"); in known-time mode it also never sees a version learnt after its known-at
time (a late backfill)::

    from ultron_nb.services.features import open_feature_store

    with open_feature_store() as store:          # .ultron/features, DuckDB + Parquet
        store.write("user_stats", stats_df, "user_id", "window_end", ingest_time="created")
        store.preload("user_stats")              # background load, as the seed describes
        joined = store.as_of(["user_stats", "item_stats:ctr"], samples_df, time="ts",
                             key={"user_stats": "user_id", "item_stats": "item_id"},
                             ttl={"user_stats": "7d"}, known_at="ts")

Duplicate versions are resolved at write time (the latest ingest wins), restatements are kept
as new versions of what was known, and the result has one row per sample in input order; see
:mod:`ultron_nb.engines.duckdb.features` for the rules and :mod:`ultron_nb.engines.duckdb.times`
for the one time-zone rule.

:class:`FeatureStore` is the small interface other stores (HBase, Redis ...) can implement; the
embedded default is :class:`~ultron_nb.engines.duckdb.features.DuckDBFeatureStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ultron_nb.config import Settings, load_settings

if TYPE_CHECKING:
    from ultron_nb.engines.duckdb.features import DuckDBFeatureStore

__all__ = ["FeatureStore", "list_tables", "lookup", "open_feature_store", "versions",
           "write_features"]


@runtime_checkable
class FeatureStore(Protocol):
    """What sample generation needs from a versioned feature store."""

    def write(self, table: str, data: Any, key: str | Sequence[str], version_time: str, *,
              ingest_time: str | None = None, unit: str | None = None,
              null_keys: str = "fail") -> Any:
        """Store versions (rows keyed by ``key`` with their ``version_time`` and, optionally,
        ``ingest_time``); return what was stored."""
        ...

    def as_of(self, tables: str | Sequence[str], samples: Any, key: Any = None,
              time: str = "ts", *, known_at: Any = None, ttl: Any = None,
              unit: str | None = None, output: str = "pandas") -> Any:
        """One row per sample, in input order, joined to each table's latest version with
        ``version_time <= samples[time]`` (and, with ``known_at``, ingested by then)."""
        ...

    def versions(self, table: str, key: Any = None, *, history: bool = False) -> Any:
        """The versions of one entity (or of every entity), oldest first."""
        ...

    def preload(self, table: str) -> Future[Any]:
        """Start loading an offline table for fast lookups; ``as_of`` waits for it."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...


def open_feature_store(settings: Settings | None = None, *, root: str | Path | None = None,
                       threads: int | None = None) -> DuckDBFeatureStore:
    """The embedded feature store under ``settings.home / "features"`` (or ``root``)."""
    from ultron_nb.engines.duckdb.features import DuckDBFeatureStore

    if root is None:
        root = (settings or load_settings()).home / "features"
    return DuckDBFeatureStore(Path(root), threads=threads)


# ---------------------------------------------------------------------- faces' helpers
def _store(settings: Settings | None, root: str | Path | None) -> DuckDBFeatureStore:
    return open_feature_store(settings, root=root)


def write_features(settings: Settings | None, table: str, source: Any, *,
                   key: str | Sequence[str], version_time: str,
                   ingest_time: str | None = None, unit: str | None = None,
                   null_keys: str = "fail", root: str | Path | None = None) -> Any:
    """Write ``source`` (a path or in-memory data) into ``table``; the write's summary."""
    with _store(settings, root) as store:
        return store.write(table, source, key, version_time, ingest_time=ingest_time,
                           unit=unit, null_keys=null_keys)


def lookup(settings: Settings | None, tables: str | Sequence[str], samples: Any, *,
           time: str, key: Any = None, known_at: Any = None, ttl: Any = None,
           unit: str | None = None, out: str | Path | None = None,
           root: str | Path | None = None) -> Any:
    """``as_of`` into a DataFrame, or into the file ``out`` (Parquet, CSV or JSON lines by
    its extension; then a one-line summary is returned)."""
    from ultron_nb.engines.duckdb.connection import connect, detect_format
    from ultron_nb.errors import ConfigError
    from ultron_nb.views import Message

    fmt = None if out is None else detect_format(str(out))
    if out is not None and fmt is None:
        raise ConfigError(f"--out {out}: use a .parquet, .csv or .jsonl name")
    with _store(settings, root) as store:
        result = store.as_of(tables, samples, key, time, known_at=known_at, ttl=ttl, unit=unit,
                             output="pandas" if out is None else "arrow")
    if out is None:
        return result
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    con = connect()
    try:
        con.register("__ultron_out", result)
        options = {"parquet": "FORMAT parquet", "csv": "FORMAT csv, HEADER true",
                   "json": "FORMAT json"}[fmt]
        con.execute(f"COPY __ultron_out TO ? ({options})", [str(target)])
    finally:
        con.close()
    return Message(f"wrote {result.num_rows} row(s) (one per sample) to {target}")


def list_tables(settings: Settings | None, root: str | Path | None = None) -> Any:
    """The feature tables: key, version time, features."""
    from ultron_nb.views import Table

    with _store(settings, root) as store:
        rows = [[m.name, ", ".join(m.key), m.version_time, ", ".join(m.features)]
                for m in (store.meta(t) for t in store.tables())]
    return Table(["table", "key", "version time", "features"], rows)


def versions(settings: Settings | None, table: str, key: Any = None, *,
             history: bool = False, root: str | Path | None = None) -> Any:
    """The versions of one entity or of every entity (a DataFrame)."""
    with _store(settings, root) as store:
        return store.versions(table, key, history=history)
