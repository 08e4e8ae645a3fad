"""Experiments: a flow version launched on a Flink cluster, followed, stopped, resumed.

::

    from ultron_nb import Workspace, experiments

    ws = Workspace()
    st = experiments.launch(ws, "ctr", name="base")
    experiments.stop(ws, "base", savepoint=True)
    experiments.resume(ws, "base")
    experiments.preview(ws, "label_join", experiment="base")

Everything that must outlive the kernel is in the metadata store: the experiment, its
instances and their jobs (Flink job ids, states, savepoints, errors). :func:`status` asks
Flink's REST API for the truth and writes it back, so it is right after a kernel restart.
Experiments talk to the scheduler by events only.
"""

from ultron_nb.experiments.launch import existing_instances, launch
from ultron_nb.experiments.lifecycle import restart_node, resume, stop, stop_node
from ultron_nb.experiments.preview import find_member, preview, sql
from ultron_nb.experiments.report import ExperimentStatus, NodeStatus, mask_url
from ultron_nb.experiments.status import experiment_row, list_experiments, status, watermarks

__all__ = [
    "ExperimentStatus",
    "NodeStatus",
    "existing_instances",
    "experiment_row",
    "find_member",
    "launch",
    "list_experiments",
    "mask_url",
    "preview",
    "restart_node",
    "resume",
    "sql",
    "status",
    "stop",
    "stop_node",
    "watermarks",
]
