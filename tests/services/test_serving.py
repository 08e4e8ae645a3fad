"""Serving on the real daemon and a real MLflow store: the serving node scores a request
stream with the champion, reloads when the alias moves, and every prediction carries the
version that made it — the alias holder when it was served."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.support.model_loop import SERVE, clicklog, fitted, served, stop_everything, version_runs
from tests.support.waiting import wait_until
from ultron_nb import experiments
from ultron_nb.config import Settings
from ultron_nb.engines.mlflow.center import Lineage, ModelCenter
from ultron_nb.errors import ConfigError
from ultron_nb.flow.build import define_node
from ultron_nb.scheduler import start_daemon
from ultron_nb.services.datagen import gen_requests, requests_node
from ultron_nb.services.serving import parse_traffic, rank
from ultron_nb.services.world import World, WorldParams
from ultron_nb.store.schema import events
from ultron_nb.workspace import Workspace

pytestmark = pytest.mark.slow


@pytest.fixture
def ws(ms_settings: Settings) -> Iterator[Workspace]:
    workspace = Workspace(ms_settings)
    yield workspace
    stop_everything(workspace)


def alias_events(ws: Workspace, key: str) -> list[dict[str, Any]]:
    with ws.db.read() as conn:
        return [json.loads(v) for (v,) in conn.execute(
            select(events.c.value).where(events.c.key == key).order_by(events.c.id))]


def test_serving_follows_the_champion_and_labels_each_prediction_with_its_version(
        ws: Workspace, workdir: Path) -> None:
    rows = clicklog(str(workdir / "history"), 5, 1.0, 4.0)
    mc = ModelCenter(ws.settings, ws.db)
    for node in (requests_node(partitions=2),
                 define_node("serve", SERVE, kind="python", inputs=["requests"],
                             bounded=True)):
        ws.define("srv", node)
    start_daemon(ws.settings)
    experiments.launch(ws, "srv", name="exp")
    for lr in (0.05, 0.01):
        mc.register(fitted(rows, lr), name="ctr_model",
                    lineage=Lineage("exp", node="train"), metrics={"lr": lr})
    moves: list[tuple[float, int]] = [(0.0, 0)]  # (when the move returned, version)
    total = 0

    def batch(minutes: int) -> None:
        nonlocal total
        total += gen_requests(ws.settings, rate=5, duration=minutes * 60, seed=5).count
        wait_until(lambda: len(served(ws, "exp")) >= total, 120, f"{total} served requests")

    def move(step: Any, version: int) -> None:
        step()
        moves.append((time.time(), version))

    batch(5)  # no champion yet: version 0
    move(lambda: mc.promote("ctr_model", 1, "champion"), 1)
    batch(5)
    move(lambda: mc.promote("ctr_model", 2, "champion"), 2)
    batch(5)
    move(lambda: mc.rollback("ctr_model", "champion"), 1)
    batch(5)
    out = served(ws, "exp")
    assert len(out) == total and out.imp_id.is_unique and out.req_id.is_unique
    # Each prediction carries the alias holder at the moment it was served ...
    holder = [max((m for m in moves if m[0] * 1000 <= at), key=lambda m: m[0])[1]
              for at in out.served_at]
    assert list(out.model_version) == holder
    # ... the serving node switched once per alias move, in the order they happened ...
    assert version_runs(list(out.sort_values("ts").model_version)) == [0, 1, 2, 1]
    wait_until(lambda: len(alias_events(ws, "model/ctr_model/alias/champion")) >= 3, 60,
               "the watcher's alias events")
    changes = alias_events(ws, "model/ctr_model/alias/champion")
    assert [(e["version"], e["previous"]) for e in changes] == [(1, None), (2, 1), (1, 2)]
    assert len(version_runs(list(out.model_version))) - 1 == len(changes)
    # ... and with a model, shows the candidate it scores highest.
    scored = out[out.model_version > 0]
    assert scored.score.notna().all() and out[out.model_version == 0].score.isna().all()
    assert set(out.label) == {"exp"} and (out.position == 1).all()


def test_ranking_and_traffic_are_what_they_say() -> None:
    import numpy as np
    import pandas as pd

    world = World(WorldParams(seed=3))
    requests = pd.DataFrame({"req_id": [1, 2], "user_id": [4, 9], "hour": [10, 11],
                             "dwell": [12.0, 3.0], "candidates": ["5,7,9", "2,3"],
                             "ts": ["2025-01-01 00:00:00.000"] * 2, "ts_ms": [0, 1]})

    class Oracle:
        def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
            p = world.p_click(frame.user_id, frame.item_id, frame.position, frame.hour,
                              frame.dwell)
            return np.column_stack([1 - p, p])

    shown = rank(requests, Oracle(), slate=2, seed=3)
    for req in requests.itertuples():
        items = [int(x) for x in req.candidates.split(",")]
        p = world.p_click([req.user_id] * len(items), items, [1] * len(items),
                          [req.hour] * len(items), [req.dwell] * len(items))
        best = [items[i] for i in np.argsort(-p, kind="stable")[:2]]
        got = shown[shown.req_id == req.req_id].sort_values("position")
        assert list(got.item_id) == best and list(got.position) == [1, 2]
        assert list(got.imp_id) == [req.req_id * 2, req.req_id * 2 + 1]
    assert parse_traffic("0-50") == (0, 50)
    for bad in ("50-50", "0-101", "x", "10"):
        with pytest.raises(ConfigError, match="percent buckets"):
            parse_traffic(bad)
