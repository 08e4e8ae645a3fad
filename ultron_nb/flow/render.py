"""The flow as a Graphviz DOT graph, coloured by status when one is given.

Producing DOT text is pure; turning it into SVG (which runs ``dot``) is the display's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ultron_nb.flow.edges import Trigger
from ultron_nb.flow.nodes import Kind, Node, ResourceType

if TYPE_CHECKING:  # the graph imports this module to draw itself
    from ultron_nb.flow.graph import Flow

STATUS_COLORS: dict[str, str] = {
    "created": "#fff3bf",
    "scheduled": "#fff3bf",
    "initializing": "#fff3bf",
    "restarting": "#ffd8a8",
    "running": "#b2f2bb",
    "failing": "#ffc9c9",
    "failed": "#ff8787",
    "finished": "#a5d8ff",
    "canceling": "#dee2e6",
    "canceled": "#dee2e6",
    "stopped": "#dee2e6",
    "suspended": "#dee2e6",
}

_SHAPES: dict[object, tuple[str, str]] = {
    ResourceType.TOPIC: ("cylinder", "#e7f5ff"),
    ResourceType.KAFKA: ("cylinder", "#e7f5ff"),
    ResourceType.DATASET: ("folder", "#f8f9fa"),
    ResourceType.FEATURE_TABLE: ("box3d", "#f3f0ff"),
    Kind.DUCKDB: ("component", "#fff9db"),
    Kind.PYTHON: ("ellipse", "#fff0f6"),
}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _node_attrs(node: Node, status: str | None, extra: str | None, shared: bool,
                failing: Sequence[str] = ()) -> str:
    if node.kind is Kind.RESOURCE:
        shape, fill = _SHAPES[node.resource_type or ResourceType.DATASET]
    elif node.kind is Kind.FLINK:
        shape, fill = "box", "#e6fcf5" if node.is_stream else "#f1f3f5"
    else:
        shape, fill = _SHAPES[node.kind]
    style = ["filled"]
    if node.kind is Kind.FLINK:
        style.append("rounded")
    if node.is_stream and node.kind is not Kind.RESOURCE:
        style.append("bold")
    if shared:
        style.append("dashed")
    lines = [node.name, f"[{node.label}]"]
    if status:
        fill = STATUS_COLORS.get(status.lower(), fill)
        lines.append(status.lower())
    if extra:
        lines.append(extra)
    if shared:
        lines.append("shared")
    border = ""
    if failing:
        lines.append("✗ " + ", ".join(failing))
        border = ', color="#e03131", penwidth=3'
    return (
        f"label={_quote(chr(10).join(lines))}, shape={shape}, style={_quote(','.join(style))}, "
        f"fillcolor={_quote(fill)}, tooltip={_quote(node.description or node.label)}{border}"
    )


def to_dot(
    flow: Flow,
    *,
    status: Mapping[str, str] | None = None,
    watermarks: Mapping[str, str] | None = None,
    shared: frozenset[str] | set[str] | None = None,
    title: str | None = None,
    quality: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """DOT text for ``flow``.

    ``status`` maps node names to job states, ``watermarks`` to a watermark text shown under
    the node, ``shared`` names nodes whose running instance is shared with another experiment,
    ``quality`` names the data-quality rules failing at a node (drawn with a red border).
    """
    quality = quality or {}
    status = status or {}
    watermarks = watermarks or {}
    shared = shared or set()
    out = [
        f"digraph {_quote(flow.name)} {{",
        "  rankdir=LR;",
        f"  graph [fontname=Helvetica, fontsize=11, label={_quote(title or flow.name)}, "
        "labelloc=t];",
        "  node [fontname=Helvetica, fontsize=10, penwidth=1.2];",
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    for node in flow:
        wm = watermarks.get(node.name)
        extra = f"wm {wm}" if wm else None
        attrs = _node_attrs(node, status.get(node.name), extra, node.name in shared,
                            quality.get(node.name, ()))
        out.append(f"  {_quote(node.name)} [{attrs}];")
    for node in flow:
        for src in node.data_inputs():
            out.append(f"  {_quote(src)} -> {_quote(node.name)} [label=\"data\"];")
        for src in flow.model_inputs(node.name):
            models = [m for m in node.models_watched if m in flow[src].models_registered]
            out.append(f"  {_quote(src)} -> {_quote(node.name)} [style=dotted, "
                       f'color="#7048e8", fontcolor="#7048e8", '
                       f"label={_quote('model ' + ', '.join(models))}];")
    for i, edge in enumerate(flow.control_edges()):
        source = edge.source
        if edge.trigger is Trigger.PERIODIC or edge.trigger is Trigger.EVENT:
            source = f"__trigger_{i}"
            shape = "note" if edge.trigger is Trigger.PERIODIC else "diamond"
            text = edge.schedule if edge.trigger is Trigger.PERIODIC else edge.event_key
            out.append(
                f"  {_quote(source)} [label={_quote(text or '')}, shape={shape}, "
                'style=filled, fillcolor="#f8f9fa", fontsize=9];'
            )
        if source is None:
            continue
        kind = ""
        if edge.trigger in (Trigger.AFTER, Trigger.STOP_AFTER) and edge.source in flow:
            a, b = flow[edge.source], flow[edge.target]
            kind = f"{'stream' if a.is_stream else 'batch'}→{'stream' if b.is_stream else 'batch'} "
        color = "#c92a2a" if edge.trigger is Trigger.STOP_AFTER else "#1c7ed6"
        out.append(
            f"  {_quote(source)} -> {_quote(edge.target)} [style=dashed, color={_quote(color)}, "
            f"fontcolor={_quote(color)}, label={_quote(kind + edge.label)}];"
        )
    out.append("}")
    return "\n".join(out) + "\n"
