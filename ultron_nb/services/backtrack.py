"""Feature backtracking: replayable history and the quick checks around it.

History in an HDFS-style layout (``SOURCE/date=YYYY-MM-DD/hour=HH/``, unordered inside) is
re-organised by DuckDB into Kafka-like logical partitions ordered by event time, in the local
topic layout the real-time Flink node reads, so the *same* node replays it::

    from ultron_nb.services import backtrack

    report = backtrack.check_source("hist/", key="user_id", time="ts",
                                    start="2024-01-01", end="2024-01-08")
    manifest = backtrack.prepare("hist/", key="user_id", time="ts", partitions=8,
                                 start="2024-01-01", end="2024-01-08", out="topics/hist")
    backtrack.check_order(manifest.path).raise_for_errors()

History may live in HDFS or an object store: ``hdfs://``, ``webhdfs://`` and ``s3://`` sources
are read through fsspec (``storage_options`` are handed to the filesystem; credentials are
never logged or stored). :func:`plan` tells what a preparation would read — partitions found
and pruned, files, bytes, rows, memory — before any work.

Quick checks return a :class:`CheckResult` (``problems``: one row per problem; ``summary``):
:func:`check_order`, :func:`check_leakage`, :func:`check_consistency`,
:func:`check_version_consistency`. Bad input (missing or empty hours, schema drift, mixed time
units or zones, null keys ...) is reported by file and column; see
:mod:`ultron_nb.engines.duckdb.sources` for the list and :mod:`ultron_nb.engines.duckdb.prepare`
for the partitioner, ordering and atomicity guarantees.

DuckDB is imported only when one of these functions runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultron_nb.config import Settings, load_settings
from ultron_nb.engines.duckdb.report import CheckResult, Manifest, PartitionStats, SourceFile

if TYPE_CHECKING:
    from ultron_nb.engines.duckdb.plan import PreparePlan

__all__ = [
    "CheckResult",
    "Manifest",
    "PartitionStats",
    "PreparePlan",
    "SourceFile",
    "check_consistency",
    "check_leakage",
    "check_order",
    "check_source",
    "check_version_consistency",
    "plan",
    "prepare",
    "read_manifest",
]


def prepare(source: str | Path, *, key: str | Sequence[str], time: str, partitions: int,
            start: Any, end: Any, out: str | Path | None = None, fmt: str | None = None,
            settings: Settings | None = None, allow: Iterable[str] = (),
            null_keys: str = "fail", threads: int | None = None,
            memory_limit: str | None = None,
            storage_options: Mapping[str, Any] | None = None) -> Manifest:
    """Hash-partition ``source`` by ``key`` and order each partition by event time ``time``.

    Reads the hours of ``[start, end)`` (Parquet or JSON lines, ``fmt`` detected from the file
    names), checks them (:func:`check_source`; any error raises
    :class:`~ultron_nb.errors.DataError` naming file and column, unless its kind is in
    ``allow``), then writes ``partitions`` ordered partitions in the local topic layout at
    ``out`` (default ``settings.home / "topics" / <source dir name>``) with a manifest.
    Idempotent and safe to re-run: the output is built aside and swapped in.
    ``null_keys="route"`` writes null-key rows to ``out/_null_keys.jsonl`` instead of failing.
    ``source`` may be ``hdfs://``, ``webhdfs://`` or ``s3://`` (``storage_options`` go to its
    fsspec filesystem).
    """
    from ultron_nb.engines.duckdb.prepare import prepare_topic

    if out is None:
        name = Path(str(source).rstrip("/")).name or "history"
        out = (settings or load_settings()).home / "topics" / name
    return prepare_topic(source, key=key, time=time, partitions=partitions, start=start,
                         end=end, out=out, fmt=fmt, allow=allow, null_keys=null_keys,
                         threads=threads, memory_limit=memory_limit,
                         storage_options=storage_options)


def plan(source: str | Path, *, start: Any, end: Any, partitions: int,
         fmt: str | None = None, storage_options: Mapping[str, Any] | None = None,
         memory_limit: str | None = None) -> PreparePlan:
    """What :func:`prepare` would read: hour partitions found, in range, pruned and missing,
    files, bytes, rows and a memory estimate — from listings and Parquet footers only."""
    from ultron_nb.engines.duckdb.connection import connect
    from ultron_nb.engines.duckdb.plan import plan_prepare

    con = connect(memory_limit=memory_limit)
    try:
        return plan_prepare(con, source, start=start, end=end, partitions=partitions, fmt=fmt,
                            storage_options=storage_options)
    finally:
        con.close()


def check_source(source: str | Path, *, key: str | Sequence[str], time: str, start: Any,
                 end: Any, fmt: str | None = None, allow: Iterable[str] = (),
                 null_keys: str = "fail",
                 storage_options: Mapping[str, Any] | None = None) -> CheckResult:
    """Check the history of ``[start, end)`` without writing anything.

    ``problems`` lists missing or empty hours, schema drift, missing key/time columns, mixed
    time units or zones, unparseable or null times, null keys and out-of-range rows, each with
    its file and column; ``details`` has one row per file (rows, time classes, time range).
    """
    from ultron_nb.engines.duckdb.connection import connect
    from ultron_nb.engines.duckdb.prepare import normalize_key
    from ultron_nb.engines.duckdb.sources import inspect_source

    con = connect()
    try:
        found = inspect_source(con, source, key=normalize_key(key), time=time, start=start,
                               end=end, fmt=fmt, allow=allow, null_keys=null_keys,
                               storage_options=storage_options)
        return found.report
    finally:
        con.close()


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of a topic written by :func:`prepare`."""
    from ultron_nb.engines.duckdb.prepare import read_manifest as _read

    return _read(path)


def check_order(topic: Any, *, time: str | None = None, partition: str | None = None,
                limit: int = 100) -> CheckResult:
    """Every logical partition is non-decreasing in event time.

    ``topic`` is a local topic directory, a file or glob (one partition per file) or a
    DataFrame (``partition`` names its partition column). Problems name the partition, the
    offset within it, the segment file and line, and the previous and current times.
    """
    from ultron_nb.engines.duckdb.checks import check_order as _check

    return _check(topic, time=time, partition=partition, limit=limit)


def check_leakage(samples: Any, feature_time: str | Sequence[str], sample_time: str, *,
                  key: str | Sequence[str] | None = None, limit: int = 20) -> CheckResult:
    """Samples whose joined feature version is later than their event time (counts and
    examples)."""
    from ultron_nb.engines.duckdb.checks import check_leakage as _check

    return _check(samples, feature_time, sample_time, key=key, limit=limit)


def check_consistency(replayed: Any, live: Any, *, key: str | Sequence[str], time: str,
                      window: tuple[Any, Any] | None = None,
                      values: Sequence[str] | None = None, tolerance: float = 0.0,
                      limit: int = 20) -> CheckResult:
    """Replayed output vs the live output over their overlapping event-time window: equal, or
    counts and examples of rows missing on either side and of differing values."""
    from ultron_nb.engines.duckdb.checks import check_consistency as _check

    return _check(replayed, live, key=key, time=time, window=window, values=values,
                  tolerance=tolerance, limit=limit)


def check_version_consistency(feature_output: Any, samples: Any, *, key: str | Sequence[str],
                              sample_time: str, version: str,
                              feature_time: str = "version_time",
                              values: Sequence[str] | None = None, latest: bool = True,
                              limit: int = 20) -> CheckResult:
    """The feature version each sample read exists in the feature node's output with the same
    values (and, with ``latest``, is the version valid at the sample's event time)."""
    from ultron_nb.engines.duckdb.checks import check_version_consistency as _check

    return _check(feature_output, samples, key=key, sample_time=sample_time, version=version,
                  feature_time=feature_time, values=values, latest=latest, limit=limit)
