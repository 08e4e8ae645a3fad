"""The sources of the live result follows: ``preview NODE --follow`` tails a node's (or a
topic's) output files, ``sql --follow`` runs a streaming query over the flow's tables in this
process's own mini cluster (topics and node outputs read from their start, then live). Each
returns a :class:`~ultron_nb.experiments.follow.Follow` not started yet."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ultron_nb.errors import ConfigError, NotFoundError
from ultron_nb.experiments.follow import Follow

if TYPE_CHECKING:
    from ultron_nb.workspace import Workspace


class TailSource:
    """New rows of a node's (or topic's) output files, polled every ``every`` seconds."""

    insert_only = True

    def __init__(self, tail: Any, columns: Sequence[str], every: float = 0.5):
        self.tail = tail
        self.columns = list(columns)
        self.every = every
        self._cancel = threading.Event()

    def __iter__(self) -> Iterator[tuple[str, tuple[Any, ...]]]:
        while not self._cancel.is_set():
            for row in self.tail.read():
                yield "+I", tuple(row.get(c) for c in self.columns)
            self._cancel.wait(self.every)

    def cancel(self) -> None:
        self._cancel.set()

    def outcome(self) -> str:
        return ""


def follow_preview(ws: Workspace, node: str, *, experiment: str | None = None,
                   flow: str | None = None, limit: int = 20,
                   duration: float | None = 60.0) -> Follow:
    """The rows ``node`` writes from now on (a Flink node's output, or a topic resource's),
    until ``limit`` rows or ``duration`` seconds."""
    from ultron_nb.engines.outputs import WATERMARK_COLUMN, OutputTail
    from ultron_nb.experiments.preview import find_member
    from ultron_nb.flow import Kind

    found = find_member(ws, node, experiment, flow)
    if found is not None:
        exp, inst = found
        if not inst.output.get("path"):
            raise NotFoundError(f"node {node!r} of {exp.name!r} has no output yet")
        output = dict(inst.output)
        columns = [str(c) for c, _ in output.get("columns") or []]
        title = f"{node} of {exp.name}"
    elif flow and node in ws.flow(flow) and ws.flow(flow)[node].kind is Kind.RESOURCE:
        res = ws.flow(flow)[node]
        output = {"path": str(ws.resource_path(res))}
        columns = [c.name for c in res.columns]
        title = node
    else:
        raise NotFoundError(f"no experiment runs node {node!r}" +
                            (f" of flow {flow!r}" if flow else "") + ": launch one with "
                            "`%ultron run`")
    tail = OutputTail(output)
    columns = [c for c in columns if c != WATERMARK_COLUMN]
    return Follow(lambda: TailSource(tail, columns), columns=columns, limit=limit,
                  duration=duration, title=f"preview {title} --follow")


def follow_sql(ws: Workspace, query: str, *, flow: str, experiment: str | None = None,
               limit: int = 100, duration: float | None = 60.0) -> Follow:
    """A streaming Flink SQL query over the flow's tables (topics and node outputs read from
    their start, then live), until ``limit`` rows or ``duration`` seconds; then its job is
    cancelled. It runs in this process (see the module docstring)."""
    from ultron_nb.engines.flink.submit import stream_query
    from ultron_nb.experiments.preview import declare_query_table
    from ultron_nb.flow.sqltext import group_by_columns, table_references

    if not query.strip():
        raise ConfigError("sql --follow: the cell body must hold the query")
    if limit <= 0:
        raise ConfigError("--limit must be positive")
    f = ws.flow(flow)
    statements: list[str] = []
    jars: list[str] = []
    for ref in table_references(query):
        if ref in f:
            statements.extend(declare_query_table(ws, flow, ref, experiment, jars, "live"))
    conf = {"pipeline.jars": ";".join(dict.fromkeys(jars))} if jars else {}

    return Follow(lambda: stream_query(statements, query, conf=conf, name="sql --follow"),
                  limit=limit, duration=duration, key=group_by_columns(query),
                  title="sql --follow")
