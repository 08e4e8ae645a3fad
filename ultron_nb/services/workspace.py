"""The workspace: settings plus the metadata store, and the flow operations on them.

Every face (magics, CLI, server) goes through a :class:`Workspace`. A failed operation
leaves the store unchanged: a flow is validated before its new version is written, in one
transaction.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ultron_nb.config import Settings, load_settings
from ultron_nb.flow import Flow, Node
from ultron_nb.store import Database, open_database
from ultron_nb.store import flows as flow_repo

if TYPE_CHECKING:
    from ultron_nb.services.local_topics import AppendResult

log = logging.getLogger(__name__)


class Workspace:
    """Settings and metadata store of one project directory."""

    def __init__(self, settings: Settings | None = None, **overrides: Any):
        self.settings = settings or load_settings(**overrides)
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        """The metadata store (opened, and created or migrated, on first use)."""
        if self._db is None:
            self.settings.home.mkdir(parents=True, exist_ok=True)
            self._db = open_database(self.settings.database_url)
        return self._db

    @property
    def home(self) -> Path:
        return self.settings.home

    # ------------------------------------------------------------------ flows
    def flow(self, name: str, version: int | None = None, *, create: bool = False) -> Flow:
        """The latest (or given) version of flow ``name``.

        With ``create``, a flow that does not exist yet is returned empty (version 0); it is
        stored when its first node is defined.
        """
        from ultron_nb.errors import NotFoundError

        try:
            with self.db.read() as conn:
                return flow_repo.load_flow(conn, name, version)
        except NotFoundError:
            if create and version is None:
                return Flow(name, version=0)
            raise

    def flows(self) -> list[flow_repo.FlowSummary]:
        with self.db.read() as conn:
            return flow_repo.list_flows(conn)

    def history(self, name: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            return flow_repo.flow_history(conn, name)

    def save(self, flow: Flow, change: str = "") -> Flow:
        """Validate ``flow`` and store it as a new version (if it changed)."""
        flow.validate()
        with self.db.write() as conn:
            version = flow_repo.save_flow(conn, flow, change)
        return Flow(flow.name, list(flow), version=version)

    def define(self, flow_name: str, node: Node) -> Flow:
        """Add or redefine ``node`` in flow ``flow_name``; returns the new flow version."""
        with self.db.write() as conn:
            try:
                current = flow_repo.load_flow(conn, flow_name)
            except Exception:  # NotFoundError: the first node of a new flow
                current = Flow(flow_name, version=0)
            verb = "redefine" if node.name in current else "define"
            candidate = current.with_node(node).validate()
            version = flow_repo.save_flow(conn, candidate, f"{verb} {node.name}")
        return Flow(flow_name, list(candidate), version=version)

    def remove(self, flow_name: str, node_name: str) -> Flow:
        """Remove a node nothing depends on; returns the new flow version."""
        with self.db.write() as conn:
            current = flow_repo.load_flow(conn, flow_name)
            candidate = current.without(node_name).validate()
            version = flow_repo.save_flow(conn, candidate, f"remove {node_name}")
        return Flow(flow_name, list(candidate), version=version)

    # ------------------------------------------------------------------ data
    def append(self, topic_or_node: str | Path, data: Any, *, partition_by: str | None = None,
               partition: int | None = None, flow: str | None = None) -> AppendResult:
        """Append rows (a DataFrame, or a CSV / Parquet / JSON-lines file) to a local topic
        as its next segments; see :func:`ultron_nb.services.local_topics.append`."""
        from ultron_nb.services.local_topics import append

        return append(self, topic_or_node, data, partition_by=partition_by,
                      partition=partition, flow=flow)

    def render(
        self,
        flow: Flow,
        fmt: Literal["svg", "dot"] = "svg",
        **decorations: Any,
    ) -> str:
        """The flow as DOT text or SVG (SVG needs graphviz's ``dot``)."""
        from ultron_nb.engines.graphviz import dot_to_svg

        dot = flow.to_dot(**decorations)
        return dot if fmt == "dot" else dot_to_svg(dot)
