"""DuckDB nodes: a query over the flow's tables, run by the scheduler like a Python node.

A DuckDB node's body is one ``SELECT`` over the tables it reads: local topics, datasets, the
output of Flink nodes (with the rows of the files Flink is still writing, so a run fired by
a watermark sees every row up to it) and of other DuckDB nodes. :class:`DuckDBRunner` is the
scheduler's runner for the ``duckdb`` kind: each run is a runner process with the guarantees
of a Python node's (the trigger claimed once, a ``jobs`` row, status events, a log under
``<home>/logs/<experiment>/``), whose child process calls :func:`execute`.

Parameters: ``${name}`` is replaced by the node's parameter ``name`` before the query is read
(as in Flink nodes); ``$name`` is a value DuckDB binds: a node parameter (a string), and for a
run fired by a watermark boundary ``$window_start`` / ``$window_end`` (naive UTC timestamps).

Output: ``<home>/topics/<instance>/`` — ``data.<ext>`` replaced by each run, or one
``window-<start>.<ext>`` per boundary window (a re-run of a window replaces its file). The
format is the node's ``--option format=`` (``parquet`` by default; ``json`` when a Flink node
reads the output, as the Flink wheel has no Parquet format). After a run the instance's
recorded output gains the result's columns (as Flink types) and row count.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultron_nb.engines.duckdb.connection import detect_format, duckdb_type
from ultron_nb.engines.duckdb.query import (
    FORMATS,
    TableFiles,
    check_query,
    flink_type,
    read_table,
    run_query,
)
from ultron_nb.engines.flink.ddl import committed_name
from ultron_nb.engines.topics import MANIFEST, LocalTopic
from ultron_nb.errors import ConfigError, DataError
from ultron_nb.flow import Node
from ultron_nb.flow.sqltext import substitute
from ultron_nb.services.experiments import JOB_FILE, output_files, read_output_file
from ultron_nb.services.scheduler import NodeContext, NodeTarget, PythonRunner
from ultron_nb.store import experiments as repo
from ultron_nb.store import open_database

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def output_format(node: Node) -> str:
    """The node's output format (``--option format=``; Parquet by default)."""
    fmt = node.option_dict.get("format", "parquet").lower()
    if fmt not in FORMATS:
        raise ConfigError(f"duckdb node {node.name!r}: --option format={fmt} is not one of "
                          f"{', '.join(FORMATS)}")
    return fmt


def planned_output(folder: Path, node: Node) -> dict[str, Any]:
    """What a launch records as the output of a DuckDB node writing to ``folder``."""
    return {"kind": "dataset", "path": str(folder), "format": output_format(node)}


def check_node(node: Node, params: Mapping[str, str]) -> None:
    """Refuse a DuckDB node whose SQL (``params`` pasted in) is not one query, or whose
    output format is unknown: one line naming the node."""
    check_query(substitute(node.body, dict(params)), what=f"duckdb node {node.name!r}")
    output_format(node)


class DuckDBRunner(PythonRunner):
    """The scheduler's runner for ``duckdb`` nodes (see the module's documentation)."""

    engine = "duckdb"

    def check(self, node: NodeTarget) -> None:
        check_node(node.spec, node.params)


def table_files(name: str, output: Mapping[str, Any] | None, *, what: str) -> TableFiles:
    """Flow table ``name`` (an upstream node's recorded ``output``) as the files to read."""
    if not output or not output.get("path"):
        raise DataError(f"{what}: input {name!r} has recorded no output to read (yet)")
    path = Path(str(output["path"]))
    columns = tuple((str(c), duckdb_type(str(t))) for c, t in output.get("columns") or [])
    if (path / MANIFEST).is_file():  # a local topic: partition by partition, in order
        topic = LocalTopic.open(path)
        files = [str(seg) for k in range(topic.partitions) for seg in topic.segments(k)]
        if not columns:
            columns = tuple((c, duckdb_type(t)) for c, t in topic.columns)
        return TableFiles(name, tuple(files), "json", columns)
    if (path / JOB_FILE).is_file():  # a Flink node's output
        # With the files still being written: rows up to the watermark that fired a run
        # may not be committed yet (a file is committed after it rolls, at a checkpoint).
        files = [str(p) for p in output_files(path)]
        return TableFiles(name, tuple(files), "json", columns)
    if path.is_file():
        fmt = str(output.get("format") or detect_format(path.name) or "")
        if fmt not in FORMATS:
            raise DataError(f"{what}: input {name!r}: cannot tell the format of {path}")
        return TableFiles(name, (str(path),), fmt, columns)
    found = sorted(p for p in path.rglob("*") if p.is_file() and detect_format(p.name)
                   and not any(part.startswith((".", "_"))
                               for part in p.relative_to(path).parts)) if path.is_dir() else []
    fmt = str(output.get("format") or "")
    if not fmt:  # what the node wrote (a Python node's files, say)
        formats = sorted({str(detect_format(p.name)) for p in found})
        if len(formats) > 1:
            raise DataError(f"{what}: input {name!r} at {path} mixes formats "
                            f"({', '.join(formats)})")
        fmt = formats[0] if formats else "parquet"
    return TableFiles(name, tuple(str(p) for p in found if detect_format(p.name) == fmt),
                      fmt, columns)


@contextmanager
def readable(tables: Sequence[TableFiles]) -> Iterator[list[TableFiles]]:
    """``tables`` with every file a Flink sink is still writing replaced by a snapshot of
    its complete lines, in a temporary directory that lasts as long as the context."""
    with tempfile.TemporaryDirectory(prefix="ultron-read-") as tmp:
        ready: list[TableFiles] = []
        for table in tables:
            files: list[str] = []
            for name in table.files:
                path = Path(name)
                if committed_name(path) is None:
                    files.append(name)
                    continue
                data = read_output_file(path)
                if data:
                    snapshot = Path(tmp) / f"{len(files)}-{table.name}.jsonl"
                    snapshot.write_bytes(data)
                    files.append(str(snapshot))
            ready.append(replace(table, files=tuple(files)))
        yield ready


def _window_values(ctx: NodeContext) -> dict[str, Any]:
    window = ctx.window
    if window is None:
        return {}
    start, end = (datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None) for ms in window)
    return {"window_start": start, "window_end": end}


def execute(ctx: NodeContext, source: str) -> None:
    """Run DuckDB node ``ctx.node`` once (in the runner's child process)."""
    what = f"duckdb node {ctx.node!r}"
    fmt = str((ctx.output or {}).get("format") or "parquet")
    sql = substitute(source, ctx.params)
    tables = [table_files(name, out, what=what) for name, out in ctx.inputs.items()]
    window = _window_values(ctx)
    values: dict[str, Any] = {**ctx.params, **window}
    folder = ctx.output_path
    if window:
        name = f"window-{window['window_start']:%Y%m%dT%H%M%S}{FORMATS[fmt]}"
    else:
        name = f"data{FORMATS[fmt]}"
    with readable(tables) as ready:
        result = run_query(sql, ready, output=folder / name, fmt=fmt, values=values,
                           what=what)
    log.info("%s: %d rows → %s", what, result.rows, result.path)
    output = {"kind": "dataset", "path": str(folder), "format": fmt,
              "columns": [[c, flink_type(t)] for c, t in result.columns],
              "rows": result.rows, "file": result.path.name}
    with open_database(ctx.db_url).write() as conn:
        repo.set_instance_output(conn, ctx.instance_id, output)


def preview_rows(output: Mapping[str, Any], limit: int) -> pd.DataFrame:
    """The last ``limit`` rows of a DuckDB node's output."""
    table = table_files("output", output, what="preview")
    if not table.files:
        raise DataError(f"{output.get('path')}: the node has not written output yet")
    return read_table(table, limit=limit)


def input_frame(name: str, output: Mapping[str, Any] | None, *, what: str) -> pd.DataFrame:
    """Flow table ``name`` (an upstream's recorded ``output``) as a DataFrame."""
    with readable([table_files(name, output, what=what)]) as ready:
        return read_table(ready[0])
