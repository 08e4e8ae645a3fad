"""DuckDB nodes run by the real scheduler daemon over real local topics (no Flink needed).

Results are compared with pandas computing the same thing from the topics' rows.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from tests.scheduler.test_loop import launch as record_launch
from tests.support.waiting import wait_until
from ultron_nb import experiments as ex
from ultron_nb.config import Settings
from ultron_nb.errors import FlowError, SqlError
from ultron_nb.events import send_event
from ultron_nb.events.keys import watermark_key
from ultron_nb.flow import Flow
from ultron_nb.flow.build import define_node
from ultron_nb.runners.duckdb_node import output_format
from ultron_nb.scheduler import daemon_status, start_daemon, stop_daemon
from ultron_nb.services.datagen import clicklog_nodes, gen_clicklog, parse_ts
from ultron_nb.store import experiments as repo
from ultron_nb.store.schema import experiments, jobs
from ultron_nb.workspace import Workspace

pytestmark = pytest.mark.slow

CTR_BY_ITEM = """
SELECT i.item_id, COUNT(*) AS impressions, COUNT(c.imp_id) AS clicks
FROM impressions i LEFT JOIN clicks c ON i.imp_id = c.imp_id
GROUP BY i.item_id
"""
TOP_ITEMS = """
SELECT item_id, clicks FROM ctr_by_item
WHERE impressions >= ${min_impressions}
ORDER BY clicks DESC, item_id LIMIT 5
"""




@pytest.fixture
def ws(workdir: Path) -> Iterator[Workspace]:
    workspace = Workspace(Settings(home=workdir / ".ultron"))
    yield workspace
    pid = daemon_status(workspace.settings)
    if pid and pid > 0:
        os.kill(pid, signal.SIGKILL)


def topic_frame(ws: Workspace, name: str) -> pd.DataFrame:
    rows = [json.loads(line) for seg in sorted((ws.settings.home / "topics" / name)
                                               .glob("p*/seg-*.jsonl"))
            for line in seg.read_text().splitlines() if line.strip()]
    return pd.DataFrame(rows)


def node_states(ws: Workspace, experiment: str) -> dict[str, str]:
    return {n.node: n.state for n in ex.status(ws, experiment).nodes}


def test_duckdb_nodes_run_on_launch_and_after_each_other(ws: Workspace) -> None:
    gen_clicklog(ws.settings, rate=20, duration=600, partitions=2, seed=5)
    for node in clicklog_nodes(partitions=2):
        ws.define("report", node)
    ws.define("report", define_node("ctr_by_item", CTR_BY_ITEM, kind="duckdb",
                                    bounded=True))
    ws.define("report", define_node("top_items", TOP_ITEMS, kind="duckdb",
                                    params={"min_impressions": 20}, after=["ctr_by_item"],
                                    options={"format": "json"}))
    start_daemon(ws.settings)
    st = ex.launch(ws, "report", name="r1")  # no Flink node: no cluster needed
    assert st.state in ("waiting", "running")
    states = wait_until(lambda: (s := node_states(ws, "r1"))["top_items"] == "finished" and s,
                        90, "both DuckDB nodes to finish")
    assert states["ctr_by_item"] == "finished"

    imps, clicks = topic_frame(ws, "impressions"), topic_frame(ws, "clicks")
    imps["clicked"] = imps.imp_id.isin(set(clicks.imp_id))
    truth = imps.groupby("item_id").agg(impressions=("imp_id", "size"),
                                        clicks=("clicked", "sum")).reset_index()
    got = ex.preview(ws, "ctr_by_item", experiment="r1", limit=10_000)
    merged = got.merge(truth, on="item_id", suffixes=("", "_truth"))
    assert len(got) == len(truth) == len(merged) > 50
    assert (merged.impressions == merged.impressions_truth).all()
    assert (merged.clicks == merged.clicks_truth).all()

    top = truth[truth.impressions >= 20].sort_values(["clicks", "item_id"],
                                                     ascending=[False, True]).head(5)
    got_top = ex.preview(ws, "top_items", experiment="r1")
    assert list(got_top.item_id) == list(top.item_id)
    assert list(got_top.clicks) == list(top.clicks)

    # Ad-hoc Flink SQL reads a DuckDB node's JSON output as that node wrote it, and says in
    # one line, naming the table, that its Parquet output is beyond the Flink wheel.
    by_sql = ex.sql(ws, "SELECT item_id, clicks FROM top_items", flow="report",
                    experiment="r1")
    assert sorted(zip(by_sql.item_id, by_sql.clicks, strict=True)) == \
        sorted(zip(top.item_id, top.clicks, strict=True))
    with pytest.raises(FlowError, match="table 'ctr_by_item': format 'parquet'"):
        ex.sql(ws, "SELECT * FROM ctr_by_item", flow="report", experiment="r1")

    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, "r1")
        members = {m.node_name: m.instance_id for m in repo.members(conn, exp.id)}
        out = repo.get_instance(conn, members["top_items"]).output
        runs = conn.execute(select(jobs.c.engine, jobs.c.state, jobs.c.attempt)
                            .where(jobs.c.instance_id.in_(
                                [members["ctr_by_item"], members["top_items"]]))).all()
    assert sorted(runs) == [("duckdb", "finished", 1), ("duckdb", "finished", 1)]
    assert out["format"] == "json" and out["rows"] == 5
    assert out["columns"] == [["item_id", "BIGINT"], ["clicks", "BIGINT"]]
    assert (Path(out["path"]) / "data.jsonl").is_file()
    log_text = (ws.settings.home / "logs" / "r1" / "ctr_by_item-1.log").read_text()
    assert "rows →" in log_text
    stop_daemon(ws.settings)


def test_bad_duckdb_sql_stops_the_launch_or_fails_the_run_with_its_reason(
        ws: Workspace) -> None:
    gen_clicklog(ws.settings, rate=5, duration=60, partitions=1, seed=6)
    for node in clicklog_nodes(partitions=1):
        ws.define("bad", node)
    ws.define("bad", define_node("broken", "SELECT item_id FROM impressions; DROP TABLE x",
                                 kind="duckdb", bounded=True))
    with pytest.raises(SqlError, match=r"duckdb node 'broken': expected one SELECT"):
        ex.launch(ws, "bad", name="b1")
    with ws.db.read() as conn:  # nothing recorded
        assert conn.execute(select(experiments.c.name)).all() == []

    ws.define("bad", define_node("broken", "SELECT no_such_column FROM impressions",
                                 kind="duckdb", bounded=True))
    start_daemon(ws.settings)
    ex.launch(ws, "bad", name="b2")
    node = wait_until(lambda: (n := ex.status(ws, "b2")["broken"]).state == "failed" and n,
                      90, "the broken node to fail")
    assert "no_such_column" in (node.error or ""), node.error
    stop_daemon(ws.settings)


def test_a_boundary_triggered_duckdb_node_writes_one_file_per_window(ws: Workspace) -> None:
    """Hourly by the upstream's watermark: each run reads its window (bound parameters)."""
    settings = ws.settings
    gen_clicklog(settings, rate=2, duration=3 * 3600, partitions=2, seed=7)
    hourly = define_node(
        "hourly", "SELECT COUNT(*) AS n, MIN(ts) AS first, MAX(ts) AS last FROM impressions "
                  "WHERE ts >= $window_start AND ts < $window_end",
        kind="duckdb", bounded=True, after=["join"], boundary="1h")
    flow = Flow("w", [*clicklog_nodes(partitions=2),
                      define_node("join", "SELECT imp_id, ts FROM impressions", mode="stream"),
                      hourly])
    record_launch(ws.db, flow, "exp")
    with ws.db.write() as conn:  # where the recorded instances really read and write
        repo.set_instance_output(conn, "impressions_exp", {
            "kind": "topic", "path": str(settings.home / "topics" / "impressions")})
        repo.set_instance_output(conn, "hourly_exp", {
            "kind": "dataset", "layout": "files", "format": output_format(hourly),
            "path": str(settings.home / "topics" / "hourly_exp")})
    start_daemon(settings)
    base = parse_ts("2025-01-01 00:00:00")
    hour = 3_600_000
    for ms in (base + 5, base + hour + 5, base + 2 * hour + 9, base + 3 * hour + 1):
        send_event(ws.db, watermark_key("exp", "join"), ms, sender="flink")
    folder = settings.home / "topics" / "hourly_exp"
    wait_until(lambda: len(list(folder.glob("window-*.parquet"))) == 3, 90,
               "three hourly windows")
    stop_daemon(settings)
    imps = topic_frame(ws, "impressions")
    imps["ms"] = imps.ts.map(parse_ts)
    for h in range(3):
        frame = pd.read_parquet(folder / f"window-20250101T0{h}0000.parquet")
        start, end = base + h * hour, base + (h + 1) * hour
        assert int(frame.n[0]) == int(((imps.ms >= start) & (imps.ms < end)).sum()) > 0
        assert frame["first"][0] >= pd.Timestamp(start, unit="ms")
        assert frame["last"][0] < pd.Timestamp(end, unit="ms")


def test_a_flink_output_is_read_with_the_rows_still_being_written(tmp_path: Path) -> None:
    """Committed part files, then complete lines of in-progress ones; the hidden watermark
    column dropped; declared types applied."""
    from ultron_nb.engines.outputs import JOB_FILE, read_frame

    folder = tmp_path / "label_join_1"
    out = folder / "p0000"
    out.mkdir(parents=True)
    (folder / JOB_FILE).write_text("{}")

    def line(i: int) -> str:
        return json.dumps({"imp_id": i, "ts": f"2025-01-01 00:00:0{i}", "label": i % 2,
                           "__wm": "2025-01-01 00:00:00"}) + "\n"

    (out / "part-u1-0-0").write_text(line(1) + line(2))
    (out / ".part-u1-0-1.inprogress.7f0c").write_text(line(3) + line(4)[:20])
    output = {"kind": "topic", "path": str(folder), "format": "json",
              "columns": [["imp_id", "BIGINT"], ["ts", "TIMESTAMP(3)"], ["label", "INT"]],
              "watermark_column": "__wm"}
    frame = read_frame("label_join", output, what="node 'hourly'")
    assert list(frame.columns) == ["imp_id", "ts", "label"]
    assert list(frame.imp_id) == [1, 2, 3] and str(frame.ts.dtype).startswith("datetime64")


TRAIN = '''
def train(ctx):
    import pandas as pd

    scores = pd.DataFrame({"fold": [1, 2, 3], "auc": [0.70, 0.74, 0.72]})
    scores.to_parquet(ctx.output_path / "scores.parquet")
'''


def test_a_duckdb_node_reads_what_a_python_node_wrote(ws: Workspace) -> None:
    ws.define("m", define_node("train", TRAIN, kind="python"))
    ws.define("m", define_node("evaluate", "SELECT COUNT(*) AS folds, AVG(auc) AS auc "
                                           "FROM train", kind="duckdb", after=["train"]))
    start_daemon(ws.settings)
    ex.launch(ws, "m", name="m1")
    wait_until(lambda: node_states(ws, "m1")["evaluate"] in ("finished", "failed"), 90,
               "the evaluation to end")
    st = ex.status(ws, "m1")
    assert st["evaluate"].state == "finished", st["evaluate"].error
    result = ex.preview(ws, "evaluate", experiment="m1")
    assert int(result.folds[0]) == 3 and abs(float(result.auc[0]) - 0.72) < 1e-9
    scores = ex.preview(ws, "train", experiment="m1")  # what the Python step wrote
    assert list(scores.fold) == [1, 2, 3] and list(scores.auc) == [0.70, 0.74, 0.72]
    stop_daemon(ws.settings)
