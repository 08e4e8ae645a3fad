"""validate and evaluate on the real daemon and a real MLflow store: each new version
fires both; validate moves the champion only for a candidate that is not worse, and
records why it refused one; evaluate logs its metrics to the version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.model_loop import (
    EVALUATE,
    VALIDATE,
    clicklog,
    fitted,
    reversed_model,
    stop_everything,
)
from tests.support.waiting import wait_until
from ultron_nb import experiments
from ultron_nb.config import Settings
from ultron_nb.engines.mlflow.center import Lineage, ModelCenter
from ultron_nb.engines.mlflow.registry import get_version, run_metrics
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.events import recent
from ultron_nb.flow.build import define_node
from ultron_nb.scheduler import start_daemon
from ultron_nb.services.datagen import IMPRESSION_COLUMNS
from ultron_nb.services.learning import holdout_mask
from ultron_nb.services.stats import binary_metrics
from ultron_nb.workspace import Workspace

pytestmark = pytest.mark.slow
HOUR = 3_600_000


@pytest.fixture
def ws(ms_settings: Settings) -> Iterator[Workspace]:
    workspace = Workspace(ms_settings)
    yield workspace
    stop_everything(workspace)


def test_validate_refuses_a_worse_candidate_and_says_why(ws: Workspace, workdir: Path) -> None:
    rows = clicklog(str(workdir / "history"), 9, 3.0, 3.0)
    t0 = int(rows.ts_ms.min()) // HOUR * HOUR
    hours = [rows[(rows.ts_ms >= t0 + h * HOUR) & (rows.ts_ms < t0 + (h + 1) * HOUR)]
             for h in range(3)]
    columns = [*IMPRESSION_COLUMNS, ("label", "INT")]
    samples = LocalTopic(ws.settings.home / "topics" / "samples", 1, columns, "ts").create()
    samples.append(0, rows[[c for c, _ in columns]].to_dict("records"))
    for node in (define_node("samples", ", ".join(f"{c} {t}" for c, t in columns),
                             kind="topic", time="ts"),
                 define_node("validate", VALIDATE, kind="python", inputs=["samples"],
                             bounded=True, on_model="ctr_model"),
                 define_node("evaluate", EVALUATE, kind="python", inputs=["samples"],
                             bounded=True, on_model="ctr_model")):
        ws.define("checks", node)
    start_daemon(ws.settings)
    experiments.launch(ws, "checks", name="exp")
    mc = ModelCenter(ws.settings, ws.db)
    good = fitted(hours[0][~holdout_mask(hours[0], "imp_id", 10)])
    better = fitted(hours[1][~holdout_mask(hours[1], "imp_id", 10)])
    candidates = [(good, 0), (reversed_model(good), 1), (better.partial_fit(
        hours[0][~holdout_mask(hours[0], "imp_id", 10)],
        hours[0][~holdout_mask(hours[0], "imp_id", 10)].label), 1)]
    verdicts = []
    for n, (model, hour) in enumerate(candidates, start=1):
        mc.register(model, name="ctr_model", lineage=Lineage(
            "exp", node="train", window=(t0 + hour * HOUR, t0 + (hour + 1) * HOUR)))
        verdicts = wait_until(lambda n=n: len(recent(ws.db, "validate/ctr_model")) >= n
                              and recent(ws.db, "validate/ctr_model"), 180, f"verdict {n}")
        wait_until(lambda n=n: len(recent(ws.db, "evaluate/ctr_model")) >= n, 120,
                   f"evaluation {n}")
    by_version = {e.value["version"]: e.value for e in verdicts}
    assert [by_version[v]["passed"] for v in (1, 2, 3)] == [True, False, True]
    assert mc.alias_version("ctr_model", "champion") == 3
    assert [h["version"] for h in mc.history("ctr_model", "champion")] == [1, 3]
    # The refusal is recorded on the version, with the numbers that decided it ...
    refused = get_version(mc.client, "ctr_model", 2)
    assert refused is not None and refused.tags["ultron.validate"] == "refused"
    reason = refused.tags["ultron.validate.reason"]
    assert reason.startswith("AUC ") and "< champion v1's" in reason, reason
    assert refused.tags["ultron.validate.champion"] == "1"
    # ... and they are right: both models scored on hour 1's held-out rows.
    held = hours[1][holdout_mask(hours[1], "imp_id", 10)]
    want = binary_metrics(held.label, reversed_model(good).predict(held))
    got = run_metrics(mc.client, refused.run_id)
    assert got["validate_auc"] == pytest.approx(want["auc"]) and want["auc"] < 0.5
    assert got["validate_champion_auc"] == pytest.approx(
        binary_metrics(held.label, good.predict(held))["auc"])
    assert got["validate_rows"] == len(held)
    assert by_version[2]["reason"] == reason and by_version[2]["champion"] == 1
    # evaluate logged AUC, log loss and calibration to every version.
    for version in (1, 2, 3):
        info = get_version(mc.client, "ctr_model", version)
        assert info is not None
        metrics = run_metrics(mc.client, info.run_id)
        assert {"eval_auc", "eval_logloss", "eval_ece", "eval_rows"} <= set(metrics)
        assert metrics["eval_auc_low"] <= metrics["eval_auc"] <= metrics["eval_auc_high"]
        table = json.loads(Path(mc.client.download_artifacts(
            info.run_id, "evaluate/calibration.json", str(workdir))).read_text())
        assert sum(b["rows"] for b in table["bins"]) == metrics["eval_rows"] == table["rows"]
    assert run_metrics(mc.client, refused.run_id)["eval_auc"] < 0.5
