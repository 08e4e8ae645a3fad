"""Verbs for defining and looking at flows."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ultron_nb.arguments import add_node_arguments, node_kwargs
from ultron_nb.display import (
    Dot,
    Message,
    Svg,
    Table,
    flows_table,
    history_table,
    nodes_table,
)
from ultron_nb.notebook.magics import UltronMagic, help_text, verb


@verb("help", "list the verbs, or show one verb's flags")
def _help(p: argparse.ArgumentParser) -> Any:
    p.add_argument("verb", nargs="?")

    def run(m: UltronMagic, a: argparse.Namespace, _cell: str | None) -> Message:
        return Message(*help_text(a.verb).splitlines())

    return run


@verb("flow", "create or select the current flow")
def _flow(p: argparse.ArgumentParser) -> Any:
    p.add_argument("name")

    def run(m: UltronMagic, a: argparse.Namespace, _cell: str | None) -> Message:
        flow = m.workspace.flow(a.name, create=True)
        m.current_flow = a.name
        if flow.version:
            return Message(f"flow {a.name} (version {flow.version}, {len(flow)} nodes)")
        return Message(f"flow {a.name} (new: define nodes with %%ultron node NAME ...)")

    return run


@verb("node", "define or redefine a node; the cell holds its SQL, Python or columns",
      cell=True)
def _node(p: argparse.ArgumentParser) -> Any:
    add_node_arguments(p)

    def run(m: UltronMagic, a: argparse.Namespace, cell: str | None) -> Message:
        from ultron_nb.flow.build import define_node

        flow_name = m.require_flow()
        node = define_node(a.name, cell or "", **node_kwargs(a))
        existed = node.name in m.workspace.flow(flow_name, create=True)
        flow = m.workspace.define(flow_name, node)
        inputs = flow[node.name].data_inputs()
        reads = f", reads {', '.join(inputs)}" if inputs else ""
        verb_ = "redefined" if existed else "defined"
        return Message(f"{verb_} {node.label} node {node.name}{reads} "
                       f"(flow {flow_name} version {flow.version})")

    return run


@verb("rm", "remove a node that nothing depends on")
def _rm(p: argparse.ArgumentParser) -> Any:
    p.add_argument("node")

    def run(m: UltronMagic, a: argparse.Namespace, _cell: str | None) -> Message:
        flow = m.workspace.remove(m.require_flow(), a.node)
        return Message(f"removed node {a.node} (flow {flow.name} version {flow.version})")

    return run


@verb("nodes", "list the nodes of the current flow")
def _nodes(p: argparse.ArgumentParser) -> Any:
    p.add_argument("--flow")

    def run(m: UltronMagic, a: argparse.Namespace, _cell: str | None) -> Table:
        from ultron_nb.services.local_topics import topic_paths

        flow = m.workspace.flow(a.flow or m.require_flow())
        return nodes_table(flow, topic_paths(m.workspace, flow))

    return run


@verb("show", "render the flow's DAG (SVG inline, or DOT text)")
def _show(p: argparse.ArgumentParser) -> Any:
    p.add_argument("flow", nargs="?")
    p.add_argument("--format", dest="fmt", choices=("svg", "dot"), default="svg")
    p.add_argument("--version", type=int)
    p.add_argument("--out", help="also write the rendering to this file")
    p.add_argument("--experiment", help="colour by this experiment (default: the latest)")
    p.add_argument("--static", action="store_true", help="no live status")

    def run(m: UltronMagic, a: argparse.Namespace, _cell: str | None) -> Svg | Dot:
        ws = m.workspace
        flow = ws.flow(a.flow or m.require_flow(), a.version)
        decorations = {} if a.static else _live_decorations(m, flow, a.experiment)
        text = ws.render(flow, a.fmt, **decorations)
        if a.out:
            Path(a.out).write_text(text)
        return Dot(text) if a.fmt == "dot" else Svg(text, repr(flow))

    return run


def _live_decorations(m: UltronMagic, flow: Any, experiment: str | None) -> dict[str, Any]:
    """Status and watermarks of the flow's latest (or the given) experiment."""
    from ultron_nb.services import live

    return live.decorations(m.workspace, flow, experiment)


@verb("flows", "list the flows in the metadata store")
def _flows(p: argparse.ArgumentParser) -> Any:
    def run(m: UltronMagic, a: argparse.Namespace, _cell: str | None) -> Table:
        return flows_table(m.workspace.flows())

    return run


@verb("history", "list the versions of a flow")
def _history(p: argparse.ArgumentParser) -> Any:
    p.add_argument("flow", nargs="?")

    def run(m: UltronMagic, a: argparse.Namespace, _cell: str | None) -> Table:
        return history_table(m.workspace.history(a.flow or m.require_flow()))

    return run
