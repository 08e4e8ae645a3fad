"""Experiments on a real local Flink cluster: launch, status, stop, resume, faults.

Correctness is proven by counting against the truth computed from the generated topics —
never by the absence of errors (a late row is dropped silently).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ultron_nb import experiments as ex
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.errors import ClusterError, ConfigError, NotFoundError, SqlError
from ultron_nb.events import latest
from ultron_nb.experiments.savepoints import lineage
from ultron_nb.flow.build import define_node
from ultron_nb.flow.plan import instance_id
from ultron_nb.runners.flink_compile import FlinkCompiler, save_job_spec
from ultron_nb.services.datagen import gen_clicklog
from ultron_nb.store import experiments as repo
from ultron_nb.store import savepoints as sp_repo

from .flink_flows import (
    check_label_join,
    define_ctr_flow,
    topic_rows,
    wait_for,
    watermark_at_least,
)

pytestmark = [pytest.mark.flink, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_bounded_replay_labels_every_impression_exactly(flink_workspace: Any) -> None:
    ws = flink_workspace
    log = gen_clicklog(ws.settings, rate=20, duration=900, partitions=4, seed=1)
    define_ctr_flow(ws)
    st = ex.launch(ws, "ctr", name="replay", bounded=True)
    assert [n.node for n in st.nodes] == ["impressions", "clicks", "label_join", "ctr_minute"]
    st = wait_for(lambda: (s := ex.status(ws, "replay")).state == "finished" and s)
    result = check_label_join(ws, "replay")
    assert result == {"rows": log.impression_count, "duplicates": 0, "missing": 0,
                      "wrong_labels": 0, "due": log.impression_count}
    ctr = ex.preview(ws, "ctr_minute", experiment="replay", limit=1000)
    assert len(ctr) == 15 and ctr.impressions.sum() == log.impression_count
    assert ctr.clicks.sum() == log.click_count
    # Everything is recorded in the store.
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, "replay")
        members = {m.node_name: m.instance_id for m in repo.members(conn, exp.id)}
        job = repo.latest_job(conn, members["label_join"])
    assert exp.flow_name == "ctr" and exp.state == "finished"
    with ws.db.read() as conn:
        inst = repo.get_instance(conn, members["label_join"])
    assert inst is not None
    assert members["label_join"] == instance_id("label_join", inst.identity, exp.target)
    assert job is not None and job.state == "finished" and job.engine == "flink"
    out = Path(ws.settings.home / "topics" / members["label_join"])
    assert out.is_dir() and (out / "p0000").is_dir()


def test_live_experiment_stop_with_savepoint_resume_and_restart_of_the_kernel(
    flink_workspace: Any,
) -> None:
    ws = flink_workspace
    # The label join's output watermark trails its input by the 10 min join window.
    for _ in range(3):  # a backlog of several segments per partition
        gen_clicklog(ws.settings, rate=20, duration=300, partitions=4, seed=2,
                     flush_clicks=False)
    define_ctr_flow(ws)
    st = ex.launch(ws, "ctr", name="live")
    assert st.state == "running", str(st)
    with FlinkRest(ws.settings.target_url) as rest:
        jobs = rest.job_ids()
        assert all(jobs.get(n.job_id) == "running" for n in st.nodes if n.job_id)
        assert st["label_join"].web_url == rest.web_url(st["label_join"].job_id)
    st = wait_for(watermark_at_least(ws, "live", "label_join", "2025-01-01 00:04:00"))
    wm = st["label_join"].watermark_ms
    assert check_label_join(ws, "live", wm)["missing"] == 0

    # New data while it runs: picked up in order.
    gen_clicklog(ws.settings, rate=20, duration=300, partitions=4, seed=2, flush_clicks=False)
    st = wait_for(watermark_at_least(ws, "live", "label_join", "2025-01-01 00:09:00"))
    wm = st["label_join"].watermark_ms
    result = check_label_join(ws, "live", wm)
    assert result["missing"] == result["duplicates"] == result["wrong_labels"] == 0
    # The node downstream reads label_join's committed files: its event time follows once
    # a checkpoint commits them (later than label_join's own on a loaded machine).
    st = wait_for(lambda: (s := ex.status(ws, "live"))["ctr_minute"].watermark_ms is not None
                  and s)
    wm = st["label_join"].watermark_ms

    # The watermark is published for the scheduler.
    event = latest(ws.db, "watermark/live/label_join")
    assert event is not None and event.value <= wm and event.sender == "ultron.flink"

    # A new process (a restarted kernel) sees the truth from the store and Flink.
    code = (
        "from ultron_nb.config import Settings\n"
        "from ultron_nb.workspace import Workspace\n"
        "from ultron_nb import experiments as ex\n"
        f"ws = Workspace(Settings(home=__import__('pathlib').Path({str(ws.settings.home)!r}),"
        f" flink_port={ws.settings.flink_port}))\n"
        "st = ex.status(ws, 'live')\n"
        "print(st.state, st['label_join'].state, st['label_join'].job_id)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["running", "running", st["label_join"].job_id]

    # Stop with a savepoint, write more, resume from it: nothing lost, nothing twice.
    st = ex.stop(ws, "live", savepoint=True)
    assert st.state == "stopped"
    assert all(n.state == "stopped" and n.savepoint for n in st.nodes if n.job_id)
    old_job = st["label_join"].job_id
    gen_clicklog(ws.settings, rate=20, duration=600, partitions=4, seed=2, flush_clicks=True)
    st = ex.resume(ws, "live")
    assert st.state == "running" and st["label_join"].job_id != old_job
    assert st["label_join"].attempt == 2
    st = wait_for(watermark_at_least(ws, "live", "label_join", "2025-01-01 00:19:00"))
    result = check_label_join(ws, "live", st["label_join"].watermark_ms)
    assert result["missing"] == result["duplicates"] == result["wrong_labels"] == 0, result
    assert result["due"] > 22000

    # Preview and ad-hoc SQL over the flow's tables.
    ctr = ex.preview(ws, "ctr_minute", limit=3)
    assert list(ctr.columns) == ["window_start", "window_end", "impressions", "clicks", "ctr"]
    assert len(ctr) == 3 and str(ctr.window_start.dtype).startswith("datetime64")
    frame = ex.sql(ws, "SELECT COUNT(*) AS n FROM impressions", flow="ctr")
    assert int(frame.n[0]) == len(topic_rows(ws, "impressions"))
    assert "note" not in frame.attrs  # one row: nothing was cut
    frame = ex.sql(ws, "SELECT imp_id, label FROM label_join WHERE label = 1", flow="ctr",
                   limit=5)
    assert list(frame.columns) == ["imp_id", "label"] and len(frame) == 5
    assert frame.attrs["note"] == "first 5 rows (more exist: raise --limit)"  # said, not silent

    # A second stop with savepoints: each savepoint records the one its job restored.
    ex.stop(ws, "live", savepoint=True)
    with ws.db.read() as conn:
        taken = sp_repo.of_experiments(conn, ["live"])
    first = {s.node_name: s for s in taken[:2]}
    second = {s.node_name: s for s in taken[2:]}
    assert sorted(first) == sorted(second) == ["ctr_minute", "label_join"]
    assert all(s.parent is None for s in first.values())
    assert {n: s.parent for n, s in second.items()} == {n: s.id for n, s in first.items()}
    join_ops = [op["type"] for op in second["label_join"].operators]
    assert any("interval-join" in t for t in join_ops), join_ops
    tree = str(lineage(ws, "live"))
    assert all(f"  {s.id}  " in tree for s in taken) and "deleted" not in tree

    # An upgrade that drops the join's state (the job to restore no longer joins clicks):
    # refused in one line before anything is submitted, then allowed by name.
    with ws.db.read() as conn:
        inst = repo.member(conn, repo.get_experiment(conn, "live"), "label_join").instance_id
    ws.define("ctr", define_node("label_join", "SELECT i.imp_id, i.user_id, i.item_id, i.ts, "
                                 "0 AS label FROM impressions i", options={
                                     "checkpoint_interval": "1 s"}))
    flow = ws.flow("ctr")
    with ws.db.read() as conn:
        views = repo.node_views(conn, repo.get_experiment(conn, "live").id)
    compiler = FlinkCompiler(ws, flow, {}, {v.member.node_name: v.instance.id for v in views},
                             experiment="live", target=ws.settings.target_url, bounded=False)
    save_job_spec(ws.instance_dir(inst), compiler.compile("label_join").job.spec)
    with FlinkRest(ws.settings.target_url) as rest:
        jobs_before = set(rest.job_ids())
    with pytest.raises(ConfigError) as refused:
        ex.resume(ws, "live")
    message = str(refused.value)
    assert "\n" not in message and "node 'label_join' of 'live'" in message
    assert f"savepoint {second['label_join'].id}" in message and "interval-join" in message
    assert "would be dropped" in message and "clicks" in message
    with FlinkRest(ws.settings.target_url) as rest:
        assert set(rest.job_ids()) == jobs_before  # nothing submitted
    assert ex.status(ws, "live").state == "stopped"
    st = ex.resume(ws, "live", allow_dropped=["label_join"])
    assert st.state == "running" and st["label_join"].state == "running", str(st)
    st = ex.stop(ws, "live")
    assert st.state == "canceled" and st["label_join"].state == "canceled"


def test_invalid_sql_submits_nothing(flink_workspace: Any) -> None:
    ws = flink_workspace
    gen_clicklog(ws.settings, rate=5, duration=60, partitions=2, seed=3)
    define_ctr_flow(ws, partitions=2)
    ws.define("ctr", define_node("ctr_minute", "SELECT window_start, COUNT(*) AS n\n"
                                 "FROM TABLE(TUMBLE(TABLE label_join, DESCRIPTOR(tss), "
                                 "INTERVAL '1' MINUTE))\nGROUP BY window_start, window_end"))
    with FlinkRest(ws.settings.target_url) as rest:
        before = set(rest.job_ids())
        with pytest.raises(SqlError, match=r"node 'ctr_minute': .*line 2.*tss"):
            ex.launch(ws, "ctr", name="bad")
        assert set(rest.job_ids()) == before  # label_join was valid, yet not started
    with pytest.raises(NotFoundError):
        ex.status(ws, "bad")


def test_a_failing_job_shows_its_root_cause_and_can_be_restarted(flink_workspace: Any) -> None:
    ws = flink_workspace
    gen_clicklog(ws.settings, rate=5, duration=60, partitions=1, seed=4)
    define_ctr_flow(ws, partitions=1, restart_attempts="0")
    seg = ws.settings.home / "topics" / "clicks" / "p0000" / "seg-00000000.jsonl"
    good = seg.read_text()
    seg.write_text(good + '{"imp_id": 1, "ts": "not a time"}\n')
    ex.launch(ws, "ctr", name="broken")
    st = wait_for(lambda: (s := ex.status(ws, "broken"))["label_join"].state == "failed" and s)
    assert st.state == "degraded"  # label_join failed, ctr_minute runs on (waiting for data)
    assert "not a time" in (st["label_join"].error or "") or \
        "parse" in (st["label_join"].error or "").lower()
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, "broken")
        inst = next(m.instance_id for m in repo.members(conn, exp.id)
                    if m.node_name == "label_join")
        assert repo.latest_job(conn, inst).error == st["label_join"].error
    seg.write_text(good)
    st = ex.restart_node(ws, "broken", "label_join")
    assert st["label_join"].state == "running" and st["label_join"].attempt == 2


def test_an_unreachable_target_names_the_url(flink_workspace: Any) -> None:
    from ultron_nb.engines.flink.cluster import free_port

    ws = flink_workspace
    define_ctr_flow(ws, partitions=1)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match=f"cannot reach Flink at {url}"):
        ex.launch(ws, "ctr", target=url)


def test_relaunching_the_same_flow_shares_the_running_instances(flink_workspace: Any) -> None:
    ws = flink_workspace
    gen_clicklog(ws.settings, rate=5, duration=120, partitions=1, seed=5)
    define_ctr_flow(ws, partitions=1)
    first = ex.launch(ws, "ctr", name="a")
    second = ex.launch(ws, "ctr", name="b", label="treatment")
    assert second["label_join"].shared_from == "a"
    assert second["label_join"].job_id == first["label_join"].job_id
    # Stopping b leaves a's jobs running: they are still used by a.
    st = ex.stop(ws, "b")
    assert "kept running for a" in st.message
    assert ex.status(ws, "a").state == "running"


def test_stop_of_an_unknown_experiment(flink_workspace: Any) -> None:
    with pytest.raises(NotFoundError, match="no experiment named 'nope'"):
        ex.stop(flink_workspace, "nope")

