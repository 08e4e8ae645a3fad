"""Online training on the CTR link, on a real Flink cluster, the real daemon and a real MLflow
store: impressions + clicks → a Flink label join (the samples) → a Python node that trains
once per completed event-time hour (``--after samples --boundary 1h``) and registers one
version per window, warm-started from the last; each version notifies validate and
evaluate (``--on-model``). A clone with another learning rate trains its own line, judges
its own versions, and its champion is its own: the parent's never moves to a clone's
version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.support.model_loop import EVALUATE, TRAIN, VALIDATE, stop_everything
from tests.support.waiting import wait_until
from ultron_nb import experiments
from ultron_nb.config import Settings
from ultron_nb.engines.mlflow.center import TAG, ModelCenter
from ultron_nb.engines.mlflow.registry import run_metrics
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.events import recent
from ultron_nb.flow.build import define_node
from ultron_nb.scheduler import start_daemon
from ultron_nb.services.datagen import clicklog_nodes, gen_clicklog, parse_ts
from ultron_nb.services.learning import WARM_TAG
from ultron_nb.workspace import Workspace

pytestmark = pytest.mark.slow
HOUR = 3_600_000
SAMPLES = """
SELECT i.imp_id, i.user_id, i.item_id, i.`position`, i.`hour`, i.dwell, i.ts,
       CASE WHEN c.imp_id IS NULL THEN 0 ELSE 1 END AS label
FROM impressions i LEFT JOIN clicks c
  ON i.imp_id = c.imp_id AND c.ts BETWEEN i.ts AND i.ts + INTERVAL '10' MINUTE
"""


@pytest.fixture
def ws(ms_settings: Settings, flink_workspace: Workspace) -> Iterator[Workspace]:
    assert flink_workspace.home == ms_settings.home  # the MLflow store is in its home
    yield flink_workspace
    stop_everything(flink_workspace)


def define_loop(ws: Workspace, flow: str = "loop") -> None:
    for node in clicklog_nodes(partitions=2):
        ws.define(flow, node)
    ws.define(flow, define_node("samples", SAMPLES, options={"checkpoint_interval": "1 s"}))
    ws.define(flow, define_node("train", TRAIN, kind="python", inputs=["samples"],
                                after=["samples"], boundary="1h", params={"lr": "0.05"}))
    for name, body in (("validate", VALIDATE), ("evaluate", EVALUATE)):
        ws.define(flow, define_node(name, body, kind="python", inputs=["samples"],
                                    bounded=True, on_model="ctr_model"))


def line(mc: ModelCenter, experiment: str) -> list[Any]:
    """``experiment``'s versions of ctr_model, oldest first."""
    return sorted(mc.versions("ctr_model", experiment=experiment, limit=0),
                  key=lambda v: int(v.version))


def verdicts(ws: Workspace, experiment: str) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for e in recent(ws.db, "validate/ctr_model", limit=100):
        if e.value.get("experiment") == experiment:
            assert e.value["version"] not in found, f"version judged twice: {e.value}"
            found[e.value["version"]] = e.value
    return found


def test_hourly_versions_per_line_warm_started_judged_and_champions_kept_apart(
        ws: Workspace, workdir: Path) -> None:
    define_loop(ws)
    start_daemon(ws.settings)
    experiments.launch(ws, "loop", name="base")
    plan = experiments.launch(ws, "loop", name="slow", params={"train.lr": "0.01"},
                              parent="base")
    assert plan is not None
    gen_clicklog(ws.settings, rate=2, duration=3.3 * 3600, partitions=2, seed=21)
    mc = ModelCenter(ws.settings, ws.db)
    for exp in ("base", "slow"):
        wait_until(lambda exp=exp: len(line(mc, exp)) >= 3, 600, f"{exp}'s three versions")
        wait_until(lambda exp=exp: len(verdicts(ws, exp)) >= 3, 300, f"{exp}'s verdicts")
    wait_until(lambda: len(recent(ws.db, "evaluate/ctr_model", limit=100)) >= 6, 300,
               "six evaluations")
    # The truth: every impression of each hour, from the topics themselves.
    imps = pd.DataFrame(LocalTopic.open(ws.settings.home / "topics" / "impressions").read())
    t0 = min(imps.ts.map(parse_ts)) // HOUR * HOUR
    per_hour = (imps.ts.map(parse_ts) // HOUR * HOUR).value_counts()
    windows = [(t0 + h * HOUR, t0 + (h + 1) * HOUR) for h in range(3)]
    lines = {exp: line(mc, exp) for exp in ("base", "slow")}
    for exp, lr in (("base", 0.05), ("slow", 0.01)):
        versions = lines[exp]
        tags = [dict(v.tags) for v in versions]
        # One version per completed hour, in order, each from the previous one.
        assert [(int(t[TAG + "window_start"]), int(t[TAG + "window_end"])) for t in tags] \
            == windows, exp
        assert [t[WARM_TAG] for t in tags] == \
            ["none", *[str(v.version) for v in versions[:-1]]], exp
        assert {t[TAG + "node"] for t in tags} == {"train"}
        assert all(json.loads(t[TAG + "params"])["lr"] == str(lr) for t in tags), exp
        for v, t, (start, _end) in zip(versions, tags, windows, strict=True):
            rows = json.loads(t[TAG + "rows"])  # every impression of the hour, once
            assert rows["train"] + rows["holdout"] == per_hour[start], (exp, rows)
            metrics = run_metrics(mc.client, v.run_id)
            assert {"auc", "logloss", "eval_auc", "eval_logloss", "eval_ece",
                    "validate_rows", "validate_auc"} <= set(metrics), (exp, metrics)
            assert ("pre_auc" in metrics) == (t[WARM_TAG] != "none")
    # lr 0.05 learns: its last version beats chance on held-out rows.
    assert run_metrics(mc.client, lines["base"][-1].run_id)["auc"] > 0.55
    # Each experiment judged its own versions, once, by the rule, with the numbers recorded.
    judged = {exp: verdicts(ws, exp) for exp in ("base", "slow")}
    for exp in ("base", "slow"):
        assert sorted(judged[exp]) == [int(v.version) for v in lines[exp]], judged[exp]
        for verdict in judged[exp].values():
            m = verdict["metrics"]
            if verdict["champion"] is None:
                assert verdict["passed"] == (m["validate_auc"] > 0.5), verdict
            else:
                assert verdict["passed"] == (
                    m["validate_auc"] >= m["validate_champion_auc"]
                    and m["validate_logloss"] <= m["validate_champion_logloss"] + 0.01), verdict
    # The base's champion is its latest version that passed; the slow line was judged
    # against it (a clone reads its parent's champion until it has its own) and refused.
    passed = [v for v, d in sorted(judged["base"].items()) if d["passed"]]
    assert passed and passed[0] == int(lines["base"][0].version)
    assert mc.alias_version("ctr_model", "champion") == passed[-1]
    assert [h["version"] for h in mc.history("ctr_model", "champion")] == passed
    assert not any(d["passed"] for d in judged["slow"].values()), judged["slow"]
    assert {d["champion"] for d in judged["slow"].values()} <= set(passed) | {None}
    assert mc.alias_version("ctr_model", "champion--slow") is None
    # The parent's champion never held a clone's version.
    assert not {h["version"] for h in mc.history("ctr_model", "champion")} & \
        {int(v.version) for v in lines["slow"]}
