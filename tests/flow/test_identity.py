"""Content identity: what clone/sharing relies on."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ultron_nb.flow import Flow, identities
from ultron_nb.flow.build import define_node

from .ctr_flow import LABEL_JOIN, TRAIN, ctr_flow


def _with(flow: Flow, name: str, body: str, **kw: object) -> Flow:
    old = flow[name]
    kwargs = {"params": old.param_dict, **kw}
    if old.kind.value == "python":
        kwargs.setdefault("kind", "python")
        kwargs.setdefault("inputs", list(old.inputs))
        kwargs.setdefault("after", [e.source for e in old.triggers if e.source])
        kwargs.setdefault("boundary", next((e.schedule for e in old.triggers if e.schedule),
                                           None))
    return flow.with_node(define_node(name, body, **kwargs)).validate()  # type: ignore[arg-type]


def test_identity_is_stable_across_rebuilds() -> None:
    assert identities(ctr_flow()) == identities(ctr_flow())


def test_layout_and_comments_do_not_change_identity() -> None:
    base = identities(ctr_flow())
    reformatted = "-- label each impression\n" + "\n\n".join(
        "   " + line + "   /* c */" for line in LABEL_JOIN.splitlines() if line.strip()
    ) + ";"
    assert identities(_with(ctr_flow(), "label_join", reformatted)) == base


def test_python_comments_and_docstrings_do_not_change_identity() -> None:
    base = identities(ctr_flow())
    edited = TRAIN.replace('"""Fit a model on the hour\'s samples."""', '"""Other words."""')
    edited = edited.replace("return", "# the learning rate\n    return")
    assert identities(_with(ctr_flow(), "train", edited)) == base
    changed = TRAIN.replace('ctx.params["lr"]', 'ctx.params["lr"] * 2')
    assert identities(_with(ctr_flow(), "train", changed))["train"] != base["train"]


def test_a_change_propagates_downstream_only() -> None:
    base = identities(ctr_flow())
    changed = identities(_with(ctr_flow(), "item_features",
                               ctr_flow()["item_features"].body.replace("COUNT(*)", "COUNT(1)")))
    same = {n for n in base if base[n] == changed[n]}
    assert same == {"impressions", "clicks", "label_join"}


def test_parameters_change_identity_and_overrides_match_redefinition() -> None:
    flow = ctr_flow()
    base = identities(flow)
    overridden = identities(flow, flow.effective_params({"train.lr": "0.1"}))
    assert {n for n in base if base[n] != overridden[n]} == {"train", "evaluate"}
    redefined = _with(ctr_flow(), "train", TRAIN, params={"lr": "0.1"})
    assert identities(redefined) == overridden
    window = identities(flow, flow.effective_params({"item_features.feature_window": "10"}))
    assert {n for n in base if base[n] != window[n]} == {
        "item_features", "samples", "train", "evaluate"}


def test_definition_order_does_not_matter() -> None:
    flow = ctr_flow()
    reversed_flow = Flow("ctr", list(flow)[::-1]).validate()
    assert identities(reversed_flow) == identities(flow)


def test_triggers_and_resource_schema_are_part_of_identity() -> None:
    base = identities(ctr_flow())
    other = _with(ctr_flow(), "train", TRAIN, boundary="2h")
    assert other.validate() and identities(other)["train"] != base["train"]
    flow = ctr_flow().with_node(define_node(
        "clicks", "imp_id STRING, ts TIMESTAMP(3), pos INT", kind="topic", time="ts",
        watermark="5 s", partitions=4)).validate()
    changed = identities(flow)
    assert changed["clicks"] != base["clicks"] and changed["label_join"] != base["label_join"]
    assert changed["impressions"] == base["impressions"]


_sql_ws = st.lists(st.sampled_from([" ", "\n", "\t", "  ", " -- note\n", " /* x */ "]),
                   min_size=1, max_size=3).map("".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(_sql_ws, min_size=12, max_size=12))
def test_any_whitespace_and_comments_keep_identity(gaps: list[str]) -> None:
    words = ["SELECT", "imp_id,", "label", "FROM", "label_join", "WHERE", "label", "=", "1",
             "AND", "imp_id", "<> 'a  b'"]
    body = "".join(g + w for g, w in zip(gaps, words, strict=True))
    ref = " ".join(words)
    flows = [ctr_flow().with_node(define_node("pos", b)).validate() for b in (body, ref)]
    assert identities(flows[0])["pos"] == identities(flows[1])["pos"]


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="abcdefgh0123456789", min_size=1, max_size=6))
def test_every_parameter_value_is_a_distinct_identity(value: str) -> None:
    flow = ctr_flow()
    ids = identities(flow, flow.effective_params({"train.lr": value}))
    assert (ids["train"] == identities(flow)["train"]) == (value == "0.05")
