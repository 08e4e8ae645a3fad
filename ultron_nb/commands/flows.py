"""Verbs that define and look at flows."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ultron_nb.arguments import add_node_arguments, node_kwargs
from ultron_nb.commands.registry import Face, Run, command, flow_of, help_text
from ultron_nb.views import Dot, Message, Svg


# ------------------------------------------------------------------ flows
@command("help", "list the verbs, or show one verb's flags")
def _help(p: argparse.ArgumentParser) -> Run:
    p.add_argument("verb", nargs="?")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        return Message(*help_text(a.verb, getattr(face, "face_name", "magic")).splitlines())

    return run


@command("flow", "create or select the current flow", faces=("magic",))
def _flow(p: argparse.ArgumentParser) -> Run:
    p.add_argument("name")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        flow = face.workspace.flow(a.name, create=True)
        face.select_flow(a.name)
        if flow.version:
            return Message(f"flow {a.name} (version {flow.version}, {len(flow)} nodes)")
        return Message(f"flow {a.name} (new: define nodes with %%ultron node NAME ...)")

    return run


@command("node", "define or redefine a node; the body holds its SQL, Python or columns",
         cell=True, flow="option")
def _node(p: argparse.ArgumentParser) -> Run:
    add_node_arguments(p)

    def run(face: Face, a: argparse.Namespace, body: str | None) -> Any:
        from ultron_nb.flow.build import define_node

        flow_name = flow_of(face, a)
        ws = face.workspace
        node = define_node(a.name, body or "", **node_kwargs(a))
        existed = node.name in ws.flow(flow_name, create=True)
        flow = ws.define(flow_name, node)
        inputs = flow[node.name].data_inputs()
        reads = f", reads {', '.join(inputs)}" if inputs else ""
        return Message(f"{'redefined' if existed else 'defined'} {node.label} node "
                       f"{node.name}{reads} (flow {flow_name} version {flow.version})")

    return run


@command("rule", "set a node's data-quality rules, one per line (an empty cell removes "
                 "them)", cell=True, flow="option")
def _rule(p: argparse.ArgumentParser) -> Run:
    p.add_argument("node")
    p.add_argument("--window", help="event-time window of a stream node's rules "
                                    "(default 1 min)")

    def run(face: Face, a: argparse.Namespace, body: str | None) -> Any:
        from ultron_nb.services.quality import define_rules

        flow_name = flow_of(face, a)
        flow = define_rules(face.workspace, flow_name, a.node, body or "", window=a.window)
        rules = flow.rules.get(a.node, ())
        names = ", ".join(r.name for r in rules) or "none"
        return Message(f"node {a.node}: {len(rules)} rule(s) ({names}) (flow {flow_name} "
                       f"version {flow.version}; running nodes are not restarted)")

    return run


@command("rm", "remove a node that nothing depends on", flow="option")
def _rm(p: argparse.ArgumentParser) -> Run:
    p.add_argument("node")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        flow = face.workspace.remove(flow_of(face, a), a.node)
        return Message(f"removed node {a.node} (flow {flow.name} version {flow.version})")

    return run


@command("nodes", "list the nodes of a flow", flow="positional")
def _nodes(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--version", type=int, help="a version of the flow (default: the latest)")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.display import nodes_table

        ws = face.workspace
        return nodes_table(ws.flow(flow_of(face, a), a.version), ws)

    return run


@command("show", "render a flow's DAG (SVG, or DOT text), coloured by live status",
         flow="positional")
def _show(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--format", dest="fmt", choices=("svg", "dot"), default="svg")
    p.add_argument("--version", type=int, help="a version of the flow (default: the latest)")
    p.add_argument("-o", "--out", help="also write the rendering to this file")
    p.add_argument("--experiment", help="colour by this experiment (default: the latest)")
    p.add_argument("--static", action="store_true", help="no live status")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import live

        ws = face.workspace
        flow = ws.flow(flow_of(face, a), a.version)
        decorations = {} if a.static else live.decorations(ws, flow, a.experiment)
        text = ws.render(flow, a.fmt, **decorations)
        note = ""
        if a.out:
            Path(a.out).write_text(text)
            note = f"wrote {a.out}"
        return Dot(text) if a.fmt == "dot" else Svg(text, repr(flow), note)

    return run


@command("flows", "list the flows in the metadata store")
def _flows(p: argparse.ArgumentParser) -> Run:
    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.display import flows_table

        return flows_table(face.workspace.flows())

    return run


@command("history", "list the versions of a flow", flow="positional")
def _history(p: argparse.ArgumentParser) -> Run:
    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.display import history_table

        return history_table(face.workspace.history(flow_of(face, a)))

    return run


# ------------------------------------------------------------------ feeding topics
@command("append", "append rows to a local topic: --file (CSV, Parquet, JSON lines) or, in a "
                   "notebook, --frame VAR (a DataFrame)")
def _append(p: argparse.ArgumentParser) -> Run:
    p.add_argument("topic", help="a topic node (of --flow, else of any flow) or a topic directory")
    p.add_argument("--file", help="a CSV, Parquet or JSON-lines file")
    p.add_argument("--frame", metavar="VAR", help="in a notebook: the DataFrame variable VAR")
    p.add_argument("--partition", type=int, help="write every row to partition N")
    p.add_argument("--partition-by", metavar="COLUMN",
                   help="hash rows to partitions by COLUMN (default: the topic's --key)")
    p.add_argument("--flow", help="the flow that defines TOPIC (default: any flow)")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.errors import ConfigError

        if (a.file is None) == (a.frame is None):
            raise ConfigError("append needs one of --file F or --frame VAR")
        data = a.file if a.file is not None else _frame(face, a.frame)
        return face.workspace.append(a.topic, data, partition_by=a.partition_by,
                                     partition=a.partition, flow=a.flow)

    return run


def _frame(face: Face, name: str) -> Any:
    """The DataFrame in the session variable ``name``."""
    import pandas as pd

    from ultron_nb.errors import ConfigError

    value = face.variable(name)
    if not isinstance(value, pd.DataFrame):
        raise ConfigError(f"--frame {name}: {name!r} is a {type(value).__name__}, not a "
                          "pandas DataFrame")
    return value
