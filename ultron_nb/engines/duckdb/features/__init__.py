"""The embedded versioned feature store (see :mod:`.store`).

- :mod:`.layout`: a table on disk (metadata, one immutable Parquet file per write, the lock);
- :mod:`.write`: normalising a write, resolving duplicates and restatements;
- :mod:`.state`: a table in memory (every version, which are current, key codes);
- :mod:`.lookup`: point-in-time lookups (ASOF merge, TTL, known-time mode, gather);
- :mod:`.store`: :class:`DuckDBFeatureStore`, the facade.
"""

from ultron_nb.engines.duckdb.features.layout import TableMeta
from ultron_nb.engines.duckdb.features.store import DuckDBFeatureStore
from ultron_nb.engines.duckdb.features.write import WriteResult

__all__ = ["DuckDBFeatureStore", "TableMeta", "WriteResult"]
