"""Real-time effect evaluation on the real daemon: two experiments serve their share of a
request stream with their own champion; the served impressions carry the label; a live
node counts CTR per label per window; ``%ultron effect`` gives the intervals and the
difference, against the truth of the hidden click model."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.support.model_loop import (
    LIVE,
    SERVE,
    clicklog,
    fitted,
    in_traffic,
    reversed_model,
    served,
    stop_everything,
    topic_rows,
)
from tests.support.waiting import wait_until
from ultron_nb import experiments
from ultron_nb.config import Settings
from ultron_nb.engines.mlflow.center import Lineage, ModelCenter
from ultron_nb.flow.build import define_node
from ultron_nb.scheduler import start_daemon
from ultron_nb.services.datagen import gen_requests, requests_node
from ultron_nb.services.effect import effect, serve_outputs
from ultron_nb.services.world import World, WorldParams
from ultron_nb.workspace import Workspace

pytestmark = pytest.mark.slow
SEED = 6


@pytest.fixture
def ws(ms_settings: Settings) -> Iterator[Workspace]:
    workspace = Workspace(ms_settings)
    yield workspace
    stop_everything(workspace)


def true_ctr(rows: pd.DataFrame, world: World) -> float:
    return float(world.p_click(rows.user_id, rows.item_id, rows.position, rows.hour,
                               rows.dwell).mean())


def test_effect_per_label_contains_the_true_ctr_and_the_better_model_wins(
        ws: Workspace, workdir: Path, cell: Any) -> None:
    history = clicklog(str(workdir / "history"), SEED, 2.0, 4.0)
    for node in (requests_node(partitions=2),
                 define_node("serve", SERVE, kind="python", inputs=["requests"],
                             bounded=True, params={"traffic": "0-50"}),
                 define_node("ctr_live", LIVE, kind="python", inputs=["serve"],
                             params={"window": "1m"})):
        ws.define("ads", node)
    start_daemon(ws.settings)
    experiments.launch(ws, "ads", name="good")
    experiments.launch(ws, "ads", name="bad", params={"serve.traffic": "50-100"},
                       parent="good")
    mc = ModelCenter(ws.settings, ws.db)
    model = fitted(history)
    mc.register(model, name="ctr_model", lineage=Lineage("good", node="train"))
    mc.register(reversed_model(model), name="ctr_model", lineage=Lineage("bad", node="x"))
    mc.promote("ctr_model", 1, "champion", experiment="good")
    assert mc.promote("ctr_model", 2, "champion", experiment="bad") == "champion--bad"
    made = gen_requests(ws.settings, rate=20, duration=40 * 60, seed=SEED)
    requests = topic_rows(ws.settings.home / "topics" / "requests")
    assert len(requests) == made.count
    shares = {"good": len(in_traffic(requests, 0, 50)), "bad": len(in_traffic(requests, 50, 100))}
    for name, count in shares.items():
        wait_until(lambda name=name, count=count: len(served(ws, name)) >= count, 180,
                   f"{count} requests served by {name}")
    report = effect(ws, ["good", "bad"], window="1m", label_window="5m")
    frame, summary = report.frame, report.summary.set_index("label")
    world = World(WorldParams(seed=SEED))
    out = {name: served(ws, name) for name in shares}
    for name, rows in out.items():  # every request of its share, once, by its champion
        assert len(rows) == shares[name] and rows.req_id.is_unique
        assert set(rows.label) == {name} and set(rows.model_version) == \
            {1 if name == "good" else 2}
    # The interval of each label's CTR holds the true CTR of what it served (large sample),
    # and so do nearly all the per-window intervals (95 % each).
    for name, rows in out.items():
        rows = rows.assign(ts_ms=pd.to_datetime(rows.ts).astype("int64") // 1_000_000)
        counted = rows[rows.ts_ms // 60_000 * 60_000 + 60_000 + 300_000 <= rows.ts_ms.max()]
        truth = true_ctr(counted, world)
        assert summary.loc[name, "impressions"] == len(counted) > 10_000
        assert summary.loc[name, "ci_low"] <= truth <= summary.loc[name, "ci_high"], name
        windows = frame[frame.label == name].set_index("window_start")
        hits = []
        for start, group in counted.groupby(pd.to_datetime(counted.ts_ms // 60_000 * 60_000,
                                                           unit="ms")):
            w = windows.loc[start]
            assert w.impressions == len(group)
            hits.append(w.ci_low <= true_ctr(group, world) <= w.ci_high)
        assert len(hits) >= 30 and np.mean(hits) >= 0.85, (name, np.mean(hits))
    # The better model shows better items: its label's CTR is higher, beyond doubt.
    assert summary.loc["good", "value"] > summary.loc["bad", "value"]
    assert summary.loc["bad", "diff_high"] < 0 and (report.diff.ci_high < 0).mean() > 0.9
    assert true_ctr(out["good"], world) > true_ctr(out["bad"], world)
    # The live node counted the same windows as the report.
    for name in shares:
        live_dir = serve_outputs(ws, name, "ctr_live") / "ctr"
        want = frame[frame.label == name]
        count = len(want)
        wait_until(lambda d=live_dir, n=count: len(topic_rows(d)) >= n, 120,
                   f"{name}'s live windows")
        live = topic_rows(live_dir)
        live["window_start"] = pd.to_datetime(live.window_start)
        merged = want.merge(live, on=["label", "window_start"], suffixes=("", "_live"))
        assert len(merged) == len(want) == len(live)
        assert (merged.impressions == merged.impressions_live).all()
        assert (merged.clicks == merged.clicks_live).all()
    # The verb: the same numbers, AUC with DeLong intervals, a plot that is SVG.
    auc = cell("%ultron effect good bad --metric auc --window 10m --label-window 5m")
    assert auc.metric == "auc" and set(auc.frame.label) == {"good", "bad"}
    good_auc = auc.summary.set_index("label").loc["good"]
    assert 0.5 < good_auc.ci_low <= good_auc.value <= good_auc.ci_high < 1
    bundle = cell("%ultron effect good bad --label-window 5m")._repr_mimebundle_()
    assert bundle["image/svg+xml"].startswith("<svg") and "<svg" in bundle["text/html"]
    assert math.isclose(cell("%ultron effect good bad --label-window 5m").summary.value.iloc[0],
                        report.summary.value.iloc[0])
