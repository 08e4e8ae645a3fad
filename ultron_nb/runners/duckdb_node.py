"""The runner of DuckDB nodes: one ``SELECT`` over the flow's tables per trigger.

A DuckDB node's body is one ``SELECT`` over the tables it reads: local topics, datasets, the
output of Flink nodes (with the rows of the files Flink is still writing, so a run fired by
a watermark sees every row up to it) and of other DuckDB or Python nodes. Runs are carried
out like a Python node's (:class:`~ultron_nb.runners.python_node.PythonRunner`: the trigger
claimed once, a ``jobs`` row, status events, a log); the child process calls :func:`execute`.

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
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from ultron_nb.engines.duckdb.query import FORMATS, check_query, flink_type, run_query
from ultron_nb.engines.outputs import readable, table_files
from ultron_nb.errors import ConfigError
from ultron_nb.flow import Node
from ultron_nb.flow.sqltext import substitute
from ultron_nb.runners.base import RunSpec
from ultron_nb.runners.context import NodeContext
from ultron_nb.runners.python_node import PythonRunner, concurrent_runs
from ultron_nb.store import experiments as repo
from ultron_nb.store import open_database

log = logging.getLogger(__name__)


def output_format(node: Node) -> str:
    """The node's output format (``--option format=``; Parquet by default)."""
    fmt = node.option_dict.get("format", "parquet").lower()
    if fmt not in FORMATS:
        raise ConfigError(f"duckdb node {node.name!r}: --option format={fmt} is not one of "
                          f"{', '.join(FORMATS)}")
    return fmt


def check_node(node: Node, params: Mapping[str, str]) -> None:
    """Refuse a DuckDB node whose SQL (``params`` pasted in) is not one query, or whose
    output format is unknown: one line naming the node."""
    check_query(substitute(node.body, dict(params)), what=f"duckdb node {node.name!r}")
    output_format(node)


class DuckDBRunner(PythonRunner):
    """Runs DuckDB nodes (see the module docstring)."""

    kind: ClassVar[str] = "duckdb"
    engine: ClassVar[str] = "duckdb"

    def check(self, spec: RunSpec) -> None:
        check_node(spec.node, spec.params)
        concurrent_runs(spec.node)

    def planned_output(self, spec: RunSpec) -> dict[str, Any]:
        return {"kind": "dataset", "layout": "files",
                "path": str(self.ws.instance_dir(spec.instance_id)),
                "format": output_format(spec.node)}


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
    output = {"kind": "dataset", "layout": "files", "path": str(folder), "format": fmt,
              "columns": [[c, flink_type(t)] for c, t in result.columns],
              "rows": result.rows, "file": result.path.name}
    with open_database(ctx.db_url).write() as conn:
        repo.set_instance_output(conn, ctx.instance_id, output)
