"""What a Python node's function receives (when it takes an argument): its run's context."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultron_nb.engines.outputs import read_frame
from ultron_nb.errors import NotFoundError
from ultron_nb.events import DEFAULT_NAMESPACE, Event, send_event
from ultron_nb.store import open_database

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class NodeContext:
    """A node run's context.

    ``params``: the node's parameters; ``inputs``: upstream node → its output as recorded
    (``input_paths`` has the ``path`` of each when there is one); ``output_path``: where this
    node may write (created); ``trigger``: what fired the run (``edge``, ``occurrence`` and,
    for a watermark boundary, ``window_start``/``window_end`` in ms; for an event, ``event``).
    ``flow``/``flow_version`` and ``instance_id`` say which definition runs (lineage).
    """

    experiment: str
    node: str
    instance_id: str
    attempt: int
    params: dict[str, str]
    inputs: dict[str, Any]
    output: Any
    trigger: dict[str, Any]
    home: Path
    log_path: Path
    db_url: str
    flow: str = ""
    flow_version: int = 0

    @property
    def input_paths(self) -> dict[str, str]:
        return {name: str(out["path"]) for name, out in self.inputs.items()
                if isinstance(out, dict) and out.get("path")}

    @property
    def output_path(self) -> Path:
        recorded = self.output.get("path") if isinstance(self.output, dict) else None
        path = Path(recorded) if recorded else self.home / "data" / self.instance_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def input_frame(self, name: str) -> pd.DataFrame:
        """Upstream ``name``'s rows as a pandas DataFrame, typed by its declared columns. A
        Flink node's output includes the rows of files still being written, so a run fired
        by a watermark sees every row up to it."""
        if name not in self.inputs:
            raise NotFoundError(f"node {self.node!r} has no input {name!r} (inputs: "
                                f"{', '.join(sorted(self.inputs)) or 'none'})")
        return read_frame(name, self.inputs[name], what=f"node {self.node!r}")

    @property
    def window(self) -> tuple[int, int] | None:
        """(start, end) epoch ms of the event-time window of a boundary trigger."""
        if "window_start" in self.trigger:
            return int(self.trigger["window_start"]), int(self.trigger["window_end"])
        return None

    def log_model(self, model: Any = None, *, name: str, **kwargs: Any) -> Any:
        """Record an MLflow run and register ``model`` as a new version of ``name`` with this
        run's lineage; see :func:`ultron_nb.engines.mlflow.center.log_model`."""
        from ultron_nb.engines.mlflow.center import log_model  # lazy: mlflow is heavy

        return log_model(self, model, name=name, **kwargs)

    @property
    def models(self) -> Any:
        """The model center in this experiment's alias scope (promote, resolve, load)."""
        from ultron_nb.engines.mlflow.center import node_center

        return node_center(self)

    def send_event(self, key: str, value: Any, *, namespace: str = DEFAULT_NAMESPACE) -> Event:
        """Send an event from this node (sender ``<experiment>/<node>``)."""
        return send_event(open_database(self.db_url), key, value, namespace=namespace,
                          sender=f"{self.experiment}/{self.node}"[:128])
