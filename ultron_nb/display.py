"""Face-level tables: flows, versions, nodes, experiments, events (as magics and CLI show them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ultron_nb.views import Dot, Message, Svg, Table

__all__ = ["Dot", "Message", "Svg", "Table", "flows_table", "history_table", "nodes_table"]


def _when(epoch: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch).isoformat(" ", "seconds")


def flows_table(summaries: Sequence[Any]) -> Table:
    """The flows of a store (``Workspace.flows()``)."""
    rows = [[s.name, s.version, s.nodes, s.change, _when(s.updated_at)] for s in summaries]
    return Table(["flow", "version", "nodes", "last change", "updated"], rows)


def history_table(history: Sequence[dict[str, Any]]) -> Table:
    """The versions of one flow (``Workspace.history(name)``)."""
    rows = [[h["version"], h["change"], h["nodes"], _when(h["created_at"])] for h in history]
    return Table(["version", "change", "nodes", "created"], rows)


def nodes_table(flow: Any, ws: Any = None) -> Table:
    """The nodes of a flow: kind, what they read, triggers, parameters, identity, and where
    a resource's data lives (``ws`` given)."""
    from ultron_nb.flow import Kind
    from ultron_nb.flow.identity import identities

    ids = identities(flow) if len(flow) else {}
    rows = [
        [n.name, n.label, ", ".join(n.data_inputs()),
         "; ".join(e.label + (f" {e.source}" if e.source else "") for e in n.triggers),
         ", ".join(f"{k}={v}" for k, v in n.params), ids.get(n.name, "")[:12],
         str(ws.resource_path(n)) if ws is not None and n.kind is Kind.RESOURCE else ""]
        for n in flow
    ]
    return Table(["node", "kind", "reads", "triggers", "params", "identity", "path"], rows,
                 title=f"flow {flow.name} version {flow.version}")
