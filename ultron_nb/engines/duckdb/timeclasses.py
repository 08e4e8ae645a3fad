"""How history stores its event times, and the SQL that turns each form into UTC.

Raw time values are classified per row: epoch numbers by magnitude (below 1e11 seconds, below
1e14 milliseconds, below 1e17 microseconds, else nanoseconds), date-time strings with or
without a UTC offset, typed timestamps with or without a time zone. :func:`conversion_sql`
converts each class to a naive UTC ``TIMESTAMP``; :func:`time_problems` reports mixed units and
zones (see :mod:`.sources` for the problem kinds).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ultron_nb.engines.duckdb.connection import temporal_kind, utc_timestamp

if TYPE_CHECKING:
    from ultron_nb.engines.duckdb.discovery import HourFile
    from ultron_nb.engines.duckdb.sources import FileProfile

NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE")
STRING_TYPES = ("VARCHAR", "JSON")

# Classification of raw time values (the patterns are constants of this module).
_NUM_RE = r"^-?[0-9]+(\.[0-9]+)?$"
_DT_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?$"
_DT_TZ_RE = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
             r" ?(Z|UTC|[+-][0-9]{2}(:?[0-9]{2})?)$")
ZONE_RE = r"(Z|UTC|[+-][0-9]{2}(:?[0-9]{2})?)$"

EPOCH_CLASSES = ("epoch_s", "epoch_ms", "epoch_us", "epoch_ns")
_UNIT_NAMES = {
    "epoch_s": "epoch seconds", "epoch_ms": "epoch milliseconds",
    "epoch_us": "epoch microseconds", "epoch_ns": "epoch nanoseconds",
    "string": "date-time strings", "string_tz": "date-time strings with a UTC offset",
    "timestamp": "typed timestamps", "timestamp_tz": "typed timestamps with time zone",
}


def time_category(duck_type: str) -> str:
    base = duck_type.upper()
    if temporal_kind(base):
        return "typed"
    if base in NUMERIC_TYPES or base.startswith("DECIMAL"):
        return "numeric"
    if base in STRING_TYPES:
        return "string"
    return "unsupported"


def typed_class(duck_type: str) -> str:
    return "timestamp_tz" if temporal_kind(duck_type) == "tz" else "timestamp"


# ----------------------------------------------------------------------------- SQL pieces
def _epoch_case(num: str) -> str:
    """Class of a numeric value by magnitude (see the module docstring)."""
    return (f"CASE WHEN abs({num}) < 1e11 THEN 'epoch_s' WHEN abs({num}) < 1e14 THEN 'epoch_ms' "
            f"WHEN abs({num}) < 1e17 THEN 'epoch_us' ELSE 'epoch_ns' END")


def _epoch_conv(cls: str, num: str, exact: str) -> str:
    """TIMESTAMP from an epoch number of class ``cls``; ``exact`` is the value as BIGINT."""
    if cls == "epoch_s":
        return f"make_timestamp(CAST(round({num} * 1000000) AS BIGINT))"
    if cls == "epoch_ms":
        return f"make_timestamp(CAST(round({num} * 1000) AS BIGINT))"
    if cls == "epoch_us":
        return f"make_timestamp({exact})"
    return f"make_timestamp({exact} // 1000)"


def class_expr(category: str, v: str) -> str:
    if category == "typed":
        return "'typed'"
    if category == "numeric":
        return f"CASE WHEN {v} IS NULL THEN NULL ELSE {_epoch_case(f'CAST({v} AS DOUBLE)')} END"
    s = f"trim(CAST({v} AS VARCHAR), ' \"')"
    return (
        f"CASE WHEN {v} IS NULL THEN NULL "
        f"WHEN regexp_full_match({s}, '{_NUM_RE}') THEN "
        f"{_epoch_case(f'TRY_CAST({s} AS DOUBLE)')} "
        f"WHEN regexp_full_match({s}, '{_DT_RE}') THEN 'string' "
        f"WHEN regexp_full_match({s}, '{_DT_TZ_RE}') THEN 'string_tz' "
        f"ELSE 'unparseable' END"
    )


def conv_for_class(category: str, cls: str, v: str, union_type: str) -> str:
    """TIMESTAMP (naive UTC) from the raw value ``v`` known to be of class ``cls``."""
    if category == "typed":
        return utc_timestamp(v, union_type)
    if category == "numeric":
        num = f"CAST({v} AS DOUBLE)"
        exact = f"CAST({v} AS BIGINT)" if not union_type.upper().startswith(
            ("FLOAT", "DOUBLE", "DECIMAL")) else f"CAST(round({v}) AS BIGINT)"
        return _epoch_conv(cls, num, exact)
    s = f"trim(CAST({v} AS VARCHAR), ' \"')"
    if cls in EPOCH_CLASSES:
        num = f"TRY_CAST({s} AS DOUBLE)"
        return _epoch_conv(cls, num, f"TRY_CAST({s} AS BIGINT)")
    if cls == "string":
        return f"TRY_CAST({s} AS TIMESTAMP)"
    if cls == "string_tz":
        return (f"timezone('UTC', TRY_CAST(regexp_replace({s}, ' ?UTC$', '+00:00') "
                "AS TIMESTAMPTZ))")
    return "CAST(NULL AS TIMESTAMP)"


def classes_for(category: str) -> tuple[str, ...]:
    if category == "typed":
        return ("typed",)
    if category == "numeric":
        return EPOCH_CLASSES
    return (*EPOCH_CLASSES, "string", "string_tz")


def conversion_sql(category: str, v: str, union_type: str, classes: Iterable[str]) -> str:
    """The event-time expression: one conversion, or a per-row CASE over several classes."""
    wanted = [c for c in classes_for(category) if c in set(classes)] or list(
        classes_for(category)[:1])
    if len(wanted) == 1:
        return conv_for_class(category, wanted[0], v, union_type)
    whens = " ".join(
        f"WHEN '{c}' THEN {conv_for_class(category, c, v, union_type)}" for c in wanted)
    return f"(CASE {class_expr(category, v)} {whens} END)"


def normalize_zone(zone: str | None) -> str | None:
    if zone is None:
        return None
    text = zone.strip()
    if text in ("Z", "UTC"):
        return "+00:00"
    sign, digits = text[0], text[1:].replace(":", "")
    digits = (digits + "00")[:4]
    return f"{sign}{digits[:2]}:{digits[2:]}"


def _unit(label: str) -> str:
    if label.startswith("string"):
        return "string"
    if label.startswith("timestamp"):
        return "timestamp"
    return label


def _zone(label: str) -> str | None:
    """``"naive"``, the offset of a ``string_tz`` label, ``"UTC"``, or None (epoch numbers)."""
    if label.startswith("string_tz"):
        return label[len("string_tz"):]
    if label == "timestamp_tz":
        return "UTC"
    return "naive" if label in ("string", "timestamp") else None


def time_problems(files: list[HourFile], profiles: dict[str, FileProfile],
                  classes: dict[str, dict[str, int]], category: str,
                  typed: dict[str, str], time: str, add: Any) -> set[str]:
    """Report mixed units and zones; return the classes the conversion must handle."""
    per_file: dict[str, dict[str, int]] = {}
    for f in files:
        found = dict(classes.get(f.path, {}))
        if category == "typed" and "typed" in found:
            found[typed[f.path]] = found.pop("typed")
        per_file[f.path] = {k: v for k, v in found.items() if v > 0}
    totals: dict[str, int] = defaultdict(int)
    for found in per_file.values():
        for label, n in found.items():
            totals[label] += n
    if not totals:
        return {"typed"} if category == "typed" else set()
    _mixed(files, per_file, totals, _unit, time, add, "mixed_time_units",
           lambda u, n: f"are {_UNIT_NAMES.get(u, u)}")
    _mixed(files, per_file, totals, _zone, time, add, "mixed_time_zones",
           lambda z, n: "have no time zone" if z == "naive" else f"have offset {z}")
    if category == "typed":
        return {"typed"}
    return {("string_tz" if label.startswith("string_tz") else label) for label in totals}


def _mixed(files: list[HourFile], per_file: dict[str, dict[str, int]],
           totals: dict[str, int], kind_of: Any, time: str, add: Any, problem: str,
           describe: Any) -> None:
    """Report every file's values whose kind (unit or zone) is not the most common one."""
    kinds: dict[str, int] = defaultdict(int)
    for label, n in totals.items():
        kind = kind_of(label)
        if kind is not None:
            kinds[kind] += n
    if len(kinds) < 2:
        return
    main = max(kinds, key=lambda k: (kinds[k], k))
    for f in files:
        for label, n in sorted(per_file[f.path].items()):
            kind = kind_of(label)
            if kind is not None and kind != main:
                add(problem, f"{n} value(s) {describe(kind, n)} while most ({kinds[main]}) "
                    f"{describe(main, kinds[main])}", file=f.path, column=time, rows=n)
