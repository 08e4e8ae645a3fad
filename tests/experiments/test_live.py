"""Live views against real parts: ``sql --follow`` in this process's mini cluster (changelog
table counted against the topic, the job cancelled at the cap), ``preview --follow`` on a
node of a running experiment, and the watch on a real cluster (rows counted against the
output files, the watch ending when the experiment stops, backoff against a dead cluster)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.services.flink_flows import define_ctr_flow, topic_rows, wait_for
from ultron_nb import experiments as ex
from ultron_nb.config import Settings
from ultron_nb.engines.outputs import count_rows
from ultron_nb.experiments.follow_sources import follow_preview, follow_sql
from ultron_nb.services.datagen import gen_clicklog
from ultron_nb.workspace import Workspace

pytestmark = [pytest.mark.flink, pytest.mark.slow]

COUNTS = "SELECT item_id, COUNT(*) AS n FROM impressions GROUP BY item_id"


def _follow_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("ultron-")]


@pytest.fixture
def topics_ws(tmp_path: Path) -> Workspace:
    """Two generated topics in a flow; no cluster (sql --follow runs in this process)."""
    ws = Workspace(Settings(home=tmp_path / ".ultron"))
    gen_clicklog(ws.settings, rate=4, duration=150, partitions=2, items=40, seed=5)
    define_ctr_flow(ws, "ctr", partitions=2)
    return ws


def test_sql_follow_builds_the_upsert_table_and_its_cap_cancels_the_job(
        topics_ws: Workspace) -> None:
    ws = topics_ws
    truth = Counter(r["item_id"] for r in topic_rows(ws, "impressions"))
    f = follow_sql(ws, COUNTS, flow="ctr", limit=10**6, duration=600)
    deadline = time.monotonic() + 300
    while dict(f.table.rows) != dict(truth) and not f.done and time.monotonic() < deadline:
        f.poll(0.5)
    assert not f.done, f.headline
    f.finish("interrupted")
    assert dict(f.table.rows) == dict(truth)  # every count exactly the topic's
    assert f.table.mode == "update" and f.table.key == ["item_id"]
    # One row per item, updated in place: each further impression retracts and updates it.
    assert f.table.counts["+I"] == len(truth)
    assert f.table.counts["-U"] == f.table.counts["+U"] == sum(truth.values()) - len(truth)
    assert f.outcome == "canceled" and not _follow_threads()

    # Append mode: the cap is the 25th row; the job is cancelled there, not drained.
    ids = {r["imp_id"] for r in topic_rows(ws, "impressions")}
    g = follow_sql(ws, "SELECT imp_id, item_id FROM impressions", flow="ctr", limit=25,
                   duration=300)
    g.run()
    assert g.reason == "limit" and len(g.table) == 25 and g.table.mode == "append"
    assert {r[0] for r in g.table.rows} <= ids and len({r[0] for r in g.table.rows}) == 25
    assert g.outcome == "canceled"  # Flink says the job was cancelled at the cap
    assert not _follow_threads()
    assert not (ws.home / "tmp").exists()  # the ordered source reads in place: no copies

    # A mistake in the query is one line, naming the follow; nothing is left running.
    bad = follow_sql(ws, "SELECT nope FROM impressions", flow="ctr", limit=5, duration=60)
    with pytest.raises(Exception, match=r"sql --follow.*Column .nope. not found"):
        bad.run()
    assert not _follow_threads()


def test_preview_follow_shows_the_rows_a_running_node_writes(flink_workspace: Any) -> None:
    ws = flink_workspace
    gen_clicklog(ws.settings, rate=5, duration=120, partitions=2, seed=9)
    define_ctr_flow(ws, "ctr", partitions=2, label_window="1")  # rows out 1 min after in
    st = ex.launch(ws, "ctr", name="p")
    member = ex.find_member(ws, "label_join", "p", None)
    assert member is not None and st["label_join"].state == "running"
    inst_output = member[1].output
    wait_for(lambda: (count_rows(inst_output) or 0) > 0, 180)
    wait_for(lambda: ex.status(ws, "p")["label_join"].watermark_ms is not None, 120)
    before = {json.loads(x)["imp_id"] for x in _lines(inst_output)}

    f = follow_preview(ws, "label_join", experiment="p", limit=30, duration=180)
    f.start()
    f.poll(1.0)
    assert len(f.table) == 0  # rows already there are not shown again
    gen_clicklog(ws.settings, rate=5, duration=120, partitions=2, seed=9)  # 10 more minutes
    f.run()
    assert f.reason == "limit" and len(f.table) == 30
    got = [r[f.columns.index("imp_id")] for r in f.table.rows]
    assert len(set(got)) == 30 and not set(got) & before  # new rows, each once
    final = {json.loads(x)["imp_id"] for x in _lines(inst_output)}
    assert set(got) <= final
    assert "label" in f.columns and "__wm" not in f.columns


def _lines(output: dict[str, Any]) -> list[str]:
    from ultron_nb.engines.outputs import flink_files, read_output_file

    return [x for p in flink_files(Path(output["path"]))
            for x in read_output_file(p).decode().splitlines() if x.strip()]


def test_watch_counts_the_rows_and_ends_when_the_experiment_stops(
        flink_workspace: Any) -> None:
    ws = flink_workspace
    gen_clicklog(ws.settings, rate=5, duration=180, partitions=2, seed=2)
    define_ctr_flow(ws, "ctr", partitions=2, label_window="1")
    ex.launch(ws, "ctr", name="w")
    member = ex.find_member(ws, "label_join", "w", None)
    assert member is not None
    output = member[1].output
    watcher = ex.watch(ws, "w", interval=0.5)
    snaps: list[Any] = []
    watcher.start(snaps.append)
    try:
        wait_for(lambda: snaps and snaps[-1].rows.get("label_join"), 240)
        # Rows arriving show as a rate (Flink's meter of the sink writer)...
        gen_clicklog(ws.settings, rate=5, duration=180, partitions=2, seed=2)
        wait_for(lambda: snaps[-1].rates.get("label_join", 0) > 0, 180)
        # ... and the writer's count (Flink's metric) reaches the rows in the output files.
        wait_for(lambda: snaps[-1].rows.get("label_join") == count_rows(output), 240)
        assert snaps[-1].status["label_join"].state == "running" and not snaps[-1].error
        ex.stop(ws, "w")
        wait_for(lambda: not watcher.running, 60)  # the watch ended by itself
    finally:
        watcher.stop()
    last = snaps[-1]
    assert last.ended and last.status.state == "canceled"  # a stop without savepoints
    assert {last.status[n].state for n in ("label_join", "ctr_minute")} == {"canceled"}
    assert "ultron-watch-w" not in _follow_threads()


def test_watch_backs_off_while_the_cluster_does_not_answer(tmp_path: Path) -> None:
    from tests.server.seed import define_wide_flow
    from ultron_nb.engines.flink.cluster import free_port
    from ultron_nb.store import experiments as repo

    ws = Workspace(Settings(home=tmp_path / ".ultron"))
    define_wide_flow(ws, flink_nodes=1)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with ws.db.write() as conn:
        exp = repo.create_experiment(conn, name="gone", flow_name="wide", flow_version=3,
                                     params={}, label="gone", target=dead, state="running")
        repo.save_instance(conn, repo.InstanceRow(
            id="n_0_x", identity="x", target=dead, node_name="n_0", flow_name="wide",
            flow_version=3, params={}, upstream={}, output={}, state="running"))
        repo.link_node(conn, exp.id, "n_0", "n_0_x")
        repo.add_job(conn, instance_id="n_0_x", engine="flink", external_id="ab" * 16,
                     target=dead, state="running")
    w = ex.watch(ws, "gone", interval=0.05, max_interval=0.4, duration=3)
    snaps = list(w.snapshots())
    assert all("cannot reach Flink at" in s.error for s in snaps)
    assert {s.retry_in for s in snaps} == {0.4}  # backed off to the maximum at once
    assert 3 <= len(snaps) <= 3 / 0.4 + 2  # about one try per 0.4 s, not one per 0.05 s
    assert str(snaps[-1]).count("\n") >= 2 and "retrying in" in snaps[-1].headline
