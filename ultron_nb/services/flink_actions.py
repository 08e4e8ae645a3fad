"""Flink node actions for the scheduler (:class:`ultron_nb.services.scheduler.NodeActions`).

A thin adapter over :mod:`ultron_nb.services.experiments`: ``start`` compiles and submits the
node's job, ``restart`` starts it afresh, ``stop`` cancels it, ``state`` asks Flink. Every
status read publishes ``status/<experiment>/<node>`` (and stream watermarks) when they
change, and :meth:`FlinkActions.maintain` reads the status of active experiments so the
scheduler sees Flink's state changes (a job that finishes or fails by itself).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ultron_nb.errors import UltronError

if TYPE_CHECKING:
    from ultron_nb.config import Settings
    from ultron_nb.services.scheduler import NodeTarget
    from ultron_nb.store import Database

log = logging.getLogger(__name__)

#: Flink states (lower case) → the scheduler's vocabulary.
STATE_MAP = {
    "created": "running", "initializing": "running", "scheduled": "running",
    "running": "running", "restarting": "running", "failing": "running",
    "reconciling": "running", "submitting": "running",
    "finished": "finished",
    "failed": "failed", "lost": "failed",
    "stopped": "stopped", "canceled": "stopped", "canceling": "stopped",
    "suspended": "stopped",
}


def _ms_text(value: Any) -> str:
    """A boundary payload value (epoch ms) as SQL timestamp text."""
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return str(value)
    return (datetime(1970, 1, 1) + timedelta(milliseconds=ms)).strftime(
        "%Y-%m-%d %H:%M:%S.%f")[:-3]


class FlinkActions:
    """Runs Flink SQL nodes for the scheduler."""

    claims_triggers = False

    def __init__(self, db: Database, settings: Settings, *, maintain_every: float = 2.0):
        from ultron_nb.services.workspace import Workspace

        self.ws = Workspace(settings)
        self.ws._db = db  # share the scheduler's connection to the store
        self.maintain_every = maintain_every
        self._last_maintain = 0.0

    def _params(self, node: NodeTarget) -> dict[str, str]:
        params = dict(node.params)
        for key in ("window_start", "window_end"):
            if key in node.payload:
                params[key] = _ms_text(node.payload[key])
        return params

    def start(self, experiment: str, node: NodeTarget) -> None:
        from ultron_nb.services import experiments

        experiments.start_node(self.ws, experiment, node.name, params=self._params(node))

    def restart(self, experiment: str, node: NodeTarget) -> None:
        from ultron_nb.services import experiments

        experiments.restart_node(self.ws, experiment, node.name, params=self._params(node))

    def stop(self, experiment: str, node: NodeTarget) -> None:
        from ultron_nb.services import experiments

        experiments.stop_node(self.ws, experiment, node.name)

    def state(self, experiment: str, node: NodeTarget) -> str | None:
        from ultron_nb.services import experiments

        st = experiments.status(self.ws, experiment)
        try:
            current = st[node.name].state
        except UltronError:
            return None
        return STATE_MAP.get(current)

    def maintain(self) -> None:
        """Read the status of active experiments (publishing state and watermark events)."""
        from ultron_nb.services import experiments

        now = time.monotonic()
        if now - self._last_maintain < self.maintain_every:
            return
        self._last_maintain = now
        for exp in experiments.list_experiments(self.ws):
            if exp.state in experiments.DONE or exp.state in ("waiting",):
                continue
            try:
                experiments.status(self.ws, exp.name)
            except UltronError as exc:
                log.info("status of %s unavailable: %s", exp.name, exc)


def make_actions(db: Database, settings: Settings) -> FlinkActions:
    """The scheduler's factory (``ultron_nb.services.flink_actions:make_actions``)."""
    return FlinkActions(db, settings)
