"""Launch and clone plans: share what is unchanged, launch only what changed downstream."""

from __future__ import annotations

from ultron_nb.flow import identities
from ultron_nb.flow.build import define_node
from ultron_nb.flow.plan import ExistingInstance, Step, instance_id, plan_launch

from .ctr_flow import ctr_flow


def _running(flow: object, params: dict | None = None) -> dict[str, ExistingInstance]:
    ids = identities(flow, params)  # type: ignore[arg-type]
    return {i: ExistingInstance(instance_id(n, i), i, "RUNNING", ("exp1",))
            for n, i in ids.items()}


def test_fresh_launch_is_all_new() -> None:
    plan = plan_launch(ctr_flow(), None, {})
    assert {p.step for p in plan.nodes} == {Step.NEW}
    assert plan["label_join"].instance_id.startswith("label_join_")


def test_clone_changing_a_training_parameter_shares_everything_upstream() -> None:
    flow = ctr_flow()
    base_params = flow.effective_params()
    plan = plan_launch(flow, {"train.lr": "0.1"}, _running(flow), base_params=base_params,
                       base_identities=identities(flow))
    assert plan.by_step(Step.NEW) == ["train", "evaluate"]
    assert set(plan.by_step(Step.SHARE)) == {"impressions", "clicks", "label_join",
                                             "item_features", "samples"}
    assert plan["train"].changed_params == (("lr", "0.05", "0.1"),)
    assert plan["train"].reason == "parameters changed"
    assert plan["evaluate"].reason == "upstream changed"
    assert plan["label_join"].shared_with == ("exp1",)


def test_clone_keeps_the_parents_parameters() -> None:
    flow = ctr_flow()
    parent = flow.effective_params({"label_window": "20"})
    existing = _running(flow, parent)
    plan = plan_launch(flow, {"train.lr": "0.2"}, existing, base_params=parent,
                       base_identities=identities(flow, parent))
    assert plan.params["label_join"] == {"label_window": "20"}
    assert plan.by_step(Step.NEW) == ["train", "evaluate"]


def test_redefined_node_counts_as_changed() -> None:
    flow = ctr_flow()
    existing = _running(flow)
    base = identities(flow)
    edited = flow.with_node(define_node(
        "item_features", flow["item_features"].body.replace("COUNT(*)", "COUNT(imp_id)"),
        params={"feature_window": "5"})).validate()
    plan = plan_launch(edited, None, existing, base_params=flow.effective_params(),
                       base_identities=base)
    assert plan.by_step(Step.NEW) == ["item_features", "samples", "train", "evaluate"]
    assert plan["item_features"].reason == "definition changed"


def test_a_relaunch_of_a_stopped_identity_gets_a_new_instance_of_its_own() -> None:
    """An output belongs to one instance: a relaunch never reuses a stopped instance's id
    (its output would be read as backlog downstream); its downstream launches too."""
    flow = ctr_flow()
    url = "http://127.0.0.1:8081"
    existing = {
        i: ExistingInstance(instance_id(n, i, url), i,
                            "CANCELED" if n == "label_join" else "RUNNING", count=2)
        for n, i in identities(flow).items()
    }
    plan = plan_launch(flow, None, existing, target=url)
    relaunched = plan["label_join"]
    assert relaunched.step is Step.NEW
    assert relaunched.instance_id == instance_id("label_join", relaunched.identity, url, 3)
    assert relaunched.instance_id != existing[relaunched.identity].id
    assert "relaunch" in relaunched.reason


def test_instances_are_per_cluster() -> None:
    flow = ctr_flow()
    a, b = "http://127.0.0.1:8081", "http://admin:secret@127.0.0.1:18081/"
    ids = identities(flow)
    assert instance_id("label_join", ids["label_join"], a) != \
        instance_id("label_join", ids["label_join"], b)
    assert "secret" not in instance_id("label_join", ids["label_join"], b)
    assert instance_id("x", "f" * 64, b) == instance_id("x", "f" * 64,
                                                         "http://127.0.0.1:18081")
