"""Clone an experiment on a real local Flink cluster: unchanged nodes are shared (no new
Flink job), changed nodes and their downstream get new jobs, shared jobs are
reference-counted. Job counts come from Flink's REST API."""

from __future__ import annotations

from typing import Any

import pytest

from ultron_nb import experiments as ex
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.errors import ConfigError, FlowError
from ultron_nb.flow.build import define_node
from ultron_nb.services.clone import ClonePlan, CloneResult, clone, diff
from ultron_nb.services.datagen import gen_clicklog

from .flink_flows import define_ctr_flow

pytestmark = [pytest.mark.flink, pytest.mark.slow]

ITEM_CTR = """
SELECT item_id, window_time AS ts, COUNT(*) AS imps, SUM(label) AS clicks
FROM TABLE(TUMBLE(TABLE label_join, DESCRIPTOR(ts), INTERVAL '${feature_window}' MINUTE))
GROUP BY item_id, window_start, window_end, window_time
"""
TRAIN = "def train(ctx):\n    return float(ctx.params['lr'])\n"


def define_link(ws: Any) -> None:
    define_ctr_flow(ws, "link", partitions=2)
    ws.remove("link", "ctr_minute")
    ws.define("link", define_node("item_ctr", ITEM_CTR, params={"feature_window": "5"},
                                  options={"checkpoint_interval": "1 s"}))
    ws.define("link", define_node("train", TRAIN, kind="python", inputs=["item_ctr"],
                                  after=["item_ctr"], boundary="1h", params={"lr": "0.05"}))


def running_jobs(ws: Any) -> dict[str, str]:
    """Flink job id → job name of this workspace's jobs that run, asked from Flink."""
    with FlinkRest(ws.settings.target_url) as rest:
        states = rest.job_ids()
        names = {j.id: j.name for j in rest.jobs()}
    from sqlalchemy import select

    from ultron_nb.store.schema import jobs

    with ws.db.read() as conn:
        ours = {r[0] for r in conn.execute(select(jobs.c.external_id))}
    return {j: names.get(j, "") for j, s in states.items() if j in ours and s == "running"}


def instance_of(ws: Any, experiment: str, node: str) -> str:
    return ex.status(ws, experiment)[node].instance


def test_clone_shares_unchanged_nodes_and_counts_references(flink_workspace: Any) -> None:
    ws = flink_workspace
    gen_clicklog(ws.settings, rate=10, duration=300, partitions=2, seed=3)
    define_link(ws)
    ex.launch(ws, "link", name="a")
    assert len(running_jobs(ws)) == 2  # label_join, item_ctr

    # Only a training parameter changes: no Flink job is launched.
    plan = clone(ws, "a", "b", {"train.lr": "0.1"}, dry_run=True)
    assert isinstance(plan, ClonePlan)
    steps = {r[0]: r[1] for r in plan.rows()}
    assert steps == {"impressions": "shared", "clicks": "shared", "label_join": "shared",
                     "item_ctr": "shared", "train": "new"}
    assert plan.plan["train"].changed_params == (("lr", "0.05", "0.1"),)
    assert "b" not in [e.name for e in ex.list_experiments(ws)]  # a dry run stores nothing
    result = clone(ws, "a", "b", {"train.lr": "0.1"})
    assert isinstance(result, CloneResult)
    assert len(running_jobs(ws)) == 2
    assert instance_of(ws, "b", "label_join") == instance_of(ws, "a", "label_join")
    assert instance_of(ws, "b", "train") != instance_of(ws, "a", "train")
    assert ex.list_experiments(ws)[0].parent == "a"

    # The feature window changes: the feature node and its downstream only.
    plan = clone(ws, "a", "c", {"item_ctr.feature_window": "2"}, dry_run=True)
    assert plan.launches == ["item_ctr", "train"]
    assert plan.plan["item_ctr"].reason == "parameters changed"
    assert plan.plan["train"].reason == "upstream changed"
    clone(ws, "a", "c", {"item_ctr.feature_window": "2"})
    jobs = running_jobs(ws)
    assert len(jobs) == 3
    assert instance_of(ws, "c", "label_join") == instance_of(ws, "a", "label_join")
    assert instance_of(ws, "c", "item_ctr") != instance_of(ws, "a", "item_ctr")

    d = diff(ws, "a", "c")
    by_node = {r[0]: r[3] for r in d.rows}
    assert by_node["label_join"] == "shared"
    assert by_node["item_ctr"] == "changed (feature_window: 5 → 2)"
    assert '"label_join" [label="label_join\\n[flink stream]\\nshared"' in d.dot_a

    # Stopping the parent keeps every job a clone uses.
    ex.stop(ws, "a")
    assert running_jobs(ws) == jobs
    st = ex.status(ws, "b")
    assert st["label_join"].state == "running" and st["item_ctr"].state == "running"
    # b used a's item_ctr; c has its own: stopping b stops a's item_ctr only.
    ex.stop(ws, "b")
    left = running_jobs(ws)
    assert len(left) == 2
    assert ex.status(ws, "c")["label_join"].state == "running"


def test_a_node_redefined_after_the_launch_counts_as_changed(flink_workspace: Any) -> None:
    ws = flink_workspace
    gen_clicklog(ws.settings, rate=10, duration=120, partitions=2, seed=4)
    define_link(ws)
    ex.launch(ws, "link", name="p")
    ws.define("link", define_node("item_ctr", ITEM_CTR.replace("COUNT(*)", "COUNT(imp_id)"),
                                  params={"feature_window": "5"},
                                  options={"checkpoint_interval": "1 s"}))
    plan = clone(ws, "p", "q", dry_run=True)
    assert isinstance(plan, ClonePlan)
    assert plan.launches == ["item_ctr", "train"]
    assert plan.plan["item_ctr"].reason == "definition changed"


def test_bad_clone_input_names_the_fault_and_stores_nothing(flink_workspace: Any) -> None:
    ws = flink_workspace
    gen_clicklog(ws.settings, rate=5, duration=60, partitions=2, seed=5)
    define_link(ws)
    ex.launch(ws, "link", name="base")
    before = [e.name for e in ex.list_experiments(ws)]
    with pytest.raises(FlowError, match="node 'train' has no parameter 'rate'"):
        clone(ws, "base", "x", {"train.rate": "1"})
    with pytest.raises(ConfigError, match="an experiment named 'base' exists already"):
        clone(ws, "base", "base", {"train.lr": "1"})
    assert [e.name for e in ex.list_experiments(ws)] == before


def test_a_clone_plan_reads_as_a_table_in_a_terminal() -> None:
    """Terminal IPython and the CLI show the plan as text, not as a dataclass repr."""
    from ultron_nb.flow.plan import Plan, PlannedNode, Step

    plan = Plan("link", 3, {}, [
        PlannedNode("label_join", "a" * 64, "label_join_aaaa", Step.SHARE, ("base",)),
        PlannedNode("item_ctr", "b" * 64, "item_ctr_bbbb", Step.NEW, (),
                    (("feature_window", "5", "2"),), "parameters changed")])
    text = repr(ClonePlan("base", "win_2", plan, {"item_ctr.feature_window": "2"}))
    assert text.splitlines()[0] == "clone base → win_2"
    assert "label_join  shared" in text and "feature_window: 5 → 2" in text
    assert "ClonePlan(" not in text and "PlannedNode(" not in text
