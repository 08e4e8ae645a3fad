"""ultron_nb: real-time machine-learning experiments on Apache Flink, from a notebook.

In a notebook::

    %load_ext ultron_nb
    %ultron flow ctr
    %%ultron node impressions --kind topic --time ts --watermark '5 s'
    user_id STRING, item_id STRING, ts TIMESTAMP(3)

From Python: :class:`Workspace` (flows), :func:`define_node`, :mod:`ultron_nb.experiments`
(``launch``, ``status``, ``stop``, ``resume``, ``restart_node``, ``preview``, ``sql``, also
exported here), :func:`clone` and :func:`diff`, data-quality rules (:func:`define_rules`,
:func:`quality_report`), the notification service (:func:`send_event`,
:func:`latest`, :func:`listen`). The package imports lazily, so ``import ultron_nb`` and
``%load_ext ultron_nb`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ultron_nb.version import __version__ as __version__

_EXPORTS = {
    "Workspace": "ultron_nb.workspace",
    "Settings": "ultron_nb.config",
    "load_settings": "ultron_nb.config",
    "Flow": "ultron_nb.flow",
    "Node": "ultron_nb.flow",
    "ControlEdge": "ultron_nb.flow",
    "define_node": "ultron_nb.flow.build",
    "identities": "ultron_nb.flow",
    "UltronError": "ultron_nb.errors",
    "FlowError": "ultron_nb.errors",
    "NotFoundError": "ultron_nb.errors",
    "send_event": "ultron_nb.events",
    "latest": "ultron_nb.events",
    "listen": "ultron_nb.events",
    "launch": "ultron_nb.experiments",
    "status": "ultron_nb.experiments",
    "stop": "ultron_nb.experiments",
    "resume": "ultron_nb.experiments",
    "restart_node": "ultron_nb.experiments",
    "preview": "ultron_nb.experiments",
    "sql": "ultron_nb.experiments",
    "ExperimentStatus": "ultron_nb.experiments",
    "clone": "ultron_nb.services.clone",
    "diff": "ultron_nb.services.clone",
    "define_rules": "ultron_nb.services.quality",
    "quality_report": "ultron_nb.services.quality",
}

__all__ = [
    "ControlEdge",
    "ExperimentStatus",
    "Flow",
    "FlowError",
    "Node",
    "NotFoundError",
    "Settings",
    "UltronError",
    "Workspace",
    "clone",
    "define_node",
    "define_rules",
    "diff",
    "identities",
    "latest",
    "launch",
    "listen",
    "load_ipython_extension",
    "load_settings",
    "preview",
    "quality_report",
    "restart_node",
    "resume",
    "send_event",
    "sql",
    "status",
    "stop",
    "unload_ipython_extension",
]

if TYPE_CHECKING:
    from ultron_nb.config import Settings, load_settings
    from ultron_nb.errors import FlowError, NotFoundError, UltronError
    from ultron_nb.events import latest, listen, send_event
    from ultron_nb.experiments import (
        ExperimentStatus,
        launch,
        preview,
        restart_node,
        resume,
        sql,
        status,
        stop,
    )
    from ultron_nb.flow import ControlEdge, Flow, Node, identities
    from ultron_nb.flow.build import define_node
    from ultron_nb.services.clone import clone, diff
    from ultron_nb.services.quality import define_rules, quality_report
    from ultron_nb.workspace import Workspace


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ultron_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt side panel is (for ``jupyter labextension develop``)."""
    return [{"src": "labextension", "dest": "ultron_nb"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext ultron_nb``: register the ``%ultron`` magic."""
    from ultron_nb.logs import quiet_third_party
    from ultron_nb.notebook.magics import UltronMagic, load_verbs

    quiet_third_party()
    load_verbs()
    ipython.register_magics(UltronMagic(shell=ipython, parent=ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext ultron_nb``."""
    ipython.magics_manager.magics["line"].pop("ultron", None)
    ipython.magics_manager.magics["cell"].pop("ultron", None)
