"""Looking at outputs: a node's latest rows, and bounded ad-hoc Flink SQL over the flow's
tables. Both read node outputs through :mod:`ultron_nb.engines.outputs`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ultron_nb.engines import outputs
from ultron_nb.engines.topics import check_schema
from ultron_nb.errors import ConfigError, NotFoundError
from ultron_nb.flow import Kind, ResourceType
from ultron_nb.flow.sqltext import table_references
from ultron_nb.runners.flink_compile import TableMode, declare_table
from ultron_nb.store import experiments as repo

if TYPE_CHECKING:
    import pandas as pd

    from ultron_nb.workspace import Workspace


def find_member(ws: Workspace, node: str, experiment: str | None, flow_name: str | None,
                ) -> tuple[repo.ExperimentRow, repo.InstanceRow] | None:
    """The instance that runs ``node`` in ``experiment`` (default: the latest experiment —
    of ``flow_name`` when given — that has the node)."""
    with ws.db.read() as conn:
        candidates = ([repo.get_experiment(conn, experiment)] if experiment
                      else repo.list_experiments(conn, flow_name))
        for exp in candidates:
            for view in repo.node_views(conn, exp.id):
                if view.member.node_name == node:
                    return exp, view.instance
    return None


def preview(ws: Workspace, node: str, *, experiment: str | None = None,
            flow: str | None = None, limit: int = 20) -> pd.DataFrame:
    """The latest ``limit`` rows of ``node``'s output (a Flink node's output, a DuckDB or
    Python node's files, or a resource's data), as a pandas DataFrame.

    A node is looked up in ``experiment`` (default: the latest experiment that has it,
    within ``flow`` when given). Rows still in Flink's in-progress files are included."""
    if limit <= 0:
        raise ConfigError("--limit must be positive")
    found = find_member(ws, node, experiment, flow)
    if found is not None:
        exp, inst = found
        if not inst.output.get("path"):
            raise NotFoundError(f"node {node!r} of {exp.name!r} has no output yet")
        return outputs.preview(inst.output, limit)
    if flow:
        f = ws.flow(flow)
        if node in f and f[node].kind is Kind.RESOURCE:
            res = f[node]
            if res.resource_type is ResourceType.TOPIC:
                check_schema(ws.resource_path(res), [(c.name, c.type) for c in res.columns],
                             who=f"node {node!r}")
            return outputs.typed_frame(outputs.read_rows(ws.resource_path(res), limit),
                                       [(c.name, c.type) for c in res.columns])
    raise NotFoundError(f"no experiment runs node {node!r}" +
                        (f" of flow {flow!r}" if flow else "") + ": launch one with "
                        "`%ultron run`")


def declare_query_table(ws: Workspace, flow_name: str, ref: str, experiment: str | None,
             jars: list[str], mode: TableMode) -> list[str]:
    """Statements declaring flow table ``ref`` for an ad-hoc query: a resource as it is now,
    a node's table as the output of its instance in ``experiment`` (default: the latest
    experiment of the flow that has it)."""
    node = ws.flow(flow_name)[ref]
    output = None
    if node.kind is not Kind.RESOURCE:
        found = find_member(ws, ref, experiment, flow_name)
        if found is None or not found[1].output.get("columns"):
            raise NotFoundError(f"table {ref!r}: no experiment of flow {flow_name!r} has its "
                                "output yet")
        output = found[1].output
    return declare_table(ws, ref, node, output, mode=mode, jars=jars,
                         who=f"table {ref!r}").statements


def sql(ws: Workspace, query: str, *, flow: str, experiment: str | None = None,
        limit: int = 100) -> pd.DataFrame:
    """Run a bounded, row-limited Flink SQL query over the flow's tables; a DataFrame.

    Resources are read as they are now; a Flink node's table is the output of its instance in
    ``experiment`` (default: the latest experiment of the flow that has it). The query runs
    in this process (batch mode), so it takes no slot from the experiments' cluster. The
    frame's ``attrs["note"]`` says when ``limit`` cut the result."""
    from ultron_nb.engines.flink.rest import submission_headers
    from ultron_nb.engines.flink.submit import collect, expect_rest_headers

    if limit <= 0:
        raise ConfigError("--limit must be positive")
    # This may start the PyFlink JVM: with the headers later submissions need.
    expect_rest_headers(submission_headers(ws.settings))
    f = ws.flow(flow)
    statements: list[str] = []
    jars: list[str] = []
    for ref in table_references(query):
        if ref in f:
            statements.extend(declare_query_table(ws, flow, ref, experiment, jars, "batch"))
    conf = {"pipeline.jars": ";".join(dict.fromkeys(jars))} if jars else {}
    columns, rows = collect(statements, query, limit=limit + 1, name="sql", conf=conf)
    import pandas as pd

    frame = pd.DataFrame([list(r) for r in rows[:limit]], columns=columns)
    if len(rows) > limit:
        frame.attrs["note"] = f"first {limit} rows (more exist: raise --limit)"
    return frame
