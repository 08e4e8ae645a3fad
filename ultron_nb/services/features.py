"""Versioned features and point-in-time lookups.

A feature table holds *versions*: rows keyed by entity with a version time (the event time the
values became valid). Sample generation looks features up *as of* each sample's event time, so a
sample never sees a version later than its event time ("feature crossing")::

    from ultron_nb.services.features import open_feature_store

    with open_feature_store() as store:          # .ultron/features, DuckDB + Parquet
        store.write("user_stats", stats_df, "user_id", "window_end")
        store.preload("user_stats")              # background load, as the seed describes
        joined = store.as_of("user_stats", samples_df, "user_id", "ts")

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

__all__ = ["FeatureStore", "open_feature_store"]


@runtime_checkable
class FeatureStore(Protocol):
    """What sample generation needs from a versioned feature store."""

    def write(self, table: str, data: Any, key: str | Sequence[str], version_time: str) -> int:
        """Append versions (rows keyed by ``key`` with their ``version_time``); return rows."""
        ...

    def as_of(self, table: str, samples: Any, key: str | Sequence[str], time: str) -> Any:
        """Each sample joined to the latest version with ``version_time <= samples[time]``."""
        ...

    def versions(self, table: str, key: Any = None) -> Any:
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
