"""Every rule of the flow model fails with a message that names the node at fault."""

from __future__ import annotations

import pytest

from ultron_nb.errors import CycleError, DuplicateNodeError, FlowError, UnknownNodeError
from ultron_nb.flow import Flow
from ultron_nb.flow.build import define_node

from .ctr_flow import ctr_flow


def test_the_ctr_link_is_valid_and_ordered() -> None:
    flow = ctr_flow()
    order = flow.topological()
    assert order.index("impressions") < order.index("label_join") < order.index("item_features")
    assert order.index("samples") < order.index("train") < order.index("evaluate")
    edges = {(e.source, e.target) for e in flow.data_edges()}
    assert ("item_features", "samples") in edges and ("label_join", "samples") in edges
    assert ("samples", "train") in edges


def test_cycle_is_named() -> None:
    flow = Flow("f", [
        define_node("a", "x INT, ts TIMESTAMP(3)", kind="topic", time="ts"),
        define_node("b", "SELECT * FROM a UNION ALL SELECT * FROM d"),
        define_node("c", "SELECT * FROM b"),
        define_node("d", "SELECT * FROM c"),
    ])
    with pytest.raises(CycleError, match="cycle: b → c → d → b"):
        flow.validate()


def test_control_edges_take_part_in_cycles() -> None:
    flow = Flow("f", [
        define_node("a", "SELECT 1 AS x", mode="batch", after=["b"]),
        define_node("b", "SELECT 1 AS x", mode="batch", after=["a"]),
    ])
    with pytest.raises(CycleError, match=r"a → b → a|b → a → b"):
        flow.validate()


def test_unknown_input_suggests_the_closest_names() -> None:
    flow = ctr_flow().with_node(define_node("x", "SELECT * FROM impresions"))
    with pytest.raises(UnknownNodeError, match=r"node 'x': its SQL reads 'impresions'.*"
                                              r"did you mean 'impressions'"):
        flow.validate()
    flow = ctr_flow().with_node(define_node("t2", "def t2(ctx): pass", kind="python",
                                            inputs=["sample"]))
    with pytest.raises(UnknownNodeError, match=r"node 't2': --inputs reads 'sample'.*'samples'"):
        flow.validate()


def test_unknown_trigger_source() -> None:
    flow = ctr_flow().with_node(define_node("x", "SELECT 1 AS a", mode="batch",
                                            after=["trian"]))
    with pytest.raises(UnknownNodeError, match=r"node 'x': --after names 'trian'.*'train'"):
        flow.validate()


def test_duplicate_names() -> None:
    node = define_node("a", "x INT", kind="dataset")
    with pytest.raises(DuplicateNodeError, match="node 'a' is defined twice"):
        Flow("f", [node, node])


def test_batch_node_reading_an_unbounded_stream() -> None:
    flow = ctr_flow().with_node(define_node("daily", "SELECT COUNT(*) FROM label_join",
                                            kind="duckdb"))
    with pytest.raises(FlowError, match=r"node 'daily' \(duckdb\) reads the unbounded stream "
                                        r"'label_join'; add --bounded"):
        flow.validate()
    ctr_flow().with_node(define_node("daily", "SELECT COUNT(*) FROM label_join", kind="duckdb",
                                     bounded=True)).validate()
    ctr_flow().with_node(define_node("daily", "SELECT COUNT(*) FROM label_join", kind="duckdb",
                                     after=["label_join"], boundary="1d")).validate()


def test_stream_to_batch_after_needs_a_boundary() -> None:
    flow = ctr_flow().with_node(define_node("h", "SELECT COUNT(*) FROM label_join",
                                            kind="duckdb", bounded=True, after=["label_join"]))
    with pytest.raises(FlowError, match="stream→batch edge; give --boundary"):
        flow.validate()


@pytest.mark.parametrize("every", ["61 * * * *", "5 parsecs", "0s", "* * *"])
def test_invalid_schedules(every: str) -> None:
    with pytest.raises(FlowError, match="node 'p'"):
        define_node("p", "SELECT 1 AS a", mode="batch", every=every)


@pytest.mark.parametrize("every", ["*/5 * * * *", "0 3 * * 1-5", "30s", "5m", "1h", "2d"])
def test_valid_schedules(every: str) -> None:
    define_node("p", "SELECT 1 AS a", mode="batch", every=every)


def test_invalid_boundary_and_conditions() -> None:
    with pytest.raises(FlowError, match="invalid --boundary 'hourly'"):
        define_node("p", "SELECT 1 AS a", mode="batch", after=["x"], boundary="hourly")
    with pytest.raises(FlowError, match="unknown condition 'bigger'"):
        define_node("p", "SELECT 1 AS a", mode="batch", on_event="k", when="bigger")
    with pytest.raises(FlowError, match="uses Call"):
        define_node("p", "SELECT 1 AS a", mode="batch", on_event="k",
                    when="json:__import__('os')")
    with pytest.raises(FlowError, match="--when needs --on-event"):
        define_node("p", "SELECT 1 AS a", mode="batch", when="changed")


def test_python_node_needs_a_callable() -> None:
    with pytest.raises(FlowError, match="node 'train': a python node needs a callable"):
        define_node("train", "def a(ctx): pass\ndef b(ctx): pass", kind="python")
    with pytest.raises(FlowError, match=r"--fn 'fit' is not defined in the cell \(functions: a\)"):
        define_node("train", "def a(ctx): pass", kind="python", fn="fit")
    with pytest.raises(FlowError, match="Python syntax error on line 1"):
        define_node("train", "def (:", kind="python")
    assert define_node("train", "def a(ctx): pass\ndef train(ctx): pass",
                       kind="python").function == "train"


def test_resource_rules() -> None:
    with pytest.raises(FlowError, match="node 'r': --time 'when' is not a column"):
        define_node("r", "a INT, ts TIMESTAMP(3)", kind="topic", time="when")
    with pytest.raises(FlowError, match="node 'r': a resource needs columns"):
        define_node("r", "", kind="topic")
    with pytest.raises(FlowError, match="node 'r': a kafka resource needs --option topic"):
        define_node("r", "a INT", kind="kafka")
    with pytest.raises(FlowError, match="node 'r': a feature table needs --key and --time"):
        define_node("r", "a INT", kind="feature_table")
    with pytest.raises(FlowError, match="cannot read column definition"):
        define_node("r", "justaname", kind="topic")
    with pytest.raises(FlowError, match="invalid --watermark"):
        define_node("r", "a INT, ts TIMESTAMP(3)", kind="topic", time="ts", watermark="soon")


def test_parameters_must_be_declared() -> None:
    with pytest.raises(FlowError, match=r"node 'j': the body uses \$\{win\} but no --param win"):
        define_node("j", "SELECT * FROM t WHERE x < ${win}")


def test_bad_names_kinds_and_modes() -> None:
    with pytest.raises(FlowError, match="invalid node name '1st'"):
        define_node("1st", "SELECT 1 AS a")
    with pytest.raises(FlowError, match="unknown --kind 'spark'"):
        define_node("a", "SELECT 1", kind="spark")
    with pytest.raises(FlowError, match="a duckdb node runs in batch mode only"):
        define_node("a", "SELECT 1", kind="duckdb", mode="stream")


def test_remove_refuses_while_used() -> None:
    flow = ctr_flow()
    with pytest.raises(FlowError, match="cannot remove node 'label_join': 'item_features', "
                                        "'samples' depend on it"):
        flow.without("label_join")
    assert "evaluate" not in flow.without("evaluate")


def test_effective_params_and_bad_overrides() -> None:
    flow = ctr_flow()
    params = flow.effective_params({"train.lr": "0.1", "label_window": "20"})
    assert params["train"] == {"lr": "0.1"}
    assert params["label_join"] == {"label_window": "20"}
    with pytest.raises(FlowError, match=r"node 'train' has no parameter 'lrr'.*parameters: lr"):
        flow.effective_params({"train.lrr": "1"})
    with pytest.raises(UnknownNodeError, match="has no node 'trian'"):
        flow.effective_params({"trian.lr": "1"})


def test_round_trip_through_dict() -> None:
    flow = ctr_flow()
    again = Flow.from_dict(flow.to_dict())
    assert again == flow
    assert [n.triggers for n in again] == [n.triggers for n in flow]
