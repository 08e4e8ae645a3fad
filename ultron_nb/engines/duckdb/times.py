"""One rule for times, whatever form they come in.

Inside DuckDB every time is a naive ``TIMESTAMP`` (microseconds) holding UTC:

- a ``TIMESTAMPTZ`` (a time-zone-aware pandas or Arrow column) is converted to UTC;
- a naive ``TIMESTAMP`` (or ``DATE``) is taken as UTC;
- a date-time string is parsed; one with an offset (``+02:00``, ``Z``) is converted to UTC,
  one without is taken as UTC;
- an epoch number needs its unit (``s``, ``ms``, ``us`` or ``ns``): its magnitude alone does not
  say it, so a number without a unit is refused.

What comes out (feature lookups, version listings) is a time-zone-aware UTC timestamp
(``timestamp[us, tz=UTC]`` in Arrow, ``datetime64[us, UTC]`` in pandas), so a sample time and the
version time it joined always have the same type and compare without surprises.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from ultron_nb.engines.duckdb.connection import temporal_kind
from ultron_nb.errors import ConfigError, DataError

UNITS = ("s", "ms", "us", "ns")
_FACTOR = {"s": 1_000_000, "ms": 1_000, "us": 1}
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL")
_FLOATING = ("FLOAT", "DOUBLE", "DECIMAL")


def check_unit(unit: str | None) -> str | None:
    """``unit`` if it is one of :data:`UNITS` (or None)."""
    if unit is not None and unit not in UNITS:
        raise ConfigError(f"unit: {unit!r} is not one of {', '.join(UNITS)}")
    return unit


def is_naive(duck_type: str) -> bool:
    """True for columns whose values carry no zone and are therefore taken as UTC."""
    upper = duck_type.upper()
    return temporal_kind(upper) == "naive" or upper in ("VARCHAR", "JSON")


def epoch_sql(column: str, unit: str, duck_type: str) -> str:
    """A naive UTC ``TIMESTAMP`` from an epoch number ``column`` in ``unit``."""
    floating = duck_type.upper().startswith(_FLOATING)
    if unit == "ns":
        exact = f"CAST(round({column} / 1000) AS BIGINT)" if floating else \
            f"(CAST({column} AS BIGINT) // 1000)"
        return f"make_timestamp({exact})"
    factor = _FACTOR[unit]
    if floating:
        return f"make_timestamp(CAST(round({column} * {factor}) AS BIGINT))"
    return f"make_timestamp(CAST({column} AS BIGINT) * {factor})"


def utc_sql(column: str, duck_type: str, what: str, unit: str | None = None) -> str:
    """A naive UTC ``TIMESTAMP`` expression for ``column`` (already quoted) of ``duck_type``.

    Raises :class:`DataError` naming ``what`` for a type that holds no time, and for epoch
    numbers without a ``unit``.
    """
    upper = duck_type.upper()
    kind = temporal_kind(upper)
    if kind == "tz":
        return f"timezone('UTC', CAST({column} AS TIMESTAMPTZ))"
    if kind == "naive":
        return f"CAST({column} AS TIMESTAMP)"
    if upper in ("VARCHAR", "JSON"):
        text = f"trim(CAST({column} AS VARCHAR), '\"')"
        return f"timezone('UTC', TRY_CAST({text} AS TIMESTAMPTZ))"
    if upper.startswith(_NUMERIC):
        if unit is None:
            raise DataError(f"{what}: column has type {duck_type}: epoch numbers need a unit "
                            "(unit='s', 'ms', 'us' or 'ns'; --unit on the command line)")
        return epoch_sql(column, check_unit(unit) or unit, upper)
    raise DataError(f"{what}: column has type {duck_type}, not a timestamp, a date-time string "
                    "or an epoch number")


def to_utc_naive(value: Any, what: str) -> datetime:
    """A naive UTC datetime from a datetime, date, pandas Timestamp or ISO string."""
    if value is None:
        raise ConfigError(f"{what}: a time is required")
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(f"{what}: cannot parse {value!r} as a time "
                              "(use YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS])") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def utc_arrow(array: Any) -> Any:
    """A naive UTC Arrow timestamp array as ``timestamp[us, tz=UTC]`` (same instants)."""
    import pyarrow as pa

    return array.cast(pa.timestamp("us", tz="UTC"))


def parse_duration(value: Any, what: str) -> Any:
    """A ``datetime.timedelta`` from a timedelta, pandas Timedelta or text such as ``'2h'``."""
    from datetime import timedelta

    if isinstance(value, timedelta):
        return value
    try:
        import pandas as pd

        parsed = pd.Timedelta(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: cannot parse {value!r} as a duration "
                          "(e.g. '2h', '30min', '7 days')") from None
    if pd.isna(parsed) or parsed <= pd.Timedelta(0):
        raise ConfigError(f"{what}: {value!r} is not a positive duration")
    return parsed.to_pytimedelta()
