"""The flow model: nodes, data and control edges, rules and content identity. Pure; no I/O."""

from ultron_nb.flow.edges import Action, ControlEdge, Trigger, condition_holds, parse_interval
from ultron_nb.flow.graph import DataEdge, Flow
from ultron_nb.flow.identity import identities
from ultron_nb.flow.nodes import Column, Kind, Mode, Node, ResourceType, parse_columns
from ultron_nb.flow.render import to_dot

__all__ = [
    "Action",
    "Column",
    "ControlEdge",
    "DataEdge",
    "Flow",
    "Kind",
    "Mode",
    "Node",
    "ResourceType",
    "Trigger",
    "condition_holds",
    "identities",
    "parse_columns",
    "parse_interval",
    "to_dot",
]
