"""Compiled plans with stable operator ids, and the state check before a restore, on plans
Flink's own planner compiles (in this process's JVM; no cluster needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ultron_nb.engines.flink import plans

pytestmark = pytest.mark.flink

SOURCES = """
CREATE TEMPORARY TABLE orders (order_id BIGINT, shop STRING, amount DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'datagen')
---
CREATE TEMPORARY TABLE refunds (order_id BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'datagen')
---
CREATE TEMPORARY TABLE per_shop (shop STRING, n BIGINT) WITH ('connector' = 'blackhole')
---
CREATE TEMPORARY TABLE per_shop2 (shop STRING, n BIGINT, total DOUBLE)
  WITH ('connector' = 'blackhole')
---
CREATE TEMPORARY TABLE refunded (order_id BIGINT, shop STRING) WITH ('connector' = 'blackhole')
"""

COUNT = "INSERT INTO per_shop SELECT shop, COUNT(*) FROM orders GROUP BY shop"


@pytest.fixture(scope="module")
def env() -> Any:
    from ultron_nb.engines.flink.submit import table_environment

    env = table_environment("stream", {})
    for stmt in SOURCES.split("---"):
        env.execute_sql(stmt)
    return env


def compiled(env: Any, sql: str) -> str:
    return str(env._j_tenv.compilePlanSql(sql).asJsonString())


def test_the_same_query_compiled_twice_in_one_jvm_gets_the_same_ids(env: Any) -> None:
    first, second = compiled(env, COUNT), compiled(env, COUNT)
    ids = [[n["id"] for n in json.loads(p)["nodes"]] for p in (first, second)]
    assert ids[0] != ids[1]  # Flink's own ids come from a counter of the JVM
    assert plans.stable_ids(first) == plans.stable_ids(second)
    stable = json.loads(plans.stable_ids(first))
    assert len({n["id"] for n in stable["nodes"]}) == len(stable["nodes"])
    assert {(e["source"], e["target"]) for e in stable["edges"]} <= \
        {(a["id"], b["id"]) for a in stable["nodes"] for b in stable["nodes"]}


def test_a_stable_plan_loads_and_keeps_its_ids(env: Any) -> None:
    from pyflink.java_gateway import get_gateway

    stable = plans.stable_ids(compiled(env, COUNT))
    reference = get_gateway().jvm.org.apache.flink.table.api.PlanReference
    loaded = env._j_tenv.loadPlan(reference.fromJsonString(stable))
    again = json.loads(str(loaded.asJsonString()))
    assert [n["id"] for n in again["nodes"]] == [n["id"] for n in json.loads(stable)["nodes"]]


def test_a_filter_added_upstream_keeps_the_aggregations_state(env: Any) -> None:
    old = plans.operators(plans.stable_ids(compiled(env, COUNT)))
    new = plans.operators(plans.stable_ids(compiled(
        env, "INSERT INTO per_shop SELECT shop, COUNT(*) FROM orders WHERE amount > 0 "
             "GROUP BY shop")))
    kinds = sorted(op.type.rsplit("_", 1)[0] for op in old.values())
    assert kinds == ["stream-exec-group-aggregate", "stream-exec-sink",
                     "stream-exec-table-source-scan"]
    check = plans.compare(old, new)
    assert check.ok, check.summary()
    assert len(check.kept) == 3


def test_a_changed_aggregation_and_a_removed_join_are_named(env: Any) -> None:
    old = plans.operators(plans.stable_ids(compiled(env, COUNT)))
    more = plans.operators(plans.stable_ids(compiled(
        env, "INSERT INTO per_shop2 SELECT shop, COUNT(*), SUM(amount) FROM orders "
             "GROUP BY shop")))
    check = plans.compare(old, more)
    assert not check.ok and not check.dropped
    [(was, _now, why)] = [c for c in check.changed if "aggregate" in c[0].type]
    assert "group-aggregate" in was.label and "input" in why and "amount" in why

    join = ("INSERT INTO refunded SELECT o.order_id, o.shop FROM orders o JOIN refunds r "
            "ON o.order_id = r.order_id")
    old = plans.operators(plans.stable_ids(compiled(env, join)))
    plain = plans.operators(plans.stable_ids(compiled(
        env, "INSERT INTO refunded SELECT order_id, shop FROM orders")))
    check = plans.compare(old, plain)
    dropped = [op.label for op in check.dropped]
    assert any(label.startswith("join #") for label in dropped), check.summary()
    assert any("refunds" in label for label in dropped)  # the second source's positions too
    assert all("state would be dropped" in line for line in check.lines()[:len(dropped)])
    # the operators' description survives a round trip through the store's JSON
    assert plans.from_json(json.loads(json.dumps(plans.to_json(old)))) == old


def test_a_source_reading_another_table_is_named(env: Any) -> None:
    old = plans.operators(plans.stable_ids(compiled(
        env, "INSERT INTO refunded SELECT order_id, shop FROM orders")))
    new = plans.operators(plans.stable_ids(compiled(
        env, "INSERT INTO refunded SELECT order_id, 'none' FROM refunds")))
    check = plans.compare(old, new)
    [(was, _now, why)] = [c for c in check.changed if c[0].label.startswith("table-source")]
    assert was.table == "orders" and "it read orders" in why and "refunds" in why


def test_a_sink_salted_by_its_instance_leaves_its_state_unclaimed_in_another(env: Any) -> None:
    """A clone branched from a savepoint restores every operator but the sink: the sink's
    state holds the part files it was writing in the parent's folder."""
    plan = compiled(env, COUNT)
    parent = plans.operators(plans.stable_ids(plan, sink_salt="per_shop_ab12_1"))
    again = plans.operators(plans.stable_ids(plan, sink_salt="per_shop_ab12_1"))
    clone = plans.operators(plans.stable_ids(plan, sink_salt="per_shop_ab12_2"))
    assert plans.compare(parent, again).ok  # a resume of the same instance keeps it all
    check = plans.compare(parent, clone)
    assert [plans.is_sink(op.type) for op in check.dropped] == [True]
    assert not check.changed and check.kept
    assert {op.uid for op in check.kept} == {uid for uid, op in clone.items()
                                            if not plans.is_sink(op.type)}
