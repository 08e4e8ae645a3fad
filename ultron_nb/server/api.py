"""The library calls the server makes: one function per route, each one call into ultron_nb.

Every import of the library by the server extension is in this module, so that a library
module that moves is re-pointed here and nowhere else. Functions run in worker threads (never
on the event loop) and raise :class:`ultron_nb.errors.UltronError` for a user's mistake.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ultron_nb import events as _events
from ultron_nb import experiments as _experiments
from ultron_nb.config import load_settings
from ultron_nb.engines.graphviz import dot_to_svg
from ultron_nb.errors import (
    ClusterError,
    ConfigError,
    DataError,
    EngineError,
    FlowError,
    JobFailedError,
    NotFoundError,
    SqlError,
    StoreError,
    UltronError,
)
from ultron_nb.experiments import savepoints as _savepoints
from ultron_nb.flow.build import parse_pairs
from ultron_nb.flow.render import STATUS_COLORS
from ultron_nb.services import clone as _clone
from ultron_nb.services import models as _models
from ultron_nb.services import quality as _quality
from ultron_nb.services.live import live_decorations as _decorations
from ultron_nb.version import __version__
from ultron_nb.workspace import Workspace

__all__ = [
    "ClusterError",
    "ConfigError",
    "DataError",
    "EngineError",
    "FlowError",
    "JobFailedError",
    "NotFoundError",
    "SqlError",
    "StoreError",
    "UltronError",
    "Workspace",
    "clone",
    "dag_svg",
    "diff",
    "events",
    "experiment",
    "experiment_target",
    "experiments",
    "flow",
    "flows",
    "info",
    "latest_experiment",
    "model_versions",
    "models",
    "open_workspace",
    "parse_overrides",
    "promote_model",
    "quality",
    "restart_node",
    "resume",
    "savepoints",
    "stop",
]

def open_workspace(root_dir: str | Path, home: str | None = None) -> Workspace:
    """The workspace of the server's root directory (environment and pyproject apply)."""
    return Workspace(load_settings(Path(root_dir), home=home or None))


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["node.param=v", ...]`` as the clone's overrides (the CLI's ``--set``)."""
    return parse_pairs(pairs, flag="set")


# ------------------------------------------------------------------ reads (store only)
def info(ws: Workspace) -> dict[str, Any]:
    """What the panel shows in its header: version, store, default Flink cluster."""
    return {"version": __version__, "home": str(ws.home), "store": ws.db.safe_url,
            "flink": ws.settings.target_url,
            "state_colors": dict(STATUS_COLORS)}


def flows(ws: Workspace) -> list[Any]:
    return ws.flows()


def flow(ws: Workspace, name: str) -> tuple[Any, list[dict[str, Any]]]:
    """The latest version of flow ``name`` and its history of versions."""
    return ws.flow(name), ws.history(name)


def experiments(ws: Workspace, flow_name: str | None = None) -> list[Any]:
    """Experiments as recorded in the store, newest first (no Flink call)."""
    return _experiments.list_experiments(ws, flow_name)


def experiment_target(ws: Workspace, name: str) -> str:
    """The Flink REST URL an experiment runs on (for "does not answer" messages)."""
    for row in _experiments.list_experiments(ws):
        if row.name == name:
            return str(row.target)
    return ws.settings.target_url


def events(ws: Workspace, key: str | None, limit: int) -> list[Any]:
    return _events.recent(ws.db, key or None, limit=limit)


# ------------------------------------------------------------------ reads (ask Flink)
def experiment(ws: Workspace, name: str) -> Any:
    """The live status of one experiment, asked from its Flink cluster."""
    return _experiments.status(ws, name)


def latest_experiment(ws: Workspace, flow_name: str) -> str | None:
    """The newest experiment of ``flow_name`` (None when it never ran)."""
    rows = _experiments.list_experiments(ws, flow_name)
    return rows[0].name if rows else None


def dag_svg(ws: Workspace, flow_name: str, status: Any | None) -> str:
    """The flow's latest version as SVG, coloured by an experiment's ``status`` (asked
    already), with each stream node's watermark and failing data-quality rules; plain when
    ``status`` is None."""
    f = ws.flow(flow_name)
    return _svg(ws.render(f, "dot", **(_decorations(ws, f, status) if status else {})))


@functools.lru_cache(maxsize=64)
def _svg(dot: str) -> str:
    """Graphviz's SVG of ``dot`` (the same states and watermarks render once)."""
    return dot_to_svg(dot)


def savepoints(ws: Workspace, name: str) -> list[Any]:
    """The savepoints a clone of ``name`` may branch from (``from_savepoints``)."""
    return _savepoints.branch_choices(ws, name)


def quality(ws: Workspace, name: str) -> Any:
    """The experiment's data-quality rules, their last measurement, its recent violations
    and the node to look at first (``%ultron quality EXP``)."""
    return _quality.quality_report(ws, name)


def diff(ws: Workspace, a: str, b: str) -> Any:
    return _clone.diff(ws, a, b)


# ------------------------------------------------------------------ actions
def stop(ws: Workspace, name: str, savepoint: bool) -> Any:
    return _experiments.stop(ws, name, savepoint=savepoint)


def resume(ws: Workspace, name: str) -> Any:
    return _experiments.resume(ws, name)


def restart_node(ws: Workspace, name: str, node: str, from_savepoint: bool) -> Any:
    return _experiments.restart_node(ws, name, node, from_savepoint=from_savepoint)


def clone(ws: Workspace, source: str, name: str, overrides: Mapping[str, str], *,
          dry_run: bool, label: str | None, from_savepoints: Sequence[int] = ()) -> Any:
    """The clone's plan (``dry_run``), or launch it and return plan and status."""
    return _clone.clone(ws, source, name, overrides, dry_run=dry_run, label=label,
                        from_savepoints=from_savepoints)


# ------------------------------------------------------------------ model center
def models(ws: Workspace) -> list[dict[str, Any]]:
    """Every model of the workspace's model center with its newest versions and aliases."""
    with _models.mlflow_errors(ws):
        return _models.model_summaries(ws)


def model_versions(ws: Workspace, name: str) -> dict[str, Any]:
    """One model with its versions (newest first, up to 100)."""
    with _models.mlflow_errors(ws):
        return _models.model_summary(ws, name)


def promote_model(ws: Workspace, name: str, version: int, alias: str) -> dict[str, Any]:
    """Move ``alias`` of model ``name`` to ``version`` (as ``%ultron model promote``)."""
    with _models.mlflow_errors(ws):
        moved = _models.center(ws).promote(name, version, alias)
    return {"model": name, "version": version, "alias": moved,
            "message": str(_models.promoted(name, version, moved))}
