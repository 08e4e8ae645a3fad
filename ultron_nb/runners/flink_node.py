"""The runner of Flink SQL nodes: one Flink job per node instance, on the experiment's cluster.

Starting compiles the node (:mod:`ultron_nb.runners.flink_compile`), clears the instance's
output unless it restores a savepoint, records a ``jobs`` row (``submitting``), submits (on
the job server when one runs: :mod:`ultron_nb.engines.flink.jobclient`), and records the
Flink job id. Jobs are named per attempt (``ultron EXP/NODE [instance] #N``), so
a start interrupted between Flink accepting the job and the store recording its id is
*adopted* later (found on the cluster by that name), never submitted twice.

Stopping is a compare-and-set on the job row (active → ``stopping``) before any REST call:
of two actors that try to stop the same job, one does it and the other learns it is being
stopped. A stop with a savepoint records the savepoint on the job row and in the savepoint
lineage (:mod:`ultron_nb.store.savepoints`: the savepoint the job had restored, the operators
whose state it holds); a failed stop puts the row back to running and raises.

Reporting asks Flink's REST API for the job's state, root cause and output watermark, writes
changes back to the store and publishes ``status/<owner>/<node>`` and
``watermark/<owner>/<node>`` when they changed — ``owner`` being the experiment that launched
the instance (shared instances speak through it). The scheduler follows them.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ultron_nb.engines.flink import ddl, plans, restores
from ultron_nb.engines.flink.jobconfig import job_name, parallelism
from ultron_nb.engines.flink.rest import FlinkRest, JobInfo, rest_client
from ultron_nb.engines.outputs import first_event_ms
from ultron_nb.errors import ClusterError, NotFoundError, UltronError
from ultron_nb.events import latest, send_event
from ultron_nb.events.keys import (
    ACTIVE,
    SENDER_FLINK,
    TERMINAL,
    NodeState,
    normalize,
    status_key,
    watermark_key,
)
from ultron_nb.logs import Repeats
from ultron_nb.runners.base import NodeReport, NodeRunner, RunSpec
from ultron_nb.runners.flink_compile import (
    CompiledNode,
    FlinkCompiler,
    load_job_spec,
    save_job_spec,
)
from ultron_nb.store import experiments as repo
from ultron_nb.store import savepoints as sp_repo
from ultron_nb.store.experiments import JobRow

if TYPE_CHECKING:
    from ultron_nb.workspace import Workspace

log = logging.getLogger(__name__)

ENGINE = "flink"
#: A submission not recorded after this many seconds was interrupted (its process died).
SUBMIT_GRACE = 180.0
#: Recorded job states a stop may take over.
STOPPABLE = frozenset({NodeState.RUNNING, NodeState.RESTARTING, "created", "initializing",
                       "scheduled", "reconciling", "restarting", "failing"})


def clear_output(folder: Path) -> None:
    """Remove a previous run's output (a fresh start recomputes it), the ordered backlog
    copies older versions made under ``_replay`` and the old jobs' recorded restarts."""
    out = ddl.output_folder(folder)
    if out.is_dir():  # keep the directory: running readers watch it
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "_replay", ignore_errors=True)
    (folder / restores.RESTORES_FILE).unlink(missing_ok=True)  # the old jobs' restarts


def parse_ms(value: Any) -> int | None:
    """The epoch ms of a watermark event value (a number, or ``{"watermark": ms, ...}``)."""
    if isinstance(value, dict):
        value = value.get("watermark")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def window_params(payload: dict[str, Any]) -> dict[str, str]:
    """A boundary trigger's window as SQL timestamp text (``${window_start}``)."""
    from datetime import datetime, timedelta

    out = {}
    for key in ("window_start", "window_end"):
        if key in payload:
            ms = int(payload[key])
            out[key] = (datetime(1970, 1, 1) + timedelta(milliseconds=ms)).strftime(
                "%Y-%m-%d %H:%M:%S.%f")[:-3]
    return out


class FlinkRunner(NodeRunner):
    """Runs Flink SQL nodes (see the module docstring)."""

    kind: ClassVar[str] = "flink"
    supports_savepoints = True
    needs_cluster = True

    def __init__(self, ws: Workspace):
        super().__init__(ws)
        self._clients: dict[str, FlinkRest] = {}
        self._clients_lock = threading.Lock()  # a status asks its nodes side by side
        self._repeats = Repeats(log)

    # ------------------------------------------------------------------ clusters
    def rest(self, url: str) -> FlinkRest:
        """A (kept) REST client of the cluster at ``url``."""
        key = url.rstrip("/")
        with self._clients_lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = rest_client(self.ws.settings, key)
            return client

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def check_target(self, url: str) -> dict[str, Any]:
        """The cluster's ``/overview``; a one-line ClusterError when it does not answer."""
        try:
            return self.rest(url).overview()
        except ClusterError:
            s = self.ws.settings
            if url.rstrip("/") == s.local_flink_url.rstrip("/") and not s.flink_url:
                raise ClusterError(
                    f"the local Flink cluster is not running at {url}: start it with "
                    "`%ultron cluster up` (or `ultron up`)") from None
            raise

    @staticmethod
    def slots_needed(spec: RunSpec) -> int:
        return parallelism(spec.node.option_dict)

    # ------------------------------------------------------------------ start
    def submit(self, item: CompiledNode, target: str, *, savepoint: str | None = None,
               trigger_id: int | None = None) -> tuple[int, str]:
        """Submit a compiled node; record the job. Returns (job row id, Flink job id)."""
        from ultron_nb.engines.flink import jobclient

        rest = self.rest(target)
        folder = self.ws.instance_dir(item.instance)
        if savepoint is None:
            clear_output(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_job_spec(folder, item.job.spec)
        with self.ws.db.write() as conn:
            attempt = repo.next_attempt(conn, item.instance)
            row = repo.add_job(conn, instance_id=item.instance, engine=ENGINE,
                               external_id=None, target=rest.url,
                               state=NodeState.SUBMITTING, attempt=attempt,
                               savepoint=savepoint, trigger_id=trigger_id)
            repo.set_instance_state(conn, item.instance, NodeState.SUBMITTING)
        try:
            job_id = jobclient.submit(self.ws.settings, item.job, rest,
                                      name=job_name(item.job.spec, attempt))
        except UltronError as exc:
            with self.ws.db.write() as conn:
                repo.update_job(conn, row.id, state=NodeState.FAILED, error=str(exc),
                                ended_at=time.time())
                repo.set_instance_state(conn, item.instance, NodeState.FAILED)
            raise
        with self.ws.db.write() as conn:
            repo.update_job(conn, row.id, external_id=job_id, state=NodeState.RUNNING)
            repo.set_instance_state(conn, item.instance, NodeState.RUNNING,
                                    output=item.output or None)
        log.info("node %s → Flink job %s (%s)", item.node, job_id, rest.web_url(job_id))
        return row.id, job_id

    def compiler_for(self, spec: RunSpec) -> FlinkCompiler:
        """A compiler of ``spec``'s experiment (its flow version, instances, parameters)."""
        flow = self.ws.flow(spec.flow, spec.flow_version)
        with self.ws.db.read() as conn:
            exp = repo.get_experiment(conn, spec.experiment)
            views = repo.node_views(conn, exp.id)
        instances = {v.member.node_name: v.instance.id for v in views}
        params = {v.member.node_name: {str(k): str(x) for k, x in v.instance.params.items()}
                  for v in views}
        return FlinkCompiler(self.ws, flow, params, instances, experiment=spec.experiment,
                             target=spec.target or exp.target, bounded=False)

    def restorable(self, instance_id: str, savepoint: str) -> CompiledNode:
        """The job an instance last ran, set to restore ``savepoint``."""
        from ultron_nb.engines.flink import jobclient

        spec = load_job_spec(self.ws.instance_dir(instance_id))
        spec.config["execution.savepoint.path"] = savepoint
        with self.ws.db.read() as conn:
            inst = repo.get_instance(conn, instance_id)
        return CompiledNode(spec.node, instance_id, jobclient.prepare(self.ws.settings, spec),
                            dict(inst.output) if inst else {}, [])

    def start(self, spec: RunSpec, *, savepoint: str | None = None) -> None:
        """Start the instance unless its job runs (or an interrupted start is adopted);
        from ``savepoint`` when given, else afresh (compiled again, output recomputed)."""
        job = self._settled_job(spec.instance_id)
        if job is not None and job.state == NodeState.SUBMITTING and not job.external_id:
            # A start of this instance was interrupted (this is its trigger, driven again):
            # the job Flink may have accepted is found by its name, not submitted twice.
            job = self.adopt_interrupted(spec.instance_id)
        if job is not None and job.external_id and normalize(job.state) in ACTIVE:
            report = self.refresh(spec.instance_id)
            if report is not None and report.state in ACTIVE:
                return
        target = spec.target or (job.target if job else self.ws.settings.target_url)
        if savepoint:
            item = self.restorable(spec.instance_id, savepoint)
        else:
            extra = window_params(spec.trigger.payload) if spec.trigger else {}
            item = self.compiler_for(spec).compile(spec.name, extra_params=extra)
        self.submit(item, target, savepoint=savepoint,
                    trigger_id=spec.trigger.id if spec.trigger else None)

    # ------------------------------------------------------------------ stop
    def stop(self, spec: RunSpec, *, savepoint: bool = False, timeout: float = 120.0
             ) -> str | None:
        with self.ws.db.read() as conn:
            job = repo.latest_job(conn, spec.instance_id)
        if job is None or not job.external_id:
            return None
        return self.stop_job(job, savepoint=savepoint, timeout=timeout)

    def stop_job(self, job: JobRow, *, savepoint: bool, timeout: float) -> str | None:
        """Stop one job (the compare-and-set makes this actor its only stopper)."""
        assert job.external_id
        with self.ws.db.write() as conn:
            if not repo.update_job(conn, job.id, only_if=STOPPABLE, state=NodeState.STOPPING):
                log.info("job %s is %s: not stopping it", job.external_id, job.state)
                return None
        rest = self.rest(job.target)
        try:
            if savepoint:
                location = rest.stop_with_savepoint(job.external_id, timeout=timeout)
                # The savepoint completes before the job leaves RUNNING: wait for the end.
                rest.await_state(job.external_id, {"finished", "canceled"}, timeout)
            else:
                location = None
                rest.cancel(job.external_id)
                rest.await_state(job.external_id, {"canceled"}, timeout)
        except UltronError:
            with self.ws.db.write() as conn:
                repo.update_job(conn, job.id, only_if={NodeState.STOPPING},
                                state=NodeState.RUNNING)
            raise
        end = NodeState.STOPPED if savepoint else NodeState.CANCELED
        held = self._operators(job.instance_id) if location else None
        with self.ws.db.write() as conn:
            repo.update_job(conn, job.id, state=end, savepoint=location, ended_at=time.time())
            repo.set_instance_state(conn, job.instance_id, end)
            if location:
                parent = (sp_repo.by_location(conn, job.instance_id, job.savepoint)
                          if job.savepoint else None)
                sp_repo.record(conn, location=location, job_id=job.id,
                               instance_id=job.instance_id,
                               parent=parent.id if parent else None, operators=held)
        self._publish(job.instance_id, end, job.attempt, job.external_id, None)
        log.info("instance %s: job %s %s%s", job.instance_id, job.external_id, end,
                 f" with savepoint {location}" if location else "")
        return location

    def _operators(self, instance_id: str) -> list[dict[str, Any]] | None:
        """The operators whose state a savepoint of the instance's job holds (from the plan
        it ran), or None when that is not known (no compiled plan)."""
        try:
            spec = load_job_spec(self.ws.instance_dir(instance_id))
        except NotFoundError:
            return None
        return plans.to_json(plans.operators(spec.plan)) if spec.plan else None

    # ------------------------------------------------------------------ state
    def report(self, spec: RunSpec) -> NodeReport | None:
        return self.refresh(spec.instance_id)

    def refresh(self, instance_id: str) -> NodeReport | None:
        """The instance's latest job as Flink reports it now; the store and the status
        events are brought up to date."""
        job = self._settled_job(instance_id)
        if job is None:
            return None
        state = normalize(job.state) or NodeState.UNKNOWN
        report = NodeReport(state, job_id=job.external_id, error=job.error,
                            attempt=job.attempt, savepoint=job.savepoint)
        if not job.external_id:
            return report
        url = job.target.rstrip("/")
        if state in TERMINAL:  # it ended: the store knows how; Flink need not
            report.web_url = f"{url}/#/job/completed/{job.external_id}/overview"
            return report
        rest = self.rest(url)
        report.web_url = rest.web_url(job.external_id)
        try:
            self._ask_flink(rest, job, report)
        except ClusterError as exc:
            report.state, report.error = NodeState.UNKNOWN, str(exc)
            return report
        self._publish(instance_id, report.state, job.attempt, job.external_id,
                      report.watermark_ms)
        return report

    def _ask_flink(self, rest: FlinkRest, job: JobRow, report: NodeReport) -> None:
        assert job.external_id
        recorded = normalize(job.state)
        info: JobInfo | None = None
        try:
            info = rest.job(job.external_id)
            reported = normalize(info.state) or NodeState.UNKNOWN
        except NotFoundError:
            reported = NodeState.LOST
        if info is not None and reported is NodeState.RUNNING:
            self._note_restart(rest, job, info.restarting_ms)
        if recorded is NodeState.STOPPING and reported not in TERMINAL:
            reported = NodeState.STOPPING  # whoever stops it records how it ended
        elif recorded is NodeState.STOPPING:
            return  # the stopper records the end (savepoint and all)
        report.state = reported
        error = job.error
        if reported is NodeState.RESTARTING or reported is NodeState.FAILED:
            try:
                error = rest.root_cause(job.external_id) or error
            except UltronError:
                pass
        elif reported is NodeState.LOST:
            error = f"{rest.url} does not know job {job.external_id} (cluster restarted?)"
        report.error = error if reported in (NodeState.RESTARTING, NodeState.FAILED,
                                             NodeState.LOST) else None
        if reported is NodeState.RUNNING and rest is not None:
            try:
                report.watermark_ms = rest.job_watermark(job.external_id)
            except UltronError:
                report.watermark_ms = None
        if reported != recorded or (report.error and report.error != job.error):
            ended = time.time() if reported in TERMINAL and job.ended_at is None \
                else job.ended_at
            with self.ws.db.write() as conn:
                changed = repo.update_job(
                    conn, job.id, only_if={str(job.state)}, state=reported,
                    error=report.error, ended_at=ended)
                if changed:
                    repo.set_instance_state(conn, job.instance_id, reported)

    def _note_restart(self, rest: FlinkRest, job: JobRow, restarting_ms: int | None) -> None:
        """Record a restart of the running job from a checkpoint, so that readers skip the
        part files its failed attempt left (:mod:`ultron_nb.engines.flink.restores`).

        Flink restores a checkpoint after a restart of the whole job (its ``RESTARTING``
        time) or of one pipelined region (the job stays ``RUNNING``): the checkpoint it last
        restored says which, and when."""
        assert job.external_id
        folder = self.ws.instance_dir(job.instance_id)
        last = restores.last_restored_ms(folder, job.external_id)
        try:
            cp = rest.restored_checkpoint(job.external_id)
        except UltronError as exc:
            log.warning("node instance %s: a restart of job %s is not recorded: %s",
                        job.instance_id, job.external_id, exc)
            return
        if cp is None:
            if restarting_ms and (last is None or last < restarting_ms):
                # Restarted before any checkpoint: the job starts over, and every part
                # file the failed attempt left is never committed.
                restores.record_restore(folder, restores.Restore(
                    job.external_id, 0, 0, restarting_ms))
            return
        if cp.savepoint or (last is not None and last >= cp.restored_ms):
            return  # started from a savepoint (nothing left over), or recorded already
        acked = cp.acked_ms if cp.acked_ms is not None else restores.written_ms(cp.path)
        if acked is None:  # recorded as hiding nothing, so that this is said once
            log.warning("node instance %s: job %s restarted from checkpoint %s, which Flink "
                        "no longer describes; part files of the failed attempt may show in "
                        "previews", job.instance_id, job.external_id, cp.id)
            acked = cp.restored_ms
        if restores.record_restore(folder, restores.Restore(
                job.external_id, cp.id, acked, cp.restored_ms)):
            log.info("node %s: job %s restarted from checkpoint %s",
                     job.instance_id, job.external_id, cp.id)

    def _settled_job(self, instance_id: str) -> JobRow | None:
        """The latest job; an interrupted submission (overdue, no id) settled first."""
        with self.ws.db.read() as conn:
            job = repo.latest_job(conn, instance_id)
        if (job is not None and job.engine == ENGINE and job.state == NodeState.SUBMITTING
                and not job.external_id and time.time() - job.started_at > SUBMIT_GRACE):
            return self.adopt_interrupted(instance_id)
        return job if job is None or job.engine == ENGINE else None

    def adopt_interrupted(self, instance_id: str) -> JobRow | None:
        """Settle a start interrupted between Flink accepting the job and the store
        recording its id: the job, found on the cluster by its name, is recorded; a
        submission that never reached Flink is recorded as failed."""
        with self.ws.db.read() as conn:
            job = repo.latest_job(conn, instance_id)
        if job is None or job.engine != ENGINE or job.external_id or \
                job.state != NodeState.SUBMITTING:
            return job
        try:
            name: str | None = job_name(load_job_spec(self.ws.instance_dir(instance_id)),
                                        job.attempt)
        except NotFoundError:
            name = None
        found = [j for j in self.rest(job.target).jobs_overview() if name and j["name"] == name]
        with self.ws.db.write() as conn:
            if found:
                state = normalize(found[0]["state"]) or NodeState.RUNNING
                repo.update_job(conn, job.id, external_id=found[0]["jid"], state=state)
                repo.set_instance_state(conn, instance_id, state)
                log.warning("node instance %s: adopted job %s of an interrupted start",
                            instance_id, found[0]["jid"])
            else:
                repo.update_job(conn, job.id, state=NodeState.FAILED, ended_at=time.time(),
                                error="the start was interrupted before Flink accepted the job")
                repo.set_instance_state(conn, instance_id, NodeState.FAILED)
            return repo.latest_job(conn, instance_id)

    # ------------------------------------------------------------------ events
    def _publish(self, instance_id: str, state: NodeState, attempt: int | None,
                 job_id: str | None, watermark_ms: int | None) -> None:
        """``status/`` and ``watermark/`` events of the instance's owner, when they moved."""
        if state is NodeState.UNKNOWN:
            return
        with self.ws.db.read() as conn:
            owner = repo.owner_of(conn, instance_id)
            inst = repo.get_instance(conn, instance_id)
        if owner is None or inst is None:
            return
        db = self.ws.db
        key = status_key(owner, inst.node_name)
        value = {"state": str(state), "attempt": attempt, "job_id": job_id}
        last = latest(db, key)
        if last is None or last.value != value:
            send_event(db, key, value, sender=SENDER_FLINK)
        if watermark_ms is not None:
            wkey = watermark_key(owner, inst.node_name)
            last = latest(db, wkey)
            if last is None:
                # The first watermark says where the output starts in event time, so that
                # boundary edges fire for every window of the data, the first one included.
                since = first_event_ms(inst.output)
                if since is not None:
                    send_event(db, wkey, {"watermark": int(watermark_ms), "since": since},
                               sender=SENDER_FLINK)
            elif parse_ms(last.value) != watermark_ms:
                send_event(db, wkey, int(watermark_ms), sender=SENDER_FLINK)

    def maintain(self) -> None:
        """Start the local cluster's task manager again if it died (the jobs restart from
        their checkpoints); refresh every active Flink job of the store (so the scheduler
        sees jobs that finish or fail by themselves, and watermarks move)."""
        if not self.ws.settings.flink_url:
            from ultron_nb.engines.flink.cluster import LocalCluster

            try:
                LocalCluster(self.ws.settings).heal()
            except ClusterError as exc:
                self._repeats.failed("local task manager", f"the local cluster's task "
                                     f"manager did not start again: {exc}")
            else:
                self._repeats.ok("local task manager")
        with self.ws.db.read() as conn:
            rows = repo.jobs_in_state(conn, ENGINE, {*ACTIVE, "created", "initializing",
                                                     "scheduled", "reconciling", "failing"})
        seen: set[str] = set()
        for row in rows:
            if row.instance_id in seen:
                continue
            seen.add(row.instance_id)
            what = f"status of {row.instance_id}"
            try:
                report = self.refresh(row.instance_id)
            except UltronError as exc:
                self._repeats.failed(what, f"{what} unavailable: {exc}", level=logging.INFO)
                continue
            if report is not None and report.state is NodeState.UNKNOWN and report.error:
                self._repeats.failed(what, f"{what} unavailable: {report.error}",
                                     level=logging.INFO)  # once, not every few seconds
            else:
                self._repeats.ok(what)
