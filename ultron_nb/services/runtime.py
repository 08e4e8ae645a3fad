"""The processes a workspace runs: the local Flink cluster, the job server (which compiles
and submits Flink jobs for every kernel, the CLI and the scheduler) and the scheduler daemon.

``up`` starts all three at once (reusing what already runs), ``down`` stops them, by their
own PIDs (and the MLflow UI, when ``%ultron mlflow ui`` started one).
With a remote cluster configured (``flink_url``), ``up`` checks that it answers and starts
the job server (it submits to that cluster) and the scheduler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ultron_nb.engines.flink.cluster import ClusterStatus
    from ultron_nb.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class RuntimeStatus:
    cluster: ClusterStatus
    scheduler_pid: int | None
    notes: list[str] = field(default_factory=list)
    jobserver_pid: int | None = None

    def __str__(self) -> str:
        sched = (f"scheduler: running (pid {self.scheduler_pid})" if self.scheduler_pid
                 else "scheduler: not running")
        server = (f"job server: running (pid {self.jobserver_pid})" if self.jobserver_pid
                  else "job server: not running (Flink jobs compile in each process)")
        return "\n".join([str(self.cluster), sched, server, *self.notes])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        import html

        return "<pre>" + html.escape(str(self)) + "</pre>"


def _cluster(ws: Workspace, port: int | None, slots: int | None) -> Any:
    from ultron_nb.engines.flink.cluster import LocalCluster

    return LocalCluster(ws.settings, rest_port=port, slots=slots)


def _scheduler_pid(ws: Workspace) -> int | None:
    from ultron_nb.scheduler import daemon_status

    pid = daemon_status(ws.settings)
    return pid if pid and pid > 0 else None


def up(ws: Workspace, *, port: int | None = None, slots: int | None = None,
       scheduler: bool = True) -> RuntimeStatus:
    """Start (or reuse) the local Flink cluster, the job server and the scheduler daemon.

    The three start at once: the job server and the scheduler import and open their files
    while Flink boots, and the job server starts its JVM only once the cluster answers (so
    it does not slow the cluster's start down). Returns when the cluster answers with a
    task manager and the other two run; if the cluster cannot start, what this call started
    is stopped again."""
    from ultron_nb.engines.flink import jobclient
    from ultron_nb.engines.flink.cluster import cluster_status
    from ultron_nb.errors import ClusterError
    from ultron_nb.scheduler.daemon import await_daemon, spawn_daemon

    ws.db  # noqa: B018 - create the store before the daemons read it
    settings = ws.settings
    local = None if settings.flink_url else _cluster(ws, port, slots)
    url = settings.flink_url or f"http://127.0.0.1:{local.rest_port}"
    server = jobclient.spawn_server(settings, warm_after=url)
    daemon = spawn_daemon(settings) if scheduler else None
    try:
        if local is None:
            cluster = cluster_status(settings)
            if not cluster.running:
                raise ClusterError(f"the remote Flink cluster at {cluster.url} does not "
                                   f"answer: {cluster.message}")
        else:
            cluster = local.up()
        server_pid = jobclient.await_started(settings, server)
        pid = await_daemon(settings, daemon) if daemon is not None else None
    except BaseException:
        _stop_started(ws, server, daemon)
        raise
    return RuntimeStatus(cluster, pid, jobserver_pid=server_pid)


def _stop_started(ws: Workspace, server: Any, daemon: Any) -> None:
    """A failed ``up``: stop the job server and the scheduler it started (not ones that
    were running before)."""
    from ultron_nb.engines.flink import jobclient
    from ultron_nb.scheduler import stop_daemon
    from ultron_nb.scheduler.daemon import await_daemon

    if daemon is not None and not isinstance(daemon, int):
        try:
            await_daemon(ws.settings, daemon)
            stop_daemon(ws.settings)
        except Exception:  # the failure being reported matters more
            log.exception("stopping the scheduler after a failed start")
    if not isinstance(server, int):
        try:
            jobclient.await_started(ws.settings, server)
            jobclient.stop_server(ws.settings)
        except Exception:
            log.exception("stopping the job server after a failed start")


def down(ws: Workspace, *, port: int | None = None) -> RuntimeStatus:
    """Stop the scheduler daemon, the job server and the local Flink cluster (and the jobs
    on it)."""
    from ultron_nb.engines.flink import jobclient
    from ultron_nb.engines.mlflow import ui as mlflow_ui
    from ultron_nb.scheduler import stop_daemon

    notes = []
    if stop_daemon(ws.settings):
        notes.append("scheduler stopped")
    if jobclient.stop_server(ws.settings):
        notes.append("job server stopped")
    if mlflow_ui.stop(ws.settings):
        notes.append("MLflow UI stopped")
    if ws.settings.flink_url:
        from ultron_nb.engines.flink.cluster import cluster_status

        cluster = cluster_status(ws.settings)
        notes.append(f"the remote cluster at {cluster.url} is left running")
        return RuntimeStatus(cluster, None, notes)
    cluster = _cluster(ws, port, None)
    if cluster.down():
        notes.append("local Flink cluster stopped")
    return RuntimeStatus(cluster.status(), None, notes)


def status(ws: Workspace, *, port: int | None = None) -> RuntimeStatus:
    """The cluster experiments run on, the scheduler and the job server."""
    from ultron_nb.engines.flink import jobclient
    from ultron_nb.engines.flink.cluster import cluster_status

    if port and not ws.settings.flink_url:
        cluster = _cluster(ws, port, None).status()
    else:
        cluster = cluster_status(ws.settings)
    server = jobclient.server_pid(ws.settings)
    return RuntimeStatus(cluster, _scheduler_pid(ws),
                         jobserver_pid=server if server and server > 0 else None)
