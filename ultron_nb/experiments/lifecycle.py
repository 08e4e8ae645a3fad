"""Stopping, resuming and restarting experiments and their nodes: one owner per action.

An experiment *holds* its node instances from launch to stop; an instance runs while any
experiment holds it (reference counts are the holds in ``experiment_nodes``). A stop is the
only owner of the experiment's jobs while it runs:

1. one transaction marks the experiment ``stopping`` and holds back its pending triggers
   (cancelled; or *suspended* by a stop with savepoints, to run on resume), so the scheduler
   starts nothing more for it; starts the scheduler already claimed are waited for;
2. scheduler-run nodes (Python, DuckDB) are stopped — with savepoints, their runs under way
   may finish first (else they are stopped and their triggers suspended, to run again);
3. the experiment lets go of its instances; every Flink instance nobody holds any more is
   stopped — all with savepoints, or none: when one savepoint fails, the jobs already
   stopped are restored from theirs, the holds come back, and the stop fails with one line;
4. the experiment is ``stopped`` (resumable) or ``canceled``.

Resume holds the instances again, restores every Flink instance that a stop left with a
savepoint, re-arms the suspended triggers (each ``--boundary`` window runs once across the
stop: none twice, none skipped) and asks the scheduler to carry on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ultron_nb.errors import ConfigError, EngineError, NotFoundError, UltronError
from ultron_nb.events import latest
from ultron_nb.events.control import request_restart, request_start
from ultron_nb.events.keys import ACTIVE, ENDED_BY_USER, NodeState, normalize, status_key
from ultron_nb.experiments.launch import await_started, check_slots
from ultron_nb.experiments.report import ExperimentStatus
from ultron_nb.experiments.savepoints import check_restore
from ultron_nb.experiments.status import experiment_row, flow_of, run_specs, status
from ultron_nb.flow import Kind
from ultron_nb.runners.base import RunSpec
from ultron_nb.runners.flink_compile import load_job_spec
from ultron_nb.runners.flink_node import FlinkRunner
from ultron_nb.runners.registry import Runners
from ultron_nb.store import experiments as repo
from ultron_nb.store import triggers as tlog

if TYPE_CHECKING:
    from ultron_nb.workspace import Workspace

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- stop
def _hold_back(ws: Workspace, exp: repo.ExperimentRow, *, savepoint: bool) -> None:
    with ws.db.write() as conn:
        repo.set_experiment_state(conn, exp.name, "stopping")
        tlog.hold_back(conn, exp.name, suspend=savepoint)


def _await_claims(ws: Workspace, experiment: str, timeout: float) -> None:
    """Wait until the scheduler finished the starts it claimed before the stop."""
    deadline = time.monotonic() + timeout
    while True:
        with ws.db.read() as conn:
            claimed = tlog.count(conn, experiment, tlog.CLAIMED)
        if not claimed or time.monotonic() > deadline:
            if claimed:
                log.warning("experiment %s: %d start(s) still claimed by the scheduler after "
                            "%.0f s", experiment, claimed, timeout)
            return
        time.sleep(0.05)


def _stop_scheduled_runs(ws: Workspace, runners: Runners, specs: Mapping[str, RunSpec], *,
                         savepoint: bool, timeout: float) -> None:
    """Stop the Python/DuckDB runs under way; with savepoints, let them finish first (then
    stop and suspend what is left, so it runs again on resume)."""
    running: list[tuple[RunSpec, repo.JobRow]] = []
    for spec in specs.values():
        runner = runners.get(spec.kind)
        if not runner.runs_per_trigger:
            continue
        with ws.db.read() as conn:
            job = repo.latest_job(conn, spec.instance_id)
        if job is not None and normalize(job.state) in ACTIVE:
            running.append((spec, job))
    if savepoint and running:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
                runners.get(s.kind).state(s) in ACTIVE for s, _ in running):
            time.sleep(0.1)
    interrupted: list[int] = []
    for spec, job in running:
        runner = runners.get(spec.kind)
        if runner.state(spec) in ACTIVE:
            runner.stop(spec, timeout=30.0)
            if job.trigger_id is not None:
                interrupted.append(job.trigger_id)
    if savepoint and interrupted:
        with ws.db.write() as conn:
            tlog.suspend(conn, interrupted)


def _unheld_jobs(ws: Workspace, exp: repo.ExperimentRow) -> list[repo.JobRow]:
    """Release the experiment's holds; the active Flink jobs nobody holds any more."""
    with ws.db.write() as conn:
        released = repo.release(conn, exp.id)
        jobs = repo.latest_jobs(conn, released)
        holders = repo.holder_names(conn, released)
    return [j for iid, j in jobs.items() if j.engine == "flink" and j.external_id
            and normalize(j.state) in ACTIVE and not holders.get(iid)]


def _stop_jobs(flink: FlinkRunner, jobs: list[repo.JobRow], *, savepoint: bool,
               timeout: float) -> tuple[dict[str, str | None], dict[str, str]]:
    """Stop jobs side by side: (instance → savepoint, instance → error)."""
    done: dict[str, str | None] = {}
    failed: dict[str, str] = {}
    if not jobs:
        return done, failed
    with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
        futures = {pool.submit(flink.stop_job, j, savepoint=savepoint, timeout=timeout): j
                   for j in jobs}
        for future, job in futures.items():
            try:
                done[job.instance_id] = future.result()
            except UltronError as exc:
                failed[job.instance_id] = str(exc)
    return done, failed


def stop(ws: Workspace, name: str, *, savepoint: bool = False,
         timeout: float = 120.0) -> ExperimentStatus:
    """Stop the experiment: with ``savepoint`` resumably (every Flink job it alone holds
    stops with a savepoint — or none does); otherwise cancel. Instances other experiments
    hold keep running for them."""
    exp = experiment_row(ws, name)
    if exp.state in ("stopped", "canceled"):
        result = status(ws, exp.name)
        result.message = f"experiment {exp.name} is already {exp.state}"
        return result
    flow = flow_of(ws, exp)
    previous = exp.state
    _hold_back(ws, exp, savepoint=savepoint)
    runners = Runners(ws)
    try:
        _await_claims(ws, exp.name, timeout)
        specs = run_specs(ws, exp, flow) if flow else {}
        _stop_scheduled_runs(ws, runners, specs, savepoint=savepoint, timeout=timeout)
        flink: FlinkRunner = runners.get("flink")  # type: ignore[assignment]
        jobs = _unheld_jobs(ws, exp)
        done, failed = _stop_jobs(flink, jobs, savepoint=savepoint, timeout=timeout)
        if failed:
            _undo_stop(ws, flink, exp, previous, jobs, done, savepoint=savepoint)
            nodes = {j.instance_id: _node_of(ws, j.instance_id) for j in jobs}
            first = next(iter(failed.items()))
            raise EngineError(
                f"stop {'--savepoint ' if savepoint else ''}of {exp.name!r} failed for "
                f"{', '.join(nodes[i] for i in failed)} ({first[1]}); every job is running "
                "again")
    finally:
        runners.close()
    with ws.db.write() as conn:
        repo.set_experiment_state(conn, exp.name, "stopped" if savepoint else "canceled")
    result = status(ws, exp.name)
    kept = _kept_for_others(ws, exp)
    if kept:
        result.message = "; ".join(kept)
    return result


def _node_of(ws: Workspace, instance_id: str) -> str:
    with ws.db.read() as conn:
        inst = repo.get_instance(conn, instance_id)
    return inst.node_name if inst else instance_id


def _undo_stop(ws: Workspace, flink: FlinkRunner, exp: repo.ExperimentRow, previous: str,
               jobs: list[repo.JobRow], done: Mapping[str, str | None], *,
               savepoint: bool) -> None:
    """A stop with savepoints failed for some jobs: the ones that stopped run again from
    their new savepoints, the holds and the triggers come back."""
    for job in jobs:
        location = done.get(job.instance_id)
        if location:
            item = flink.restorable(job.instance_id, location)
            flink.submit(item, job.target, savepoint=location)
    with ws.db.write() as conn:
        repo.hold(conn, exp.id)
        if savepoint:
            tlog.rearm(conn, exp.name)
        repo.set_experiment_state(conn, exp.name, previous)


def _kept_for_others(ws: Workspace, exp: repo.ExperimentRow) -> list[str]:
    notes = []
    with ws.db.read() as conn:
        for view in repo.node_views(conn, exp.id):
            others = [h.name for h in repo.holders(conn, view.instance.id) if h.name != exp.name]
            if others and view.job is not None and normalize(view.job.state) in ACTIVE:
                notes.append(f"{view.member.node_name} kept running for {', '.join(others)}")
    return notes


# ---------------------------------------------------------------- resume
def _restorable(ws: Workspace, exp: repo.ExperimentRow) -> tuple[list[tuple[str, repo.JobRow]],
                                                                 list[str]]:
    """Flink nodes to restore (node, job with savepoint) and those that cannot be."""
    todo: list[tuple[str, repo.JobRow]] = []
    missing: list[str] = []
    flow = flow_of(ws, exp)
    with ws.db.read() as conn:
        views = repo.node_views(conn, exp.id)
    for view in views:
        name = view.member.node_name
        if flow is None or name not in flow or flow[name].kind is not Kind.FLINK:
            continue
        job = view.job
        state = normalize(job.state) if job else None
        if job is None or state in ACTIVE or state is NodeState.FINISHED:
            continue  # never started (waits for a trigger), runs (shared), or done
        if state is NodeState.STOPPED and job.savepoint:
            todo.append((name, job))
        elif state in (NodeState.CANCELED, NodeState.STOPPED):
            missing.append(name)
    return todo, missing


def resume(ws: Workspace, name: str, *, timeout: float = 120.0,
           allow_dropped: Collection[str] = ()) -> ExperimentStatus:
    """Start a stopped experiment again: its Flink jobs from their savepoints, its other
    nodes' triggers re-armed. Each savepoint is checked first (:func:`check_restore`):
    nothing is submitted when one is gone or does not fit its job, unless that node is in
    ``allow_dropped``."""
    exp = experiment_row(ws, name)
    if exp.state not in ENDED_BY_USER and exp.state != "failed":
        raise ConfigError(f"experiment {exp.name!r} is {exp.state}, not stopped: nothing to "
                          "resume")
    todo, missing = _restorable(ws, exp)
    if missing:
        raise NotFoundError(
            f"experiment {exp.name!r}: no savepoint for {', '.join(missing)} (stopped "
            f"without --savepoint); restart them with `%ultron restart {exp.name} NODE`")
    runners = Runners(ws)
    try:
        flink: FlinkRunner = runners.get("flink")  # type: ignore[assignment]
        if todo:
            flink.check_target(exp.target)  # a cluster that is gone is the first thing to say
            needed = sum(int(load_job_spec(ws.instance_dir(j.instance_id)).config
                             .get("parallelism.default", "1")) for _, j in todo)
            check_slots(flink, exp.target, needed)
        items = []
        for _node, job in todo:
            item = flink.restorable(job.instance_id, str(job.savepoint))
            check_restore(ws, exp.name, item, str(job.savepoint), allow_dropped=allow_dropped)
            items.append((item, job))
        with ws.db.write() as conn:
            repo.hold(conn, exp.id)
            repo.set_experiment_state(conn, exp.name, "running")
        started = []
        for item, job in items:
            _, job_id = flink.submit(item, job.target, savepoint=job.savepoint)
            started.append(job_id)
        with ws.db.write() as conn:
            tlog.rearm(conn, exp.name)
        request_start(ws.db, exp.name)
        await_started(flink, exp.target, started, timeout)
    finally:
        runners.close()
    return status(ws, exp.name)


# ---------------------------------------------------------------- one node
def _spec(ws: Workspace, exp: repo.ExperimentRow, node: str) -> RunSpec:
    flow = flow_of(ws, exp)
    with ws.db.read() as conn:
        member = repo.member(conn, exp, node)
    if member.shared_from:
        raise ConfigError(f"node {node!r} of {exp.name!r} is shared from "
                          f"{member.shared_from}: restart it there")
    if flow is None or node not in flow:
        raise NotFoundError(f"experiment {exp.name!r}: its flow has no node {node!r}")
    if flow[node].kind is Kind.RESOURCE:
        raise ConfigError(f"node {node!r} is a resource: it has nothing to restart")
    return run_specs(ws, exp, flow)[node]


def restart_node(ws: Workspace, name: str, node: str, *, from_savepoint: bool = False,
                 timeout: float = 120.0, params: Mapping[str, str] | None = None,
                 allow_dropped_state: bool = False) -> ExperimentStatus:
    """Start one node of the experiment again, whatever its kind.

    A Flink node starts afresh (its SQL compiled again, its output recomputed), or from its
    last savepoint with ``from_savepoint`` (checked first, as by :func:`resume`;
    ``allow_dropped_state`` restores one that does not fit); a running job is cancelled
    first. A Python or DuckDB node runs again through the scheduler (now, as a new run).
    Restarting a node of a stopped experiment makes it hold that node again (the
    experiment runs)."""
    exp = experiment_row(ws, name)
    spec = _spec(ws, exp, node)
    runners = Runners(ws)
    try:
        runner = runners.get(spec.kind)
        item = None
        if not runner.runs_per_trigger:
            flink: FlinkRunner = runner  # type: ignore[assignment]
            with ws.db.read() as conn:
                job = repo.latest_job(conn, spec.instance_id)
            savepoint = job.savepoint if (from_savepoint and job) else None
            if from_savepoint and not savepoint:
                raise NotFoundError(f"node {node!r} of {exp.name!r} has no savepoint")
            flink.check_target(exp.target)
            if savepoint:  # checked before anything changes
                item = flink.restorable(spec.instance_id, savepoint)
                check_restore(ws, exp.name, item, savepoint,
                              allow_dropped=[node] if allow_dropped_state else [])
        if exp.state in ENDED_BY_USER:
            with ws.db.write() as conn:
                repo.hold(conn, exp.id, node)
                repo.set_experiment_state(conn, exp.name, "running")
        if runner.runs_per_trigger:
            return _restart_scheduled(ws, exp, spec, timeout)
        if job is not None and job.external_id and flink.state(spec) in ACTIVE:
            flink.stop(spec, timeout=timeout)
        if item is None:
            item = flink.compiler_for(spec).compile(node, extra_params=params)
        _, job_id = flink.submit(item, exp.target, savepoint=savepoint)
        await_started(flink, exp.target, [job_id], timeout)
    finally:
        runners.close()
    return status(ws, exp.name)


def _restart_scheduled(ws: Workspace, exp: repo.ExperimentRow, spec: RunSpec,
                       timeout: float) -> ExperimentStatus:
    """Ask the scheduler for a new run of a Python/DuckDB node; wait until it started."""
    before = latest(ws.db, status_key(exp.name, spec.name))
    request_restart(ws.db, exp.name, spec.name)
    deadline = time.monotonic() + min(timeout, 30.0)
    while time.monotonic() < deadline:
        now = latest(ws.db, status_key(exp.name, spec.name))
        if now is not None and (before is None or now.version > before.version):
            return status(ws, exp.name)
        time.sleep(0.05)
    result = status(ws, exp.name)
    result.message = (f"asked the scheduler to run {spec.name} again; it has not started yet "
                      "(is it running? `%ultron cluster status`)")
    return result


def stop_node(ws: Workspace, name: str, node: str, *, savepoint: bool = False,
              timeout: float = 120.0) -> ExperimentStatus:
    """Stop one node of an experiment (a Flink job with a savepoint, or cancelled; a run)."""
    exp = experiment_row(ws, name)
    spec = _spec(ws, exp, node)
    runners = Runners(ws)
    try:
        runners.get(spec.kind).stop(spec, savepoint=savepoint, timeout=timeout)
    finally:
        runners.close()
    return status(ws, exp.name)
