"""Live decorations of a flow's DAG: the status and watermark of each node, and the
data-quality rules failing at it.

They come from the flow's latest experiment, asked from Flink when it answers; otherwise from
the states last recorded in the store.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ultron_nb.errors import UltronError

if TYPE_CHECKING:
    from ultron_nb.experiments import ExperimentStatus
    from ultron_nb.flow import Flow
    from ultron_nb.workspace import Workspace

log = logging.getLogger(__name__)


def decorations(ws: Workspace, flow: Flow, experiment: str | None = None) -> dict[str, Any]:
    """Keyword arguments for :func:`ultron_nb.flow.render.to_dot` (status, watermarks,
    shared, title); empty when the flow never ran."""
    from ultron_nb import experiments

    if experiment is None:
        runs = experiments.list_experiments(ws, flow.name)
        if not runs:
            return {}
        experiment = runs[0].name
    try:
        st = experiments.status(ws, experiment)
    except UltronError as exc:  # cluster gone: show what the store knows
        log.info("live status of %s unavailable: %s", experiment, exc)
        return {"title": f"{flow.name} — experiment {experiment} (status unavailable)"}
    return live_decorations(ws, flow, st)


def live_decorations(ws: Workspace, flow: Flow, st: ExperimentStatus) -> dict[str, Any]:
    """:func:`status_decorations` and the data-quality rules failing at each node."""
    from ultron_nb.services.quality import failing

    return {**status_decorations(flow, st), "quality": failing(ws, st.name)}


def status_decorations(flow: Flow, st: ExperimentStatus) -> dict[str, Any]:
    """The decorations of ``flow`` from a status already asked (no call to Flink)."""
    return {
        "status": st.node_states(),
        "watermarks": st.watermark_texts(),
        "shared": st.shared_nodes(),
        "title": f"{flow.name} — experiment {st.name}: {st.state}",
    }
