"""The processes a workspace runs: the local Flink cluster and the scheduler daemon.

``up`` starts both (reusing what already runs), ``down`` stops both, by their own PIDs
(and the MLflow UI, when ``%ultron mlflow ui`` started one).
With a remote cluster configured (``flink_url``), ``up`` only checks that it answers and
starts the scheduler.
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

    def __str__(self) -> str:
        sched = (f"scheduler: running (pid {self.scheduler_pid})" if self.scheduler_pid
                 else "scheduler: not running")
        return "\n".join([str(self.cluster), sched, *self.notes])

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
    """Start (or reuse) the local Flink cluster and the scheduler daemon."""
    from ultron_nb.engines.flink.cluster import cluster_status
    from ultron_nb.errors import ClusterError

    ws.db  # noqa: B018 - create the store before the daemons read it
    if ws.settings.flink_url:
        cluster = cluster_status(ws.settings)
        if not cluster.running:
            raise ClusterError(f"the remote Flink cluster at {ws.settings.flink_url} does not "
                               f"answer: {cluster.message}")
    else:
        cluster = _cluster(ws, port, slots).up()
    pid = None
    if scheduler:
        from ultron_nb.scheduler import start_daemon

        pid = start_daemon(ws.settings)
    return RuntimeStatus(cluster, pid)


def down(ws: Workspace, *, port: int | None = None) -> RuntimeStatus:
    """Stop the scheduler daemon and the local Flink cluster (and the jobs on it)."""
    from ultron_nb.engines.mlflow import ui as mlflow_ui
    from ultron_nb.scheduler import stop_daemon

    notes = []
    if stop_daemon(ws.settings):
        notes.append("scheduler stopped")
    if mlflow_ui.stop(ws.settings):
        notes.append("MLflow UI stopped")
    if ws.settings.flink_url:
        notes.append(f"the remote cluster at {ws.settings.flink_url} is left running")
        from ultron_nb.engines.flink.cluster import cluster_status

        return RuntimeStatus(cluster_status(ws.settings), None, notes)
    cluster = _cluster(ws, port, None)
    if cluster.down():
        notes.append("local Flink cluster stopped")
    return RuntimeStatus(cluster.status(), None, notes)


def status(ws: Workspace, *, port: int | None = None) -> RuntimeStatus:
    """The cluster experiments run on, and the scheduler."""
    from ultron_nb.engines.flink.cluster import cluster_status

    if port and not ws.settings.flink_url:
        cluster = _cluster(ws, port, None).status()
    else:
        cluster = cluster_status(ws.settings)
    return RuntimeStatus(cluster, _scheduler_pid(ws))
