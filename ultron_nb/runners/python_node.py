"""The runner of Python nodes: each trigger is one run in processes of its own.

A start writes the run's spec under ``<home>/runs/<experiment>/`` and has the warm worker
of the kind fork the runner process (:mod:`ultron_nb.runners.warm`; a fresh interpreter when
no worker can), which claims the trigger and records the run (:mod:`ultron_nb.runners.process`)
and forks the child that runs the node; a stop sends SIGTERM to the runner's process group;
the state is the latest ``jobs`` row of the instance (a ``running`` run whose runner
vanished is ``failed``, and :meth:`maintain` records it so).

Several runs of one node may be under way at once: up to its ``--option
max_concurrent_runs=N`` (default :data:`DEFAULT_CONCURRENT_RUNS`), except runs of
event-time windows (``--after X --boundary``), which run one at a time, in window order (a
window's run may build on the previous one's).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any, ClassVar

from ultron_nb.errors import ConfigError, EngineError
from ultron_nb.events import append_event
from ultron_nb.events.keys import SENDER_RUNNER, NodeState, normalize, status_key
from ultron_nb.files import open_private
from ultron_nb.processes import process_alive
from ultron_nb.runners.base import NodeReport, NodeRunner, RunSpec
from ultron_nb.runners.warm import WarmWorker, WorkerGone
from ultron_nb.store import experiments as repo
from ultron_nb.store.experiments import JobRow

log = logging.getLogger(__name__)

#: Runs of one node under way at once, unless its ``--option max_concurrent_runs`` says.
DEFAULT_CONCURRENT_RUNS = 4
CONCURRENCY_OPTION = "max_concurrent_runs"


def concurrent_runs(node: Any) -> int:
    """The node's bound on runs under way at once; ConfigError naming it when invalid."""
    text = node.option_dict.get(CONCURRENCY_OPTION)
    if text is None:
        return DEFAULT_CONCURRENT_RUNS
    try:
        value = int(str(text))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{node.kind} node {node.name!r}: --option {CONCURRENCY_OPTION}="
                          f"{text} is not a whole number of at least 1")
    return value


class PythonRunner(NodeRunner):
    """Runs Python nodes (see the module docstring)."""

    kind: ClassVar[str] = "python"
    runs_per_trigger = True
    claims_triggers = True
    #: ``jobs.engine`` of its runs; the child process runs the node by it.
    engine: ClassVar[str] = "python"
    stop_grace: float = 10.0

    def __init__(self, ws: Any, *, python: str | None = None, warm: bool = True):
        super().__init__(ws)
        self.python = python or sys.executable
        self._children: list[Any] = []  # Popen, or RunnerHandle of a warm worker's runner
        self._warm = warm
        self._worker: WarmWorker | None = None

    @property
    def worker(self) -> WarmWorker | None:
        """The warm worker of this kind (made on first use; None when ``warm`` is off)."""
        if self._worker is None and self._warm:
            home = self.ws.home
            self._worker = WarmWorker(self.kind, python=self.python, env=self._env(),
                                      cwd=home.parent,
                                      log_file=home / "logs" / f"worker-{self.kind}.log")
        return self._worker

    def _env(self) -> dict[str, str]:
        return dict(os.environ, ULTRON_HOME=str(self.ws.home), ULTRON_DB_URL=self.ws.db.url,
                    PYTHONUNBUFFERED="1")

    def warm_up(self) -> None:
        """Start the warm worker now, so that the first run does not wait for its imports."""
        if self.worker is not None:
            self.worker.start()

    # ------------------------------------------------------------------ checks
    def check(self, spec: RunSpec) -> None:
        if not spec.node.function:
            raise EngineError(f"python node {spec.name!r} names no function to call")
        concurrent_runs(spec.node)

    def run_limit(self, spec: RunSpec) -> int:
        if spec.trigger is not None and spec.trigger.window is not None:
            return 1  # event-time windows run one at a time, in order
        return concurrent_runs(spec.node)

    def active_runs(self, spec: RunSpec) -> int:
        return sum(1 for r in self._running(spec.instance_id) if process_alive(r.external_id))

    def planned_output(self, spec: RunSpec) -> dict[str, Any]:
        """Where ``ctx.output_path`` points: readers downstream look there."""
        return {"kind": "dataset", "layout": "files",
                "path": str(self.ws.home / "data" / spec.instance_id)}

    # ------------------------------------------------------------------ runs
    def _spec_file(self, spec: RunSpec) -> dict[str, Any]:
        assert spec.trigger is not None
        home = self.ws.home
        return {  # the store URL (maybe with a password) goes by environment, not on disk
            "engine": self.engine, "home": str(home), "cwd": str(home.parent),
            "python": self.python, "experiment": spec.experiment, "node": spec.name,
            "instance_id": spec.instance_id, "flow": spec.flow,
            "flow_version": spec.flow_version, "source": spec.node.body,
            "function": spec.node.function, "params": spec.params, "inputs": spec.inputs,
            "output": spec.output, "trigger": spec.trigger.to_dict(),
            "stop_grace": self.stop_grace,
        }

    def start(self, spec: RunSpec, *, savepoint: str | None = None) -> None:
        if spec.trigger is None:
            raise EngineError(f"{self.engine} node {spec.name!r}: a start needs a trigger")
        self.check(spec)
        home = self.ws.home
        runs = home / "runs" / spec.experiment
        runs.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = runs / f"{spec.name}-{spec.trigger.id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._spec_file(spec), default=str))
        tmp.replace(path)
        logs = home / "logs" / spec.experiment
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        worker = self.worker
        if worker is not None:
            try:
                handle = worker.launch(path, logs / "runner.log", str(home.parent))
            except WorkerGone as exc:
                log.warning("%s node %s: %s; starting a fresh interpreter", self.engine,
                            spec.label, exc)
            else:
                self._children.append(handle)
                log.info("%s node %s: runner pid %d forked by the warm worker (trigger %d)",
                         self.engine, spec.label, handle.pid, spec.trigger.id)
                return
        with os.fdopen(open_private(logs / "runner.log"), "ab") as err:
            try:
                child = subprocess.Popen(
                    [self.python, "-m", "ultron_nb.runners.process", "run-node", str(path)],
                    cwd=str(home.parent), env=self._env(), stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                )
            except OSError as exc:
                raise EngineError(f"{self.engine} node {spec.label}: cannot start "
                                  f"{self.python}: {exc}") from None
        self._children.append(child)
        log.info("%s node %s: runner pid %d (trigger %d)", self.engine, spec.label, child.pid,
                 spec.trigger.id)

    def _running(self, instance_id: str | None = None) -> list[JobRow]:
        with self.ws.db.read() as conn:
            return repo.jobs_in_state(conn, self.engine, {NodeState.RUNNING},
                                      instance_id=instance_id)

    def stop(self, spec: RunSpec, *, savepoint: bool = False, timeout: float = 120.0
             ) -> str | None:
        """SIGTERM to the runner of each running run (it stops the node's child), then wait
        for the runs to end (SIGKILL after ``timeout``)."""
        rows = [r for r in self._running(spec.instance_id) if process_alive(r.external_id)]
        for row in rows:
            self._signal(row, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(process_alive(r.external_id) for r in rows):
            if time.monotonic() > deadline:
                for row in rows:
                    self._signal(row, signal.SIGKILL)
                break
            time.sleep(0.05)
        return None

    @staticmethod
    def _signal(row: JobRow, signo: int) -> None:
        pid = int(str(row.external_id).split(":")[0])
        try:
            os.killpg(pid, signo)  # the runner leads its own process group
        except ProcessLookupError:
            pass

    def report(self, spec: RunSpec) -> NodeReport | None:
        with self.ws.db.read() as conn:
            job = repo.latest_job(conn, spec.instance_id)
        if job is None or job.engine != self.engine:
            return None
        state = normalize(job.state) or NodeState.UNKNOWN
        error = job.error
        if state is NodeState.RUNNING and not process_alive(job.external_id):
            state, error = NodeState.FAILED, "the runner process vanished"
        return NodeReport(state, attempt=job.attempt, error=error)

    # ------------------------------------------------------------------ housekeeping
    def maintain(self) -> None:
        """Reap finished runner processes; record runs whose runner vanished as failed."""
        self._children = [c for c in self._children if c.poll() is None]
        for row in self._running():
            if process_alive(row.external_id):
                continue
            experiment = str(row.target).removeprefix(f"{self.engine}:")
            with self.ws.db.write() as conn:
                if not repo.update_job(conn, row.id, only_if={NodeState.RUNNING},
                                       state=NodeState.FAILED, ended_at=time.time(),
                                       error="the runner process vanished"):
                    continue
                inst = repo.get_instance(conn, row.instance_id)
                if inst is not None:
                    append_event(conn, status_key(experiment, inst.node_name),
                                 {"state": NodeState.FAILED, "attempt": row.attempt,
                                  "error": "the runner process vanished"},
                                 sender=SENDER_RUNNER)
            log.warning("%s job %d (%s) lost its runner: recorded as failed", self.engine,
                        row.id, row.instance_id)

    def close(self) -> None:
        self.maintain()
        if self._worker is not None:
            self._worker.close()
