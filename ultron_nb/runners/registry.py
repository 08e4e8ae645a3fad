"""Which runner runs which node kind: kind → ``module:Class``, loaded on first use.

The table holds module paths, not imports, so the scheduler can load runners without
depending on them (and a runner that cannot be imported disables its kind only, with the
reason logged). Add a kind by adding a line here.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from ultron_nb.errors import EngineError

if TYPE_CHECKING:
    from ultron_nb.config import Settings
    from ultron_nb.runners.base import NodeRunner
    from ultron_nb.store import Database
    from ultron_nb.workspace import Workspace

log = logging.getLogger(__name__)

#: Node kind → the runner class that runs it.
RUNNERS: dict[str, str] = {
    "flink": "ultron_nb.runners.flink_node:FlinkRunner",
    "python": "ultron_nb.runners.python_node:PythonRunner",
    "duckdb": "ultron_nb.runners.duckdb_node:DuckDBRunner",
}


def runner_class(kind: str) -> type[NodeRunner]:
    """The runner class of ``kind``; EngineError when there is none."""
    spec = RUNNERS.get(str(kind))
    if spec is None:
        raise EngineError(f"no runner runs {kind} nodes (runners: {', '.join(sorted(RUNNERS))})")
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


class Runners:
    """One runner per kind for a workspace, created on first use, closed together."""

    def __init__(self, ws: Workspace, kinds: dict[str, str] | None = None):
        self.ws = ws
        self.table = dict(RUNNERS if kinds is None else kinds)
        self._made: dict[str, NodeRunner] = {}

    @classmethod
    def for_store(cls, settings: Settings, db: Database,
                  kinds: dict[str, str] | None = None) -> Runners:
        """Runners of a workspace made of ``settings`` and an open store (the daemon's)."""
        from ultron_nb.workspace import Workspace

        return cls(Workspace(settings, db=db), kinds)

    @classmethod
    def of(cls, ws: Workspace, runners: dict[str, NodeRunner]) -> Runners:
        """Runners given as instances (tests plug recording runners in this way)."""
        made = cls(ws, {kind: f"<given>:{type(r).__name__}" for kind, r in runners.items()})
        made._made.update(runners)
        return made

    def __contains__(self, kind: object) -> bool:
        return str(kind) in self.table

    def get(self, kind: str) -> NodeRunner:
        kind = str(kind)
        runner = self._made.get(kind)
        if runner is None:
            spec = self.table.get(kind)
            if spec is None:
                raise EngineError(f"no runner runs {kind} nodes (runners: "
                                  f"{', '.join(sorted(self.table))})")
            module_name, _, attr = spec.partition(":")
            cls = getattr(importlib.import_module(module_name), attr)
            runner = self._made[kind] = cls(self.ws)
        return runner

    def made(self) -> list[NodeRunner]:
        return list(self._made.values())

    def close(self) -> None:
        for runner in self._made.values():
            try:
                runner.close()
            except Exception:  # closing one must not keep the others open
                log.exception("closing the %s runner failed", runner.kind)
        self._made.clear()
