"""What ``backtrack prepare`` would read, before it reads anything.

:func:`plan_prepare` lists the hour partitions (``date=/hour=``) found under the source, keeps
those of ``[from, to)`` and reports partitions found, pruned and missing, the files and bytes
selected, the rows (from Parquet footers; JSON lines are not counted without a scan) and an
estimate of the memory the preparation needs, so that an accidental full scan shows before it
runs. Nothing but directory listings and Parquet footers is read.

The memory estimate: the staged rows (Parquet: the uncompressed size of their column chunks;
JSON lines: their size on disk) plus, per partition written, one partition's share of them to
sort (DuckDB spills to its temporary directory beyond its ``memory_limit``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb

from ultron_nb.engines.duckdb.discovery import discover, source_root
from ultron_nb.engines.duckdb.remote import attach, mask, sizes
from ultron_nb.engines.duckdb.sources import hours_between, select_files, time_range

OVERHEAD = 64 * 1024 * 1024


@dataclass(frozen=True)
class PreparePlan:
    """The outcome of :func:`plan_prepare` (all sizes in bytes)."""

    source: str
    fmt: str
    start: str
    end: str
    partitions_found: int
    partitions_in_range: int
    partitions_pruned: int
    partitions_missing: tuple[str, ...]
    files_found: int
    files: int
    bytes_found: int
    bytes: int
    rows: int | None
    staged_bytes: int
    memory_estimate: int
    memory_limit: str
    output_partitions: int

    @property
    def spills(self) -> bool:
        """True when the estimate exceeds DuckDB's memory limit."""
        limit = _parse_size(self.memory_limit)
        return limit is not None and self.memory_estimate > limit

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "partitions_missing": list(self.partitions_missing),
                "spills": self.spills}

    def lines(self) -> list[str]:
        rows = "unknown (JSON lines are counted by the scan)" if self.rows is None else \
            f"{self.rows:,}"
        missing = ", ".join(self.partitions_missing[:5]) + (
            f" and {len(self.partitions_missing) - 5} more"
            if len(self.partitions_missing) > 5 else "")
        return [
            f"plan: prepare {self.source} ({self.fmt}) [{self.start}, {self.end}) into "
            f"{self.output_partitions} partitions",
            f"hour partitions: {self.partitions_found} found, {self.partitions_in_range} in "
            f"range, {self.partitions_pruned} pruned, {len(self.partitions_missing)} missing"
            + (f" ({missing})" if missing else ""),
            f"files: {self.files} of {self.files_found}; bytes: {_size(self.bytes)} of "
            f"{_size(self.bytes_found)}; rows: {rows}",
            f"memory: about {_size(self.memory_estimate)} (staged {_size(self.staged_bytes)}); "
            f"DuckDB limit {self.memory_limit}"
            + ("; it will spill to disk" if self.spills else ""),
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(str(self)) + "</pre>"


def plan_prepare(con: duckdb.DuckDBPyConnection, source: str | Path, *, start: Any, end: Any,
                 partitions: int, fmt: str | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> PreparePlan:
    """The plan of preparing ``source`` over ``[start, end)`` (see the module docstring)."""
    t0, t1 = time_range(start, end)
    root = source_root(source)
    attach(con, root, storage_options)
    all_files, fmt = discover(con, root, fmt)
    hours = hours_between(t0, t1)
    files = select_files(all_files, hours)
    found = {(f.date, f.hour) for f in all_files}
    in_range = {(f.date, f.hour) for f in files}
    missing = tuple(f"date={h:%Y-%m-%d}/hour={h.hour:02d}" for h in hours
                    if (h.strftime("%Y-%m-%d"), h.hour) not in in_range)
    size = sizes(root, [f.path for f in all_files], storage_options) if all_files else {}
    selected = sum(size[f.path] for f in files)
    rows, staged = _footers(con, [f.path for f in files]) if fmt == "parquet" and files else (
        None if files else 0, selected)
    estimate = int(staged * (1 + 2 / max(partitions, 1))) + OVERHEAD
    limit = str(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
    return PreparePlan(
        source=mask(root), fmt=fmt, start=str(t0), end=str(t1), partitions_found=len(found),
        partitions_in_range=len(in_range), partitions_pruned=len(found - in_range),
        partitions_missing=missing, files_found=len(all_files), files=len(files),
        bytes_found=sum(size.values()), bytes=selected, rows=rows, staged_bytes=staged,
        memory_estimate=estimate, memory_limit=limit, output_partitions=partitions)


def _footers(con: duckdb.DuckDBPyConnection, paths: list[str]) -> tuple[int, int]:
    """(rows, uncompressed bytes) of Parquet files, from their footers only."""
    rows = con.execute("SELECT sum(num_rows) FROM parquet_file_metadata(?)",
                       [paths]).fetchall()[0][0]
    raw = con.execute("SELECT sum(total_uncompressed_size) FROM parquet_metadata(?)",
                      [paths]).fetchall()[0][0]
    return int(rows or 0), int(raw or 0)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _parse_size(text: str) -> int | None:
    parts = text.strip().split()
    if len(parts) != 2:
        return None
    units = {"B": 1, "KB": 1000, "KIB": 1024, "MB": 1000**2, "MIB": 1024**2, "GB": 1000**3,
             "GIB": 1024**3, "TB": 1000**4, "TIB": 1024**4}
    try:
        return int(float(parts[0]) * units[parts[1].upper()])
    except (KeyError, ValueError):
        return None
