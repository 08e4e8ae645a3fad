"""The order check: every logical partition non-decreasing in event time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from ultron_nb.engines.duckdb.checks.common import iso, summary_frame, ts_expr
from ultron_nb.engines.duckdb.connection import (
    columns_of,
    connect,
    ident,
    register_input,
    require_columns,
)
from ultron_nb.engines.duckdb.report import ERROR, CheckResult, problems_frame
from ultron_nb.errors import ConfigError, DataError


def check_order(data: Any, *, time: str | None = None, partition: str | None = None,
                limit: int = 100, con: duckdb.DuckDBPyConnection | None = None) -> CheckResult:
    """Every logical partition must be non-decreasing in event time.

    ``data`` is a local topic directory (partitions and time column from its manifest), a
    file or glob (each file is one partition, rows in file order), or a DataFrame / Arrow table
    (rows in order; ``partition`` names the partition column, else the whole table is one).
    Problems: ``out_of_order`` (partition, offset within the partition, segment file and line,
    previous and current time), ``null_time`` and ``bad_time``.
    """
    own = con is None
    con = con or connect()
    try:
        streams = list(_order_streams(con, data, time, partition))
        problems: list[dict[str, Any]] = []
        details = []
        total_bad = total_rows = total_null = 0
        for label, pieces in streams:
            result = _order_partition(label, pieces, limit - len(problems))
            problems.extend(result["problems"])
            total_bad += result["out_of_order"]
            total_null += result["null_time"]
            total_rows += result["rows"]
            details.append({k: result[k] for k in ("partition", "rows", "out_of_order",
                                                   "null_time", "min_time", "max_time")})
        import pandas as pd

        frame = problems_frame(problems, ["partition", "offset", "file", "line",
                                          "previous_time", "time"])
        return CheckResult(
            check="order",
            problems=frame,
            summary=summary_frame(partitions=len(streams), rows=total_rows, out_of_order=total_bad,
                             null_time=total_null, ok=total_bad == 0 and total_null == 0),
            details=pd.DataFrame(details, columns=["partition", "rows", "out_of_order",
                                                   "null_time", "min_time", "max_time"]),
        )
    finally:
        if own:
            con.close()


def _order_streams(con: duckdb.DuckDBPyConnection, data: Any, time: str | None,
                   partition: str | None) -> Any:
    """Yield (partition label, [(file or None, numpy datetime64 array), ...]) in order."""
    if isinstance(data, (str, Path)) and Path(data).is_dir() and (Path(data) / "_topic.json"
                                                                   ).is_file():
        from ultron_nb.engines.topics import LocalTopic

        topic = LocalTopic.open(data)
        time = time or topic.time_column
        if not time:
            raise ConfigError(f"{data}: the topic has no time column; pass time=")
        for k in range(topic.partitions):
            yield k, [(str(seg), _read_times(con, str(seg), time)) for seg in topic.segments(k)]
        return
    if isinstance(data, (str, Path)):
        if not time:
            raise ConfigError("time: name the event-time column")
        text = str(data)
        files = [str(r[0]) for r in con.execute("SELECT file FROM glob(?) ORDER BY file",
                                                [text]).fetchall()]
        if not files:
            raise DataError(f"{text}: no such file")
        for f in files:
            yield f, [(f, _read_times(con, f, time))]
        return
    if not time:
        raise ConfigError("time: name the event-time column")
    view = register_input(con, data, what="order")
    cols = columns_of(con, view)
    require_columns(cols, [time] + ([partition] if partition else []), "check_order input")
    expr = ts_expr(ident(time), dict(cols)[time], f"column {time!r}")
    if partition is None:
        times = con.sql(f"SELECT {expr} AS t FROM {view}").fetchnumpy()["t"]
        yield "all", [(None, _as_datetime64(times))]
        return
    got = con.sql(f"SELECT {ident(partition)} AS p, {expr} AS t FROM {view}").fetchnumpy()
    import numpy as np
    import pandas as pd

    parts = pd.Series(got["p"])
    times = _as_datetime64(got["t"])
    for value in pd.unique(parts):
        mask = (parts == value).to_numpy() if not pd.isna(value) else parts.isna().to_numpy()
        yield value, [(None, times[np.nonzero(mask)[0]])]


def _as_datetime64(values: Any) -> Any:
    import numpy as np

    arr = np.asarray(values)
    if hasattr(values, "mask"):
        arr = np.ma.filled(values.astype("datetime64[us]"), np.datetime64("NaT"))
    return arr.astype("datetime64[us]")


def _read_times(con: duckdb.DuckDBPyConnection, path: str, time: str) -> Any:
    """The event times of one file, in file order (insertion order is preserved)."""
    from ultron_nb.engines.duckdb.connection import detect_format

    fmt = detect_format(path) or "json"
    if fmt == "parquet":
        typ = str(con.execute(f"DESCRIBE SELECT {ident(time)} FROM read_parquet(?)",
                              [path]).fetchall()[0][1])
        raw = con.execute(f"SELECT {ts_expr(ident(time), typ, path)} AS t "
                          f"FROM read_parquet(?)", [path]).fetchnumpy()["t"]
        return _as_datetime64(raw)
    got = con.execute(
        "SELECT TRY_CAST(trim(raw, '\"') AS TIMESTAMP) AS t, "
        "raw IS NOT NULL AND TRY_CAST(trim(raw, '\"') AS TIMESTAMP) IS NULL AS bad "
        "FROM read_json(?, format = 'newline_delimited', columns = ?) AS r(raw)",
        [path, {time: "VARCHAR"}],
    ).fetchnumpy()
    import numpy as np

    bad = np.ma.filled(got["bad"], False) if hasattr(got["bad"], "mask") else got["bad"]
    if bad.any():
        first = int(np.nonzero(bad)[0][0])
        example = con.execute(
            "SELECT raw FROM read_json(?, format = 'newline_delimited', columns = ?) AS r(raw) "
            "LIMIT 1 OFFSET ?", [path, {time: "VARCHAR"}, first]).fetchall()[0][0]
        raise DataError(f"{path}: {int(bad.sum())} value(s) of column {time!r} are not "
                        f"timestamps, first at line {first + 1}: {example!r}")
    return _as_datetime64(got["t"])


def _order_partition(label: Any, pieces: list[tuple[str | None, Any]], room: int
                     ) -> dict[str, Any]:
    import numpy as np

    arrays = [arr for _, arr in pieces]
    times = np.concatenate(arrays) if arrays else np.array([], dtype="datetime64[us]")
    starts = np.cumsum([0] + [len(a) for a in arrays])
    nat = np.isnat(times)
    valid_idx = np.nonzero(~nat)[0]
    valid = times[valid_idx]
    drops = np.nonzero(valid[1:] < valid[:-1])[0] + 1 if len(valid) > 1 else np.array([], int)
    problems = []

    def locate(offset: int) -> tuple[str | None, int]:
        seg = int(np.searchsorted(starts, offset, side="right") - 1)
        return pieces[seg][0], offset - int(starts[seg]) + 1

    for i in drops[: max(room, 0)]:
        offset = int(valid_idx[i])
        prev = int(valid_idx[i - 1])
        file, line = locate(offset)
        problems.append({
            "kind": "out_of_order", "severity": ERROR,
            "detail": f"time goes back from {iso(times[prev])} to {iso(times[offset])}",
            "partition": label, "offset": offset, "file": file, "line": line,
            "previous_time": iso(times[prev]), "time": iso(times[offset]),
        })
    null_count = int(nat.sum())
    if null_count and len(problems) < max(room, 0):
        offset = int(np.nonzero(nat)[0][0])
        file, line = locate(offset)
        problems.append({
            "kind": "null_time", "severity": ERROR,
            "detail": f"{null_count} row(s) without an event time, first at offset {offset}",
            "partition": label, "offset": offset, "file": file, "line": line,
            "previous_time": None, "time": None,
        })
    return {
        "partition": label, "rows": len(times), "out_of_order": len(drops),
        "null_time": null_count, "problems": problems,
        "min_time": iso(valid.min()) if len(valid) else None,
        "max_time": iso(valid.max()) if len(valid) else None,
    }
