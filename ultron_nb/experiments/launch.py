"""Launching a flow version as an experiment.

Each Flink SQL node becomes one Flink job on the target cluster (the local one by default, or
any REST URL — the same code path); Python and DuckDB nodes are run by the scheduler when
their triggers fire. A node instance with the same content identity that RUNS on the same
cluster is shared instead of launched again; every other node gets a new instance with a
new, empty output (see :mod:`ultron_nb.flow.plan`).

Two phases: every node is compiled and checked first, and the cluster's free task slots are
compared with what the plan needs — nothing is recorded if anything is wrong; then the jobs
are submitted side by side (a replay's in topological order, each once what it reads is
complete), and if a submission fails the jobs this launch started are cancelled and the
experiment is marked failed.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ultron_nb.engines.flink.rest import remember_credentials
from ultron_nb.engines.topics import check_schema
from ultron_nb.errors import ClusterError, ConfigError, FlowError, UltronError
from ultron_nb.events.control import request_start
from ultron_nb.events.keys import ACTIVE, NodeState, normalize
from ultron_nb.experiments.report import ExperimentStatus, mask_url
from ultron_nb.experiments.savepoints import branch
from ultron_nb.experiments.status import status
from ultron_nb.flow import Flow, Kind, Node, ResourceType, Trigger
from ultron_nb.flow.plan import ExistingInstance, Plan, PlannedNode, Step, plan_launch
from ultron_nb.runners.base import RunSpec
from ultron_nb.runners.flink_compile import CompiledNode, FlinkCompiler, resource_shape
from ultron_nb.runners.flink_node import FlinkRunner
from ultron_nb.runners.registry import Runners
from ultron_nb.store import experiments as repo
from ultron_nb.store.savepoints import SavepointRow

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ultron_nb.workspace import Workspace

log = logging.getLogger(__name__)

#: Instance states a launch shares.
#: Flink jobs of one launch submitted at once (the job server takes them side by side).
SUBMIT_AT_ONCE = 4
SHAREABLE = frozenset({"running", "restarting", "submitting", "ready"})


def target_url(ws: Workspace, target: str | None) -> str:
    """The cluster to launch on, without credentials (a ``--target`` URL's are kept for
    this process only; the stored target never has them)."""
    return (remember_credentials(target) if target else ws.settings.target_url).rstrip("/")


def existing_instances(conn: Connection, flow: Flow, url: str) -> dict[str, ExistingInstance]:
    """The instances of this flow's identities on cluster ``url``: per identity the one a
    launch may share (a running one), how many there were, and who holds it. Python and
    DuckDB instances are counted but never shared (their runs belong to one experiment)."""
    from ultron_nb.flow.identity import identities

    ids = identities(flow)
    found = repo.instances_of(conn, sorted(set(ids.values())), url)
    jobs = repo.latest_jobs(conn, [i.id for i in found])
    holders = repo.holder_names(conn, [i.id for i in found])
    out: dict[str, ExistingInstance] = {}
    for inst in found:  # oldest first
        job = jobs.get(inst.id)
        state = str(normalize(job.state) if job else inst.state)
        node = flow[inst.node_name] if inst.node_name in flow else None
        if node is not None and node.kind in (Kind.PYTHON, Kind.DUCKDB):
            state = "unshared"
        elif node is not None and node.kind is Kind.FLINK and not holders.get(inst.id):
            state = f"released, {state}"  # nobody holds it: it is stopping or stopped
        previous = out.get(inst.identity)
        count = previous.count + 1 if previous else 1
        if previous is not None and previous.state in SHAREABLE and state not in SHAREABLE:
            out[inst.identity] = ExistingInstance(previous.id, previous.identity,
                                                  previous.state, previous.experiments, count)
        else:
            out[inst.identity] = ExistingInstance(inst.id, inst.identity, state,
                                                  tuple(holders.get(inst.id, ())), count)
    return out


def _has_triggers(node: Node) -> bool:
    return any(e.trigger in (Trigger.AFTER, Trigger.PERIODIC, Trigger.EVENT)
               for e in node.triggers)


def _check_boundaries(flow: Flow, outputs: Mapping[str, Mapping[str, Any]]) -> None:
    """A ``--boundary`` edge from a stream node fires on its output watermark: refuse one
    whose source's output has no event time (it could never fire)."""
    for node in flow:
        for edge in node.triggers:
            if not (edge.trigger is Trigger.AFTER and edge.schedule and edge.source):
                continue
            out = outputs.get(edge.source)
            source = flow[edge.source]
            if out is None or not source.is_stream or source.kind is not Kind.FLINK:
                continue
            if not (out.get("watermark_column") or out.get("watermark")):
                cols = ", ".join(c for c, _ in out.get("columns", []))
                raise FlowError(
                    f"node {node.name!r}: --after {edge.source} --boundary {edge.schedule} "
                    f"can never fire: the output of {edge.source!r} has no event time "
                    f"(columns {cols}); keep a rowtime column in its SELECT (e.g. "
                    "window_time, not window_end)")


def check_slots(runner: FlinkRunner, url: str, needed: int) -> None:
    """Refuse a launch that needs more task slots than the cluster has free."""
    if needed <= 0:
        return
    overview = runner.check_target(url)
    free = int(overview.get("slots-available", 0))
    if needed > free:
        total = int(overview.get("slots-total", 0))
        raise ClusterError(
            f"the launch needs {needed} task slot(s) and {mask_url(url)} has {free} free "
            f"of {total}: stop an experiment (`%ultron stop EXP`) or start the local cluster "
            "with more (`%ultron cluster down` then `%ultron cluster up --slots N`)")


def _record(ws: Workspace, flow: Flow, plan: Plan, exp_name: str, url: str, *,
            params: Mapping[str, str] | None, label: str | None, parent: str | None,
            outputs: Mapping[str, dict[str, Any]], states: Mapping[str, str]
            ) -> repo.ExperimentRow:
    """The experiment, its instances and its holds, in one transaction."""
    instances = {p.node: p.instance_id for p in plan.nodes}
    with ws.db.write() as conn:
        if repo.experiment_exists(conn, exp_name):
            raise ConfigError(f"an experiment named {exp_name!r} exists already; choose "
                              "another --name")
        exp = repo.create_experiment(
            conn, name=exp_name, flow_name=flow.name, flow_version=flow.version or 0,
            params=dict(params or {}), label=label or exp_name, target=url, parent=parent)
        for p in plan.nodes:
            node = flow[p.node]
            if p.step is Step.SHARE:
                repo.link_node(conn, exp.id, p.node, p.instance_id,
                               repo.owner_of(conn, p.instance_id))
                continue
            repo.save_instance(conn, repo.InstanceRow(
                id=p.instance_id, identity=p.identity, target=url, node_name=p.node,
                flow_name=flow.name, flow_version=flow.version or 0,
                params=plan.params.get(p.node, {}),
                upstream={ref: instances[ref] for ref in node.data_inputs()},
                output=dict(outputs.get(p.node, {})), state=states[p.node]))
            repo.link_node(conn, exp.id, p.node, p.instance_id, None)
    return exp


def _prepare(ws: Workspace, flow: Flow, plan: Plan, runners: Runners, *, compiler: FlinkCompiler,
             to_run: Sequence[PlannedNode]) -> tuple[dict[str, CompiledNode],
                                                     dict[str, dict[str, Any]], dict[str, str]]:
    """Phase 1: compile the Flink nodes to start, check the others; the outputs and states
    to record. Raises before anything is recorded."""
    compiled = {p.node: compiler.compile(p.node) for p in to_run}
    outputs: dict[str, dict[str, Any]] = {}
    states: dict[str, str] = {}
    for p in plan.nodes:
        node = flow[p.node]
        if node.resource_type is ResourceType.TOPIC:  # shared or not, what it holds now
            check_schema(ws.resource_path(node), [(c.name, c.type) for c in node.columns],
                         who=f"node {p.node!r}")
        if p.step is Step.SHARE:
            continue
        if node.kind is Kind.RESOURCE:
            outputs[p.node] = {"kind": str(node.resource_type),
                               "layout": "topic" if str(node.resource_type) == "topic"
                               else "files", "path": str(ws.resource_path(node)),
                               **resource_shape(node).to_dict()}
            states[p.node] = NodeState.READY
        elif p.node in compiled:
            outputs[p.node], states[p.node] = compiled[p.node].output, NodeState.SUBMITTING
        else:
            spec = RunSpec(experiment="", node=node, instance_id=p.instance_id,
                           flow=flow.name, flow_version=int(flow.version or 0),
                           params=plan.params.get(p.node, {}))
            runner = runners.get(str(node.kind))
            runner.check(spec)
            outputs[p.node], states[p.node] = runner.planned_output(spec), NodeState.WAITING
    known = {**{n: compiler.stored_output(n) or {} for n in compiler.instances
                if flow[n].kind is Kind.FLINK and n not in compiled}, **outputs}
    _check_boundaries(flow, known)
    return compiled, outputs, states


def launch(
    ws: Workspace,
    flow_name: str,
    *,
    name: str | None = None,
    params: Mapping[str, str] | None = None,
    label: str | None = None,
    target: str | None = None,
    bounded: bool = False,
    wait: bool = True,
    timeout: float = 120.0,
    parent: str | None = None,
    restore: Mapping[str, SavepointRow] | None = None,
) -> ExperimentStatus:
    """Launch the current version of flow ``flow_name`` as experiment ``name``.

    ``params`` are overrides (``PARAM`` or ``NODE.PARAM``); ``label`` tags the experiment
    (default: its name); ``target`` is a Flink REST URL (default: ``settings.target_url``).
    With ``bounded``, stream nodes read what their sources hold now and finish (a replay).
    With ``wait``, returns once every job runs (or finished, or failed). Invalid SQL raises
    :class:`SqlError`, too few free task slots :class:`ClusterError`, before anything is
    recorded. ``parent`` records the experiment this one was cloned from; the Flink nodes of
    ``restore`` (a clone's branches) start from those savepoints of the parent's instances
    (:func:`~ultron_nb.experiments.savepoints.branch`).
    """
    ws.db.check_writable()  # nothing could be recorded: say so before asking any cluster
    flow = ws.flow(flow_name)
    if len(flow) == 0:
        raise FlowError(f"flow {flow_name!r} has no nodes")
    flow.validate()
    url = target_url(ws, target)
    with ws.db.read() as conn:
        if name and repo.experiment_exists(conn, name):
            raise ConfigError(f"an experiment named {name!r} exists already; choose another "
                              "--name")
        exp_name = name or repo.next_experiment_name(conn, flow_name)
        existing = existing_instances(conn, flow, url)
    plan = plan_launch(flow, params, existing, target=url)
    instances = {p.node: p.instance_id for p in plan.nodes}
    runners = Runners(ws)
    try:
        flink: FlinkRunner = runners.get("flink")  # type: ignore[assignment]
        to_run = [p for p in plan.nodes if p.step is not Step.SHARE
                  and flow[p.node].kind is Kind.FLINK and not _has_triggers(flow[p.node])]
        if any(flow[p.node].kind is Kind.FLINK for p in plan.nodes):
            flink.check_target(url)  # a flow of DuckDB and Python nodes needs no cluster
        compiler = FlinkCompiler(ws, flow, plan.params, instances, experiment=exp_name,
                                 target=url, bounded=bounded)
        try:
            compiled, outputs, states = _prepare(ws, flow, plan, runners, compiler=compiler,
                                                 to_run=to_run)
            for node, record in (restore or {}).items():
                if node not in compiled:
                    raise ConfigError(f"node {node!r}: this launch starts no job of it to "
                                      f"restore savepoint {record.id} into")
                compiled[node] = branch(ws, exp_name, compiled[node], record)
            check_slots(flink, url, sum(int(c.job.spec.config.get("parallelism.default", "1"))
                                         for c in compiled.values()))
            _record(ws, flow, plan, exp_name, url, params=params, label=label, parent=parent,
                    outputs=outputs, states=states)
        except Exception:  # refused before anything ran: leave no directory behind
            _discard(ws, flow, plan, compiler)
            raise
        submitted = _submit_all(ws, flink, compiler, compiled, to_run, exp_name, url,
                                bounded=bounded, timeout=timeout,
                                savepoints={n: r.location for n, r in (restore or {}).items()})
        with ws.db.write() as conn:
            repo.set_experiment_state(conn, exp_name, "running" if submitted else "waiting")
        request_start(ws.db, exp_name)
        if wait and submitted:
            await_started(flink, url, [j for _, j in submitted], timeout)
    finally:
        runners.close()
    result = status(ws, exp_name)
    for n in result.nodes:
        if n.state == NodeState.FAILED:
            log.warning("experiment %s: node %s failed: %s", exp_name, n.node, n.error)
    return result


def _discard(ws: Workspace, flow: Flow, plan: Plan, compiler: FlinkCompiler) -> None:
    """Remove what compiling wrote for a refused launch: the directories of the new
    instances it planned (new ids: nobody else uses them) and the empty topics it
    created."""
    for p in plan.nodes:
        if p.step is Step.NEW and flow[p.node].kind is not Kind.RESOURCE:
            shutil.rmtree(ws.instance_dir(p.instance_id), ignore_errors=True)
    compiler.discard_created_topics()


def _submit_all(ws: Workspace, flink: FlinkRunner, compiler: FlinkCompiler,
                compiled: dict[str, CompiledNode], to_run: Sequence[PlannedNode],
                exp_name: str, url: str, *, bounded: bool, timeout: float,
                savepoints: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Phase 2: submit; roll back every job this launch started when one submission fails.

    Unbounded, the jobs are submitted side by side (:data:`SUBMIT_AT_ONCE` at a time): a stream
    job reads its upstream's output as it comes and waits for nobody. Bounded (a replay), in
    topological order, each once the upstream jobs it reads have finished."""
    savepoints = savepoints or {}  # node → the savepoint it starts from (a clone's branch)
    submitted: list[tuple[str, str]] = []  # (node, flink job id), in topological order
    failed: list[tuple[str, BaseException]] = []
    if bounded or len(to_run) < 2:
        for p in to_run:
            item = compiled[p.node]
            try:
                if bounded and item.depends_on:
                    for node, job_id in submitted:
                        if node in item.depends_on:
                            flink.rest(url).await_state(job_id, {"finished"}, timeout)
                    item = compiler.compile(p.node)  # re-plan: the upstream output is complete
                submitted.append((p.node, flink.submit(
                    item, url, savepoint=savepoints.get(p.node))[1]))
            except Exception as exc:
                failed.append((p.node, exc))
                break
    else:
        with ThreadPoolExecutor(max_workers=min(SUBMIT_AT_ONCE, len(to_run)),
                                thread_name_prefix="ultron-submit") as pool:
            futures = [(p.node, pool.submit(flink.submit, compiled[p.node], url,
                                            savepoint=savepoints.get(p.node)))
                       for p in to_run]
        for node, future in futures:
            exc = future.exception()
            if exc is None:
                submitted.append((node, future.result()[1]))
            else:
                failed.append((node, exc))
    if failed:
        node, exc = failed[0]
        _roll_back(ws, flink, url, exp_name, submitted, failed_node=node)
        if not isinstance(exc, UltronError):
            raise exc
        raise type(exc)(
            f"{exc} — launch of {exp_name!r} rolled back"
            + (f" (cancelled {', '.join(n for n, _ in submitted)})" if submitted else "")
        ) from None
    return submitted


def await_started(flink: FlinkRunner, url: str, job_ids: Sequence[str], timeout: float
                   ) -> None:
    deadline = time.monotonic() + timeout
    pending = list(job_ids)
    rest = flink.rest(url)
    delay = 0.02  # a job is scheduled within a few tens of ms of its submission
    while pending and time.monotonic() < deadline:
        states = rest.job_ids()
        pending = [j for j in pending if states.get(j) in (None, "created", "initializing",
                                                            "scheduled")]
        if pending:
            time.sleep(delay)
            delay = min(0.1, delay * 2)


def _roll_back(ws: Workspace, flink: FlinkRunner, url: str, exp_name: str,
               submitted: Sequence[tuple[str, str]], *, failed_node: str) -> None:
    rest = flink.rest(url)
    for node, job_id in submitted:
        try:
            rest.cancel(job_id)
        except UltronError as exc:
            log.warning("rollback: cannot cancel job %s of %s: %s", job_id, node, exc)
    with ws.db.write() as conn:
        exp = repo.get_experiment(conn, exp_name)
        for view in repo.node_views(conn, exp.id):
            if view.member.shared_from:
                continue
            job = view.job
            if job is not None and job.external_id in {j for _, j in submitted}:
                repo.update_job(conn, job.id, state=NodeState.CANCELED, ended_at=time.time(),
                                error=f"rolled back: {failed_node} failed to start")
            if normalize(view.instance.state) in ACTIVE:
                repo.set_instance_state(conn, view.instance.id, NodeState.CANCELED)
        repo.release(conn, exp.id)
        repo.set_experiment_state(conn, exp_name, "failed")
