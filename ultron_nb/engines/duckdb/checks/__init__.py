"""Quick checks on DuckDB: order, leakage, replay-vs-live consistency, version consistency.

Every check takes paths (a local topic directory, a Parquet or JSON-lines file or glob) or
in-memory data (pandas DataFrame, Arrow table, DuckDB relation) and returns a
:class:`~ultron_nb.engines.duckdb.report.CheckResult`: ``problems`` has one row per problem
(examples are capped by ``limit``; the counts in ``summary`` are complete), ``summary`` one row
of counts.

Times are compared as naive UTC timestamps (:mod:`ultron_nb.engines.duckdb.times`):
``TIMESTAMPTZ`` values are converted to UTC and date-time strings (as in JSON lines) parsed.

- :mod:`.order`: :func:`check_order`;
- :mod:`.leakage`: :func:`check_leakage`;
- :mod:`.consistency`: :func:`check_consistency`;
- :mod:`.versions`: :func:`check_version_consistency`.
"""

from ultron_nb.engines.duckdb.checks.common import ts_expr
from ultron_nb.engines.duckdb.checks.consistency import check_consistency
from ultron_nb.engines.duckdb.checks.leakage import check_leakage
from ultron_nb.engines.duckdb.checks.order import check_order
from ultron_nb.engines.duckdb.checks.versions import check_version_consistency

__all__ = ["check_consistency", "check_leakage", "check_order", "check_version_consistency",
           "ts_expr"]
