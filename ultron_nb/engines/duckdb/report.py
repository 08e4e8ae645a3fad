"""Result types of backtracking: check results and the prepare manifest.

This module imports neither DuckDB nor pandas at import time, so services can re-export its
types cheaply. A :class:`CheckResult` holds pandas DataFrames: ``problems`` (one row per
problem), ``summary`` (one row) and optional ``details`` (per file, per partition ...).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ultron_nb.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

ERROR = "error"
WARNING = "warning"
INFO = "info"

#: Columns every ``problems`` frame starts with.
PROBLEM_COLUMNS = ("kind", "severity", "detail")


def problems_frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """A problems DataFrame with :data:`PROBLEM_COLUMNS` first, then ``columns``."""
    import pandas as pd

    ordered = list(PROBLEM_COLUMNS) + [c for c in columns if c not in PROBLEM_COLUMNS]
    frame = pd.DataFrame(list(rows), columns=ordered)
    return frame.reset_index(drop=True)


@dataclass
class CheckResult:
    """The outcome of one quick check.

    ``problems`` has one row per problem (``kind``, ``severity``, ``detail`` and columns that
    locate it: file, column, partition, offset, key ...); ``summary`` has one row of counts;
    ``details`` is an optional supporting table (for instance one row per source file).
    ``ok`` is true when no problem has severity ``error``.
    """

    check: str
    problems: pd.DataFrame
    summary: pd.DataFrame
    details: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        if self.problems.empty:
            return True
        return not bool((self.problems["severity"] == ERROR).any())

    @property
    def failed(self) -> bool:
        """True when the check found an error (the ``ultron`` command then exits with 1)."""
        return not self.ok

    @property
    def errors(self) -> pd.DataFrame:
        """The problems of severity ``error``."""
        return self.problems[self.problems["severity"] == ERROR].reset_index(drop=True)

    def message(self, limit: int = 5) -> str:
        """A one-line description of the errors (at most ``limit`` of them)."""
        errs = self.errors
        if errs.empty:
            return f"{self.check}: ok"
        parts = []
        for row in errs.head(limit).to_dict("records"):
            where = ", ".join(
                f"{k}={row[k]}" for k in ("file", "column", "partition", "offset")
                if k in row and row[k] is not None and str(row[k]) not in ("", "nan", "None")
            )
            parts.append(f"{row['kind']}: {row['detail']}" + (f" ({where})" if where else ""))
        more = f"; and {len(errs) - limit} more" if len(errs) > limit else ""
        return f"{self.check}: {len(errs)} problem(s): " + "; ".join(parts) + more

    def raise_for_errors(self) -> CheckResult:
        """Raise :class:`~ultron_nb.errors.DataError` if there is any error; else return self."""
        if not self.ok:
            raise DataError(self.message())
        return self

    def __bool__(self) -> bool:
        return self.ok

    def _repr_html_(self) -> str:
        status = "ok" if self.ok else f"{len(self.errors)} error(s)"
        parts = [f"<h4>{html.escape(self.check)}: {html.escape(status)}</h4>",
                 self.summary.to_html(index=False)]
        if not self.problems.empty:
            parts.append(self.problems.head(50).to_html(index=False))
        return "\n".join(parts)

    def __repr__(self) -> str:
        return f"CheckResult({self.message()})"


@dataclass(frozen=True)
class PartitionStats:
    """One logical partition of a prepared topic."""

    partition: int
    rows: int
    min_time: str | None
    max_time: str | None
    segments: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceFile:
    """One input file and what it contributed."""

    path: str
    date: str
    hour: int
    rows: int
    written: int


@dataclass(frozen=True)
class Manifest:
    """What :func:`~ultron_nb.services.backtrack.prepare` wrote (also in ``_topic.json``).

    Partition ``k`` holds the rows whose key hashes to ``k`` (``partitioner``), ordered by
    event time, then key, then input position (so the output is byte-identical across
    runs). Times are UTC, formatted ``YYYY-MM-DD HH:MM:SS.sss``.
    """

    path: str
    source: str
    fmt: str
    key: tuple[str, ...]
    time: str
    start: str
    end: str
    partitions: tuple[PartitionStats, ...]
    files: tuple[SourceFile, ...]
    columns: tuple[tuple[str, str], ...]
    partitioner: str
    rows: int
    out_of_range: int = 0
    null_keys: int = 0
    null_keys_path: str | None = None
    dropped_null_time: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)
    duckdb_version: str = ""

    @property
    def counts(self) -> list[int]:
        """Rows per partition, in partition order."""
        return [p.rows for p in self.partitions]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored under ``extra`` in the topic manifest."""
        return {
            "prepared_by": "ultron_nb.backtrack",
            "source": self.source,
            "format": self.fmt,
            "key": list(self.key),
            "time": self.time,
            "from": self.start,
            "to": self.end,
            "partitioner": self.partitioner,
            "duckdb_version": self.duckdb_version,
            "rows": self.rows,
            "out_of_range": self.out_of_range,
            "null_keys": self.null_keys,
            "null_keys_path": self.null_keys_path,
            "dropped_null_time": self.dropped_null_time,
            "warnings": list(self.warnings),
            "partition_stats": [
                {"partition": p.partition, "rows": p.rows, "min_time": p.min_time,
                 "max_time": p.max_time, "segments": list(p.segments)}
                for p in self.partitions
            ],
            "source_files": [
                {"path": f.path, "date": f.date, "hour": f.hour, "rows": f.rows,
                 "written": f.written}
                for f in self.files
            ],
        }

    @classmethod
    def from_topic(cls, path: str, columns: Iterable[Sequence[str]],
                   extra: Mapping[str, Any]) -> Manifest:
        """Rebuild a manifest from a prepared topic's ``_topic.json`` contents."""
        if extra.get("prepared_by") != "ultron_nb.backtrack":
            raise DataError(f"{path}: not a topic written by backtrack prepare")
        return cls(
            path=path,
            source=str(extra["source"]),
            fmt=str(extra["format"]),
            key=tuple(extra["key"]),
            time=str(extra["time"]),
            start=str(extra["from"]),
            end=str(extra["to"]),
            partitions=tuple(
                PartitionStats(int(p["partition"]), int(p["rows"]), p["min_time"],
                               p["max_time"], tuple(p.get("segments", ())))
                for p in extra["partition_stats"]
            ),
            files=tuple(
                SourceFile(f["path"], f["date"], int(f["hour"]), int(f["rows"]),
                           int(f["written"]))
                for f in extra["source_files"]
            ),
            columns=tuple((str(c[0]), str(c[1])) for c in columns),
            partitioner=str(extra["partitioner"]),
            rows=int(extra["rows"]),
            out_of_range=int(extra.get("out_of_range", 0)),
            null_keys=int(extra.get("null_keys", 0)),
            null_keys_path=extra.get("null_keys_path"),
            dropped_null_time=int(extra.get("dropped_null_time", 0)),
            warnings=tuple(extra.get("warnings", ())),
            duckdb_version=str(extra.get("duckdb_version", "")),
        )

    def __str__(self) -> str:
        extra = [f"{n} {what}" for n, what in ((self.null_keys, "null-key row(s)"),
                                              (self.out_of_range, "row(s) out of range"),
                                              (self.dropped_null_time, "row(s) without a time"))
                 if n]
        return (f"{self.path}: {self.rows} rows in {len(self.partitions)} partitions from "
                f"{len(self.files)} files of {self.source}"
                + (f" ({', '.join(extra)})" if extra else ""))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{p.partition}</td><td>{p.rows}</td><td>{html.escape(str(p.min_time))}"
            f"</td><td>{html.escape(str(p.max_time))}</td></tr>"
            for p in self.partitions
        )
        return (
            f"<h4>{html.escape(self.path)}: {self.rows} rows in {len(self.partitions)} "
            f"partitions from {len(self.files)} files</h4>"
            "<table><tr><th>partition</th><th>rows</th><th>min time</th><th>max time</th></tr>"
            f"{rows}</table>"
        )
