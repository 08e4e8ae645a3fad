"""Where experiments stand: the list (from the store), and one experiment's live status
(from its runners: Flink's REST API for Flink nodes, the recorded runs for the others).

The experiment's state derives from ALL its nodes, of every kind, in the one vocabulary of
:mod:`ultron_nb.events.keys`; a stop the user asked for is never overridden by jobs that run
on for other experiments.
"""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING

from ultron_nb.errors import NotFoundError, UltronError
from ultron_nb.events.keys import NodeState, derive_experiment_state, normalize
from ultron_nb.experiments.report import ExperimentStatus, NodeStatus
from ultron_nb.experiments.watch import Watcher
from ultron_nb.flow import Flow, Kind
from ultron_nb.runners.base import RunSpec
from ultron_nb.runners.registry import Runners
from ultron_nb.store import experiments as repo

if TYPE_CHECKING:
    from ultron_nb.workspace import Workspace

log = logging.getLogger(__name__)

#: Nodes whose live state is asked at once (each Flink node costs a few REST calls; asked
#: one after the other, a chain of seven made every status wait a quarter of a second).
#: Each thread may hold two store connections (an event sender and a write).
STATUS_WORKERS = 4


def experiment_row(ws: Workspace, name: str | None) -> repo.ExperimentRow:
    """The experiment named ``name`` (default: the latest one)."""
    with ws.db.read() as conn:
        if name:
            return repo.get_experiment(conn, name)
        row = repo.latest_experiment(conn)
    if row is None:
        raise NotFoundError("no experiments yet: launch one with `%ultron run`")
    return row


def list_experiments(ws: Workspace, flow_name: str | None = None) -> list[repo.ExperimentRow]:
    """Experiments in the store, newest first (no REST calls)."""
    with ws.db.read() as conn:
        return repo.list_experiments(conn, flow_name)


def flow_of(ws: Workspace, exp: repo.ExperimentRow) -> Flow | None:
    try:
        return ws.flow(exp.flow_name, exp.flow_version)
    except UltronError:
        return None


def run_specs(ws: Workspace, exp: repo.ExperimentRow, flow: Flow,
              views: list[repo.NodeView] | None = None) -> dict[str, RunSpec]:
    """Node → the :class:`RunSpec` of each node of ``exp`` (runnable kinds only)."""
    if views is None:
        with ws.db.read() as conn:
            views = repo.node_views(conn, exp.id)
    outputs = {v.instance.id: v.instance.output for v in views}
    specs = {}
    for v in views:
        name = v.member.node_name
        if name not in flow or flow[name].kind is Kind.RESOURCE:
            continue
        inst = v.instance
        specs[name] = RunSpec(
            experiment=exp.name, node=flow[name], instance_id=inst.id, flow=flow.name,
            flow_version=int(flow.version or 0),
            params={str(k): str(x) for k, x in inst.params.items()},
            inputs={up: outputs.get(iid) for up, iid in inst.upstream.items()},
            upstream=dict(inst.upstream), output=dict(inst.output), target=exp.target)
    return specs


def status(ws: Workspace, name: str | None = None) -> ExperimentStatus:
    """The live status of experiment ``name`` (default: the latest).

    Flink nodes are asked from Flink (the store and the status events are brought up to
    date), side by side; Python and DuckDB nodes show their latest recorded run."""
    exp = experiment_row(ws, name)
    flow = flow_of(ws, exp)
    with ws.db.read() as conn:
        views = repo.node_views(conn, exp.id)
    result = ExperimentStatus(exp.name, exp.flow_name, exp.flow_version, exp.label, exp.target,
                              exp.state, dict(exp.params))
    result.watcher = functools.partial(watch, ws, exp.name)
    by_name = {v.member.node_name: v for v in views}
    order = flow.topological() if flow else list(by_name)
    specs = run_specs(ws, exp, flow, views) if flow else {}
    runners = Runners(ws)
    unreachable = ""
    try:
        result.nodes = _node_statuses(runners, [by_name[n] for n in order if n in by_name],
                                      flow, specs)
    finally:
        runners.close()
    for ns in result.nodes:
        if ns.state == NodeState.UNKNOWN and ns.error:
            unreachable = ns.error
    derived = derive_experiment_state([n.state for n in result.nodes], exp.state)
    result.state = str(derived)
    if unreachable:
        result.message = unreachable
    if result.state != exp.state and not unreachable:
        with ws.db.write() as conn:
            repo.set_experiment_state(conn, exp.name, result.state)
    return result


def _node_statuses(runners: Runners, views: list[repo.NodeView], flow: Flow | None,
                   specs: dict[str, RunSpec]) -> list[NodeStatus]:
    """Each node's status, in the order of ``views``: the nodes are asked side by side
    (their runners made first, one per kind, so that the threads share them)."""
    kinds = {flow[v.member.node_name].kind for v in views if v.member.node_name in flow} \
        if flow else set()
    for kind in kinds - {Kind.RESOURCE}:
        try:
            runners.get(kind)
        except UltronError:
            pass  # said per node by _node_status

    def one(view: repo.NodeView) -> NodeStatus:
        return _node_status(runners, view, flow, specs.get(view.member.node_name))

    if len(views) < 2:
        return [one(v) for v in views]
    with ThreadPoolExecutor(max_workers=min(STATUS_WORKERS, len(views)),
                            thread_name_prefix="ultron-status") as pool:
        return list(pool.map(one, views))


def _node_status(runners: Runners, view: repo.NodeView, flow: Flow | None,
                 spec: RunSpec | None) -> NodeStatus:
    name = view.member.node_name
    node = flow[name] if flow and name in flow else None
    inst = view.instance
    ns = NodeStatus(name, node.label if node else "?",
                    str(normalize(inst.state) or inst.state), instance=inst.id,
                    shared_from=view.member.shared_from, output=inst.output.get("path"))
    if node is None or node.kind is Kind.RESOURCE or spec is None:
        if node is not None and node.kind is Kind.RESOURCE:
            ns.state = NodeState.READY
        return ns
    try:
        report = runners.get(node.kind).report(spec)
    except UltronError as exc:
        ns.state, ns.error = NodeState.UNKNOWN, str(exc)
        return ns
    if report is None:
        ns.state = NodeState.WAITING
        return ns
    ns.state = str(report.state)
    ns.job_id, ns.web_url, ns.error = report.job_id, report.web_url, report.error
    ns.watermark_ms, ns.attempt, ns.savepoint = report.watermark_ms, report.attempt, \
        report.savepoint
    return ns


def watermarks(ws: Workspace, name: str | None = None) -> dict[str, datetime | None]:
    """Each running stream node's current watermark (naive UTC)."""
    st = status(ws, name)
    return {n.node: n.watermark for n in st.nodes if n.watermark_ms is not None}


def watch(ws: Workspace, name: str | None = None, *, interval: float = 2.0,
          max_interval: float = 30.0, duration: float | None = None) -> Watcher:
    """A :class:`~ultron_nb.experiments.watch.Watcher` of experiment ``name`` (default: the
    latest): nothing runs until it is iterated (``snapshots()``) or started (``start()``);
    in a notebook, showing it shows the live watch widget."""
    exp = experiment_row(ws, name)
    return Watcher(ws, exp.name, functools.partial(status, ws, exp.name), interval=interval,
                   max_interval=max_interval, duration=duration)

