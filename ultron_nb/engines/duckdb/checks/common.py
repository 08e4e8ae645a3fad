"""What the checks share: time expressions, key lists, summary frames, time text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ultron_nb.engines.duckdb.times import utc_sql
from ultron_nb.errors import ConfigError

NUMERIC_PREFIX = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                  "USMALLINT", "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL")


def ts_expr(column: str, duck_type: str, what: str) -> str:
    """A naive UTC ``TIMESTAMP`` expression for ``column`` (already quoted) of ``duck_type``
    (the one time rule of :mod:`ultron_nb.engines.duckdb.times`; epoch numbers are refused:
    their unit is ambiguous)."""
    return utc_sql(column, duck_type, what)


def keys_of(key: str | Sequence[str]) -> list[str]:
    keys = [key] if isinstance(key, str) else list(key)
    if not keys:
        raise ConfigError("key: at least one key column is required")
    return keys


def summary_frame(**values: Any) -> Any:
    import pandas as pd

    return pd.DataFrame([values])


def iso(value: Any) -> str | None:
    if value is None:
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
        return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (TypeError, ValueError):
        return str(value)
