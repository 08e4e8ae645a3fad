"""Data-quality rules as the flow holds them: the grammar, one-line errors, the flow version
(rules change it) and the content identity (rules do not)."""

from __future__ import annotations

import pytest

from ultron_nb.errors import FlowError, UnknownNodeError
from ultron_nb.flow import Flow, identities
from ultron_nb.flow.build import define_node
from ultron_nb.flow.quality import RuleKind, parse_rules
from ultron_nb.services.quality import first_failing

CELL = """
rows between 100 and 5000          -- rows per window
no_null_user: null_rate(user_id) <= 0.01
amount between 0 and 1000
unique(order_id, shop)
freshness <= 2 min
drift(amount) <= 0.2
check amount >= 0 OR note = 'refund -- kept'
"""


def test_every_kind_of_rule_is_read_with_its_bound() -> None:
    rules = parse_rules("orders", CELL, window="5 min")
    kinds = [r.kind for r in rules]
    assert kinds == [RuleKind.ROWS, RuleKind.NULLS, RuleKind.RANGE, RuleKind.UNIQUE,
                     RuleKind.FRESHNESS, RuleKind.DRIFT, RuleKind.CHECK]
    by = {r.name: r for r in rules}
    assert set(by) == {"rows", "no_null_user", "range_amount", "unique_order_id_shop",
                       "freshness", "drift_amount", "check"}
    assert (by["rows"].low, by["rows"].high) == (100, 5000)
    assert by["no_null_user"].columns == ("user_id",) and by["no_null_user"].high == 0.01
    assert by["unique_order_id_shop"].columns == ("order_id", "shop")
    assert by["freshness"].high == 120
    assert by["check"].predicate == "amount >= 0 OR note = 'refund -- kept'"  # quoted --
    assert all(r.window_ms == 300_000 for r in rules)
    assert by["rows"].holds(100) and not by["rows"].holds(99) and not by["rows"].holds(5001)
    assert by["unique_order_id_shop"].holds(0) and not by["unique_order_id_shop"].holds(1)


@pytest.mark.parametrize(("text", "named"), [
    ("null_rate(user_id) < 0.1", "not a rule"),
    ("rows between 9 and 1", "lower bound is above"),
    ("freshness <= soon", "freshness <= INTERVAL"),
    ("drift(x) <= high", "'high' is not a number"),
    ("rows >= 1\nrows <= 9", "two rules are named 'rows'"),
    ("-- nothing", "holds no rule"),
])
def test_a_bad_rule_is_one_line_naming_the_node(text: str, named: str) -> None:
    with pytest.raises(FlowError) as info:
        parse_rules("orders", text)
    message = str(info.value)
    assert "node 'orders'" in message and named in message and "\n" not in message


def _flow() -> Flow:
    return Flow("f", [
        define_node("src", "id STRING, v DOUBLE, ts TIMESTAMP(3)", kind="topic", time="ts"),
        define_node("a", "SELECT id, v, ts FROM src", mode="stream"),
        define_node("b", "SELECT id, v, ts FROM a", mode="stream"),
        define_node("c", "SELECT id, v FROM src", mode="stream"),
    ]).validate()


def test_rules_are_part_of_the_version_not_of_the_identity() -> None:
    flow = _flow()
    ruled = flow.with_rules("a", parse_rules("a", "unique(id)"))
    assert ruled != flow and ruled.rules["a"][0].name == "unique_id"
    assert identities(ruled) == identities(flow)
    again = Flow.from_dict(ruled.to_dict())
    assert again == ruled and again.rules == ruled.rules
    assert "rules" not in flow.to_dict()  # flows without rules keep their stored spec
    # redefining the node keeps its rules; removing it drops them
    assert ruled.with_node(define_node("a", "SELECT id, v + 1 AS v, ts FROM src",
                                       mode="stream")).rules == ruled.rules
    assert not ruled.with_node(flow["b"]).without("b").without("c").rules.get("b")
    with pytest.raises(UnknownNodeError, match="no node 'zz'"):
        flow.with_rules("zz", ())


def test_the_first_failing_node_upstream_is_the_one_to_look_at() -> None:
    flow = _flow()
    assert first_failing(flow, {"a", "b"}) == ["a"]
    assert sorted(first_failing(flow, {"b", "c"})) == ["b", "c"]
    assert first_failing(flow, set()) == []
