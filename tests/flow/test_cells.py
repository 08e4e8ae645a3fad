"""A node written back as its ``%%ultron node`` cell defines the same node: every shape of
node, read by the node verb's own parser (the magic's), gives the same value and identity."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

from tests.experiments.rides import define_rides
from tests.flow.ctr_flow import ctr_flow
from ultron_nb.arguments import node_kwargs
from ultron_nb.errors import FlowError
from ultron_nb.flow import Flow
from ultron_nb.flow.build import define_node
from ultron_nb.flow.cells import escape_line, node_cell, unescape_line
from ultron_nb.flow.identity import identities
from ultron_nb.services.datagen import clicklog_nodes


def _parser() -> Any:
    from ultron_nb.commands import COMMANDS, build_parser
    from ultron_nb.notebook.magics import _Parser

    parser = _Parser(prog="%%ultron node", add_help=False)
    build_parser(COMMANDS["node"], parser)
    return parser


def redefine(cell: str) -> Any:
    """What the node verb builds from ``cell`` (its line as IPython hands it over)."""
    first, _, body = cell.partition("\n")
    assert first.startswith("%%ultron node ")
    args = _parser().parse_args(shlex.split(unescape_line(first[len("%%ultron node "):])))
    return define_node(args.name, body, **node_kwargs(args))


class _Recorder:
    """Collects nodes as ``ws.define`` would (for the rides flow's definer)."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []

    def define(self, _flow: str, node: Any) -> None:
        self.nodes.append(node)

    def flow(self, name: str) -> Flow:
        return Flow(name, self.nodes)


ODD = [
    define_node("weird cols".replace(" ", "_"), "`user id` STRING, m MAP<STRING, INT>, "
                "d DECIMAL(10, 2), ts TIMESTAMP_LTZ(3)", kind="dataset", path="data/x.csv",
                fmt="csv", options={"csv.field-delimiter": ";"}),
    define_node("k", "id BIGINT, ts TIMESTAMP(3)", kind="kafka", time="ts", watermark="2 s",
                key="id", options={"topic": "t", "bootstrap.servers": "127.0.0.1:9092"}),
    define_node("f", "id BIGINT, v DOUBLE, ts TIMESTAMP(3)", kind="feature_table", key="id",
                time="ts"),
    define_node("b", "SELECT * FROM k WHERE id > ${lo}", mode="batch", bounded=True,
                params={"lo": "it's {odd} $value"}, description="odd {braces} and 'quotes'",
                after=["k"], on_failure=False),
    define_node("two", "def helper(x):\n    return x\n\ndef main(ctx):\n    '''doc'''\n"
                "    return helper(ctx)\n", kind="python", fn="main", inputs=["b", "f"],
                every="*/5 * * * *", action="restart"),
    define_node("ev", "def ev(ctx):\n    return 1", kind="python", on_event="model/x",
                when="json:value['auc'] > 0.7", stop_after=["k"]),
    define_node("dq", "SELECT COUNT(*) AS n FROM b", kind="duckdb", after=["two", "b"],
                on_failure=True),
]


def _flows(tmp_path: Path) -> list[Flow]:
    rides = _Recorder()
    define_rides(rides, tmp_path / "ledger")
    return [ctr_flow(), Flow("clicks", clicklog_nodes(partitions=3)), rides.flow("rides"),
            Flow("odd", ODD)]


def test_every_node_cell_defines_the_same_node(tmp_path: Path) -> None:
    for flow in _flows(tmp_path):
        rebuilt = Flow(flow.name, [redefine(node_cell(n)) for n in flow])
        for node in flow:
            assert rebuilt[node.name] == node, node_cell(node)
        assert identities(rebuilt) == identities(flow)


def test_a_cell_reads_as_written() -> None:
    cell = node_cell(ODD[3], flow="odd")
    first = cell.splitlines()[0]
    assert first.startswith("%%ultron node b --mode batch ")
    assert "{{odd}}" in first and "--flow odd" in first  # IPython undoubles the braces
    assert cell.endswith("SELECT * FROM k WHERE id > ${lo}")  # the body is not escaped
    resource = node_cell(ODD[1]).splitlines()
    assert resource[0] == ("%%ultron node k --kind kafka --option bootstrap.servers=127.0.0.1:9092"
                           " --option topic=t --time ts --watermark '2 s' --key id")
    assert resource[1:] == ["id BIGINT,", "ts TIMESTAMP(3)"]


def test_the_magic_line_survives_ipython_expansion(ip: Any) -> None:
    """IPython expands ``{expr}`` in a magic's line: the written line comes through exactly."""
    words = ["b", "--param", "lo=it's {odd} $value", "--description", "{1+1} $HOME",
             "--param", "x='$odd' {{y}} ${value}", "--when", "json:value['a'] > 1"]
    line = escape_line(words)
    ip.user_ns.update(odd="EXPANDED", value="EXPANDED", HOME="EXPANDED")
    assert shlex.split(ip.var_expand(line)) == words
    assert shlex.split(unescape_line(line)) == words


def test_what_flags_cannot_say_is_refused() -> None:
    from ultron_nb.flow.edges import Action, ControlEdge, Trigger
    from ultron_nb.flow.nodes import Kind, Mode, Node

    spaced = Node("x", Kind.FLINK, "SELECT 1", mode=Mode.STREAM, params=(("p", " a "),))
    with pytest.raises(FlowError, match="cannot be written as a flag"):
        node_cell(spaced)
    mixed = Node("y", Kind.PYTHON, "def y(ctx):\n    pass", mode=Mode.BATCH, function="y",
                 triggers=(ControlEdge("y", Trigger.PERIODIC, None, Action.START, "5m"),
                           ControlEdge("y", Trigger.EVENT, None, Action.RESTART,
                                       event_key="k")))
    with pytest.raises(FlowError, match="different actions"):
        node_cell(mixed)
    with pytest.raises(UsageError):
        _parser().parse_args(["x", "--bogus"])
