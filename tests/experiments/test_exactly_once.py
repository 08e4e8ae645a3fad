"""Exactly once across the whole link when a task manager dies: ``kill -9`` of the local
cluster's task manager in the middle of the rides flow (three Flink nodes in a chain, a Python
and a DuckDB node downstream), and again while a checkpoint is under way; and on the CTR link
(impressions and clicks → label join → CTR per minute) during a checkpoint.

The scheduler starts the task manager again, Flink restarts every job from its last
checkpoint, and every node's committed output then equals the truth computed from the
topics (what an undisturbed run gives): nothing lost, nothing twice; each hourly training
window runs once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest_flink import _down_by_pid, use_job_server
from tests.services.flink_flows import (
    check_label_join,
    define_ctr_flow,
    wait_for,
    watermark_at_least,
)
from tests.support.chaos import (
    await_recovered,
    checkpoint_outcome,
    kill_during_checkpoints,
    kill_taskmanager,
    restarts,
)
from tests.support.waiting import wait_until
from ultron_nb import experiments as ex
from ultron_nb.config import Settings
from ultron_nb.engines.flink import restores
from ultron_nb.engines.flink.cluster import LocalCluster, free_port
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.scheduler import daemon_status, start_daemon, stop_daemon
from ultron_nb.services.datagen import gen_clicklog
from ultron_nb.workspace import Workspace

from .rides import (
    FLINK_NODES,
    T0,
    Rides,
    clean,
    define_rides,
    exact_before,
    ledger,
    trained_hours,
    truth,
)

pytestmark = [pytest.mark.flink, pytest.mark.slow]


@pytest.fixture
def own_cluster(tmp_path: Path, job_server: Path) -> Iterator[tuple[Any, LocalCluster]]:
    """A workspace with a local cluster of its own (its task manager gets killed) and the
    scheduler daemon (which starts a dead task manager again)."""
    home = tmp_path / ".ultron"
    use_job_server(home, job_server)
    settings = Settings(home=home, flink_port=free_port())
    cluster = LocalCluster(settings, slots=4, taskmanager_memory="1280m",
                           jobmanager_memory="1024m")
    cluster.up()
    start_daemon(settings)
    try:
        yield Workspace(settings), cluster
    finally:
        pid = daemon_status(settings)
        try:
            stop_daemon(settings, timeout=20)
        except Exception:
            if pid and pid > 0:
                os.kill(pid, signal.SIGKILL)
        _down_by_pid(cluster)


def test_a_killed_task_manager_loses_and_repeats_nothing_in_any_node(
        own_cluster: tuple[Any, LocalCluster], tmp_path: Path) -> None:
    ws, cluster = own_cluster
    out = tmp_path / "ledger"
    out.mkdir()
    rides = Rides(ws.settings.home)
    define_rides(ws, out)
    for h in range(4):
        rides.hour(h)
    st = ex.launch(ws, "rides", name="chaos")
    jobs = {n: st[n].job_id for n in FLINK_NODES}
    assert all(jobs.values()), str(st)
    rest = FlinkRest(ws.settings.target_url)
    try:
        # 1. In the middle of the run: the first training is done, the backlog is not.
        wait_until(lambda: len(trained_hours(out)) >= 1, 240, "a first training run")
        before = {j: restarts(rest, j) for j in jobs.values()}
        killed = kill_taskmanager(cluster)
        first = await_recovered(cluster, rest, before, killed, timeout=180)

        # 2. While a checkpoint is under way (more data keeps them busy).
        for h in range(4, 8):
            rides.hour(h)
        before = {j: restarts(rest, j) for j in jobs.values()}
        killed, triggers = kill_during_checkpoints(cluster, rest, jobs.values())
        second = await_recovered(cluster, rest, before, killed, timeout=180)
        # Each checkpoint the kill caught ended one way or the other: failed (the tasks had
        # not all acknowledged it), or completed with its commit never seen by the dead task
        # manager (the recovery commits it): both must leave the outputs exact.
        assert triggers and all(checkpoint_outcome(rest, j, t) in ("failed", "completed")
                                for j, t in triggers.items())
    finally:
        rest.close()
    assert ex.status(ws, "chaos").state == "running"
    st = ex.status(ws, "chaos")
    assert {n: st[n].job_id for n in FLINK_NODES} == jobs  # restarted in place by Flink,
    # not resubmitted; both restarts of every job are known, so readers of in-progress rows
    # (the previews below, the Python node) skip the part files the failed attempts left
    for node, job in jobs.items():
        known = restores.restores(ws.instance_dir(st[node].instance))
        assert len({r.restored_ms for r in known if r.job_id == job}) >= 2, (node, known)

    wait_until(lambda: len(trained_hours(out)) >= 5, 300, "five hourly trainings")
    report = wait_until(lambda: (r := exact_before(ws, "chaos", 5)) and clean(r) and r, 180,
                        "every node's output before 05:00 to equal the truth")
    assert clean(report), report
    hours = trained_hours(out)
    assert len(hours) == len(set(hours)), f"a window ran twice: {hours}"
    assert hours == [str(pd.Timestamp(T0) + pd.Timedelta(hours=h)) for h in range(len(hours))]
    samples = truth(ws.settings.home)["samples"]
    for row in ledger(out):
        hour = pd.Timestamp(row["hour"])
        assert row["rows"] == int(((samples.ts >= hour) &
                                   (samples.ts < hour + pd.Timedelta(hours=1))).sum())
    assert 0 < first < 180 and 0 < second < 180
    ex.stop(ws, "chaos")


def test_the_ctr_link_survives_a_task_manager_killed_during_a_checkpoint(
        own_cluster: tuple[Any, LocalCluster]) -> None:
    ws, cluster = own_cluster
    for _ in range(3):  # a backlog of several segments per partition (15 minutes)
        gen_clicklog(ws.settings, rate=20, duration=300, partitions=4, seed=5,
                     flush_clicks=False)
    define_ctr_flow(ws)
    st = ex.launch(ws, "ctr", name="ctr_chaos")
    jobs = [st[n].job_id for n in ("label_join", "ctr_minute")]
    # (the join's output watermark trails its input by the 10 minutes of its window)
    wait_for(watermark_at_least(ws, "ctr_chaos", "label_join", "2025-01-01 00:04:00"), 240)
    for last in (False, True):  # 10 more minutes while it runs
        gen_clicklog(ws.settings, rate=20, duration=300, partitions=4, seed=5,
                     flush_clicks=last)
    with FlinkRest(ws.settings.target_url) as rest:
        before = {j: restarts(rest, j) for j in jobs}
        killed, triggers = kill_during_checkpoints(cluster, rest, jobs)
        await_recovered(cluster, rest, before, killed, timeout=180)
        assert triggers
    st = wait_for(watermark_at_least(ws, "ctr_chaos", "label_join", "2025-01-01 00:14:00"),
                  300)
    result = check_label_join(ws, "ctr_chaos", st["label_join"].watermark_ms)
    # Both jobs' restarts are known, so the part files their failed attempts left behind
    # are not read again (the preview reads in-progress files too).
    for node, job in zip(("label_join", "ctr_minute"), jobs, strict=True):
        known = restores.restores(ws.instance_dir(st[node].instance))
        assert known and {r.job_id for r in known} == {job}, (node, known)
    assert result["missing"] == result["duplicates"] == result["wrong_labels"] == 0, result
    assert result["due"] > 10000
    minutes = ex.preview(ws, "ctr_minute", experiment="ctr_chaos", limit=1000)
    assert not minutes.window_start.duplicated().any()
    ex.stop(ws, "ctr_chaos")
