"""The quality watcher on a real store: a DuckDB node's output measured once per finished
run (a violation event per failing rule, none twice across looks and watchers), a rule on a
missing column logged without stopping the others."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from ultron_nb.config import Settings
from ultron_nb.engines.quality_watcher import QualityWatcher
from ultron_nb.events import recent
from ultron_nb.flow.build import define_node
from ultron_nb.services.quality import define_rules, quality_report
from ultron_nb.store import experiments as repo
from ultron_nb.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace(Settings(home=tmp_path / ".ultron"))
    ws.define("f", define_node("src", "id BIGINT, v DOUBLE", kind="dataset",
                               path=str(tmp_path / "src.parquet")))
    ws.define("f", define_node("agg", "SELECT id, v FROM src", kind="duckdb"))
    return ws


def _run(ws: Workspace, out: Path, frame: pd.DataFrame) -> None:
    """A finished run of ``agg`` in experiment e that wrote ``frame``."""
    out.mkdir(exist_ok=True)
    frame.to_parquet(out / "part-0.parquet")
    flow = ws.flow("f")
    with ws.db.write() as conn:
        if not repo.experiment_exists(conn, "e"):
            exp = repo.create_experiment(conn, name="e", flow_name="f",
                                         flow_version=int(flow.version or 0), params={},
                                         label="e", target="", state="running")
            repo.save_instance(conn, repo.InstanceRow(
                "e.agg", "x", "", "agg", "f", int(flow.version or 0), {}, {},
                {"path": str(out), "format": "parquet"}, "finished"))
            repo.link_node(conn, exp.id, "agg", "e.agg")
        job = repo.add_job(conn, instance_id="e.agg", engine="duckdb", external_id=None,
                           target="", state="running")
        repo.update_job(conn, job.id, state="finished")


def test_each_finished_run_is_measured_once(ws: Workspace, tmp_path: Path) -> None:
    define_rules(ws, "f", "agg", "unique(id)\nv between 0 and 1")
    out = tmp_path / "agg"
    _run(ws, out, pd.DataFrame({"id": [1, 2, 2, 3], "v": [0.1, 0.5, 0.5, 7.0]}))
    watcher = QualityWatcher(ws.db, interval=0)
    assert watcher.poll() == 2
    assert watcher.poll() == 0 and QualityWatcher(ws.db, interval=0).poll() == 0
    events = {e.key: e.value for e in recent(ws.db, "quality/e/*")}
    assert set(events) == {"quality/e/agg/unique_id", "quality/e/agg/range_v"}
    assert events["quality/e/agg/unique_id"]["samples"] == [{"id": 2, "rows": 2}]
    assert events["quality/e/agg/range_v"]["samples"][0]["v"] == 7.0
    assert quality_report(ws, "e").failing == {"agg": ["range_v", "unique_id"]}
    assert quality_report(ws, "e").look_first == ["agg"]
    # the next run is clean: measured, and nothing fails any more
    _run(ws, out, pd.DataFrame({"id": [1, 2], "v": [0.1, 0.5]}))
    assert watcher.poll() == 0
    rep = quality_report(ws, "e")
    assert rep.failing == {} and {r[1]: (r[7], r[8]) for r in rep.table.rows} == \
        {"unique_id": (2, 1), "range_v": (2, 1)}


def test_a_rule_on_a_missing_column_is_logged_once(ws: Workspace, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    define_rules(ws, "f", "agg", "null_rate(ghost) <= 0")
    _run(ws, tmp_path / "agg", pd.DataFrame({"id": [1], "v": [0.1]}))
    watcher = QualityWatcher(ws.db, interval=0)
    with caplog.at_level(logging.WARNING, logger="ultron_nb.engines.quality_watcher"):
        assert watcher.poll() == 0 and watcher.poll() == 0
    lines = [r.getMessage() for r in caplog.records if "ghost" in r.getMessage()]
    assert len(lines) == 1 and "node 'agg': rule 'nulls_ghost'" in lines[0]
