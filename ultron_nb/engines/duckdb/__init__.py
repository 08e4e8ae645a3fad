"""The DuckDB engine: connections, backtracking preparation, quick checks, feature store.

Importing this package is cheap; the modules under it import :mod:`duckdb` at their top, so
import them only when they are used (the services do this inside their functions):

- :mod:`.connection`: :func:`~.connection.connect` (threads from ``os.cpu_count()``, UTC) and
  the helpers that turn paths, DataFrames, Arrow tables and local topics into relations;
- :mod:`.sources`: discovery and bad-input detection for ``date=/hour=`` history;
- :mod:`.prepare`: history into ordered logical partitions (the local topic layout);
- :mod:`.checks`: order, leakage, replay-vs-live and version consistency checks;
- :mod:`.features`: the embedded versioned feature store with ASOF lookups;
- :mod:`.report`: the result types (no DuckDB import).
"""
