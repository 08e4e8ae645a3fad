"""Local topics as a user feeds them: appending rows.

:func:`append_rows` writes rows — a pandas DataFrame, or a CSV, Parquet or JSON-lines file — as the
next segment of each partition of a local topic (see :mod:`ultron_nb.engines.topics` for the
layout). The rows are checked against the topic's declared columns (one line naming the first
column that is missing or unknown), converted to the declared types (the time column parsed,
timestamps written as Flink's JSON format reads them), and spread over the partitions:

* by the hash of the topic's ``--key`` column (or ``partition_by``) — DuckDB's ``hash(key) %
  N``, the partitioner of ``backtrack prepare``, so a key always lands in the same partition;
* round robin when the topic has no key, starting at the partition with the fewest segments;
* all into one partition with ``partition=N``.

Each partition's rows are sorted by the time column (stably) and written as one segment,
atomically: a running job reads it whole, in order after the partition's earlier segments.
A partition that receives nothing holds the job's watermark back until it does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultron_nb.engines.topics import MANIFEST, LocalTopic, partition_name
from ultron_nb.errors import ConfigError, DataError
from ultron_nb.flow.types import is_local_zoned

if TYPE_CHECKING:
    import pandas as pd

    from ultron_nb.flow import Node

_INTEGER = {"TINYINT", "SMALLINT", "INT", "INTEGER", "BIGINT"}
_FLOAT = {"FLOAT", "REAL", "DOUBLE", "DECIMAL", "NUMERIC", "DEC"}
_STRING = {"STRING", "VARCHAR", "CHAR"}


@dataclass
class AppendResult:
    """What :func:`append_rows` wrote: one segment per partition that got rows."""

    topic: str
    path: Path
    segments: list[tuple[int, Path, int]] = field(default_factory=list)  # partition, file, rows

    @property
    def rows(self) -> int:
        return sum(n for _, _, n in self.segments)

    def table(self) -> Any:
        from ultron_nb.views import Table

        return Table(["partition", "segment", "rows"],
                     [[partition_name(k), seg.name, n] for k, seg, n in self.segments],
                     title=f"appended {self.rows} rows to topic {self.topic} ({self.path})")

    def __str__(self) -> str:
        return str(self.table())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return str(self.table()._repr_html_())


@dataclass(frozen=True)
class TopicTarget:
    """Where an append goes: a topic's path, declared columns, time column, key."""

    label: str
    path: Path
    columns: list[tuple[str, str]]
    time_column: str | None
    key: str | None
    partitions: int


def directory_target(folder: Path) -> TopicTarget | None:
    """The topic at directory ``folder``, or None when it holds no topic."""
    if not (folder / MANIFEST).is_file():
        return None
    topic = LocalTopic.open(folder)
    return TopicTarget(str(folder), folder, topic.columns, topic.time_column,
                       topic.extra.get("key"), topic.partitions)


def node_target(name: str, path: Path, node: Node) -> TopicTarget:
    """Topic node ``node`` whose data lives at ``path`` (the topic created if new)."""
    columns = [(c.name, c.type) for c in node.columns]
    if (path / MANIFEST).is_file():
        partitions = LocalTopic.open(path).partitions
    else:
        partitions = int(node.option_dict.get("partitions", "1"))
        LocalTopic(path, partitions, columns, node.time_column).create()
    return TopicTarget(name, path, columns, node.time_column, node.key, partitions)


def _read(data: Any) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data, "the frame"
    path = Path(data).expanduser()
    if not path.is_file():
        raise DataError(f"append: {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            # As text: the declared types decide (ids keep their leading zeros).
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str,
                               keep_default_na=False, na_values=[""]), path.name
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path), path.name
        if suffix in (".jsonl", ".ndjson", ".json"):
            return pd.read_json(path, lines=True, dtype=False), path.name
    except (ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"append: {path}: cannot read it: {first}") from None
    raise DataError(f"append: {path}: unknown file type {suffix or '(none)'!r} (CSV, Parquet "
                    "or JSON lines)")


def _base_type(type_text: str) -> str:
    text = re.sub(r"\s*\*(ROWTIME|PROCTIME)\*\s*$", "", type_text.upper())
    text = text.replace("NOT NULL", "").strip()
    if text.startswith("TIMESTAMP"):
        return "TIMESTAMP_LTZ" if is_local_zoned(text) else "TIMESTAMP"
    return re.split(r"[\s(]", text, maxsplit=1)[0]


def _bad(where: str, column: str, what: str, values: pd.Series) -> DataError:
    return DataError(f"append {where}: column {column!r} {what} (first: {values.iloc[0]!r})")


def _timestamps(s: pd.Series, column: str, where: str, ltz: bool) -> pd.Series:
    import pandas as pd

    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        parsed = pd.to_datetime(s, unit="ms", errors="coerce", utc=True)  # epoch milliseconds
    elif isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(s):
        parsed = pd.to_datetime(s, utc=True)
    else:
        text = s.astype("string").str.strip()
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    bad = s.notna() & parsed.isna()
    if bad.any():
        raise _bad(where, column, "has values that are not timestamps", s[bad])
    naive = parsed.dt.tz_convert(None)
    out = naive.dt.strftime("%Y-%m-%d %H:%M:%S.%f").str.slice(0, 23)
    if ltz:
        out = out + "Z"
    return out.astype(object).where(naive.notna(), None)


def _convert(s: pd.Series, column: str, type_text: str, where: str) -> pd.Series:
    """``s`` as values of Flink type ``type_text`` for the JSON format (None for null)."""
    import pandas as pd

    base = _base_type(type_text)
    if base in ("TIMESTAMP", "TIMESTAMP_LTZ"):
        out = _timestamps(s, column, where, base == "TIMESTAMP_LTZ")
    elif base in _INTEGER or base in _FLOAT:
        num = pd.to_numeric(s, errors="coerce")
        bad = s.notna() & num.isna()
        if bad.any():
            raise _bad(where, column, f"has values that are not numbers ({type_text})", s[bad])
        if base in _INTEGER:
            frac = num.notna() & (num != num.round())
            if frac.any():
                raise _bad(where, column, f"has values that are not integers ({type_text})",
                           s[frac])
            out = num.astype("Int64").astype(object)
        else:
            out = num.astype(float).astype(object)
    elif base == "BOOLEAN":
        text = s.astype("string").str.strip().str.lower()
        mapped = text.map({"true": True, "false": False, "1": True, "0": False,
                           "t": True, "f": False})
        bad = s.notna() & mapped.isna()
        if bad.any():
            raise _bad(where, column, "has values that are not booleans", s[bad])
        out = mapped.astype(object)
    elif base == "DATE":
        parsed = pd.to_datetime(s, errors="coerce")
        bad = s.notna() & parsed.isna()
        if bad.any():
            raise _bad(where, column, "has values that are not dates", s[bad])
        out = parsed.dt.strftime("%Y-%m-%d").astype(object)
    elif base in _STRING:
        out = s.astype(object).map(lambda v: v if isinstance(v, str) else str(v))
    else:
        out = s.astype(object)
    out = out.where(s.notna(), None)
    if "NOT NULL" in type_text.upper() and s.isna().any():
        raise DataError(f"append {where}: column {column!r} is NOT NULL but has "
                        f"{int(s.isna().sum())} empty values")
    return out


def _check_columns(frame: pd.DataFrame, target: TopicTarget, where: str) -> None:
    declared = [n for n, _ in target.columns]
    have = [str(c) for c in frame.columns]
    for name in declared:
        if name not in have:
            raise DataError(f"append {where}: column {name!r} of topic {target.label} is "
                            f"missing (the data has {', '.join(have) or 'no columns'})")
    for name in have:
        if name not in declared:
            raise DataError(f"append {where}: column {name!r} is not a column of topic "
                            f"{target.label} ({', '.join(declared)})")


def _partitions(frame: pd.DataFrame, target: TopicTarget, topic: LocalTopic,
                key: str | None, partition: int | None, where: str) -> Any:
    """The partition of every row (a numpy array); ``frame`` holds converted values."""
    import numpy as np

    n = target.partitions
    if partition is not None:
        if not 0 <= partition < n:
            raise ConfigError(f"append --partition {partition}: topic {target.label} has "
                              f"partitions 0..{n - 1}")
        return np.full(len(frame), partition)
    if key is not None:
        if key not in frame.columns:
            raise ConfigError(f"append --partition-by {key!r}: not a column of topic "
                              f"{target.label}")
        values = frame[key]
        if values.isna().any():
            raise DataError(f"append {where}: column {key!r} (the key) is empty in "
                            f"{int(values.isna().sum())} rows; give them a key or "
                            "--partition N")
        if _base_type(dict(target.columns)[key]) in _INTEGER:
            values = values.astype("Int64")  # hashed as BIGINT, as DuckDB reads numbers
        import duckdb

        con = duckdb.connect()
        try:
            con.register("keys", values.to_frame("k"))
            sql = f"SELECT CAST(hash(k) % {int(n)} AS INTEGER) AS p FROM keys"
            return con.execute(sql).fetchnumpy()["p"]
        finally:
            con.close()
    counts = [len(topic.segments(k)) for k in range(n)]
    start = counts.index(min(counts))
    return (np.arange(len(frame)) + start) % n


def append_rows(target: TopicTarget, data: Any, *, partition_by: str | None = None,
                partition: int | None = None) -> AppendResult:
    """Append ``data`` (a DataFrame, or a CSV / Parquet / JSON-lines file) to ``target``.

    See the module docstring for checks, types and partitioning. Raises
    :class:`DataError` (naming the file and column) before anything is written.
    """
    frame, where = _read(data)
    where = f"{target.label} from {where}"
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    _check_columns(frame, target, where)
    types = dict(target.columns)
    import pandas as pd

    rows = pd.DataFrame({name: _convert(frame[name], name, types[name], where)
                         for name, _ in target.columns})
    time_column = target.time_column
    if time_column and rows[time_column].isna().any():
        raise DataError(f"append {where}: the time column {time_column!r} is empty in "
                        f"{int(rows[time_column].isna().sum())} rows")
    topic = LocalTopic.open(target.path)
    parts = _partitions(rows, target, topic, partition_by or target.key, partition, where)
    if time_column:  # each segment in event-time order (stable: ties keep the input order)
        order = rows[time_column].astype(str).argsort(kind="stable").to_numpy()
        rows, parts = rows.iloc[order], parts[order]
    result = AppendResult(target.label, target.path)
    for k in sorted({int(p) for p in parts}):
        records = rows[parts == k].to_dict("records")
        segment = topic.append(k, records)
        if segment is not None:
            result.segments.append((k, segment, len(records)))
    return result
