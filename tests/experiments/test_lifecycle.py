"""The experiment lifecycle on the rides flow (not the CTR demo), on a real cluster with the
real scheduler daemon: stop with savepoints while the scheduler runs, resume, restart of any
node kind, relaunch, launch on another cluster, shared jobs under clones, the slot check.

Every output is counted against the truth computed from the topic files: missing,
duplicated, wrong — and each hourly training window must run exactly once.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest

from tests.faults.faults import row_hashes
from tests.support.waiting import wait_until
from ultron_nb import experiments as ex
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.errors import ClusterError, FlowError, NotFoundError
from ultron_nb.events.keys import NodeState
from ultron_nb.experiments.savepoints import lineage
from ultron_nb.flow.build import define_node
from ultron_nb.scheduler import daemon_status, start_daemon, stop_daemon
from ultron_nb.services.clone import clone
from ultron_nb.store import experiments as repo
from ultron_nb.store import savepoints as sp_repo

from .rides import (
    FLINK_NODES,
    T0,
    Rides,
    clean,
    define_rides,
    exact_before,
    ledger,
    output,
    trained_hours,
    truth,
)

pytestmark = [pytest.mark.flink, pytest.mark.slow]

@pytest.fixture
def rides_ws(flink_workspace: Any, tmp_path: Path) -> Iterator[tuple[Any, Rides, Path]]:
    ws = flink_workspace
    out = tmp_path / "ledger"
    out.mkdir()
    start_daemon(ws.settings)
    try:
        yield ws, Rides(ws.settings.home), out
    finally:
        pid = daemon_status(ws.settings)
        try:
            stop_daemon(ws.settings, timeout=20)
        except Exception:
            if pid and pid > 0:
                os.kill(pid, signal.SIGKILL)


def test_stop_with_savepoints_while_the_scheduler_runs_then_resume_loses_nothing(
        rides_ws: tuple[Any, Rides, Path]) -> None:
    """Defects 1 and 2: every Flink node gets a savepoint (the scheduler cancels none), the
    Python and DuckDB nodes do not block resume, and each hourly window trains once."""
    ws, rides, out = rides_ws
    define_rides(ws, out)
    for h in range(5):  # a backlog; samples are complete two hours behind the data
        rides.hour(h)
    st = ex.launch(ws, "rides", name="r1")
    assert {n.node: n.state for n in st.nodes if n.node in FLINK_NODES} == \
        dict.fromkeys(FLINK_NODES, "running")
    wait_until(lambda: len(trained_hours(out)) >= 2, 240, "two hourly trainings")

    stopped = ex.stop(ws, "r1", savepoint=True)
    assert stopped.state == "stopped"
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, "r1")
        views = {v.member.node_name: v for v in repo.node_views(conn, exp.id)}
    for node in FLINK_NODES:
        job = views[node].job
        assert job is not None and job.state == NodeState.STOPPED and job.savepoint, node
    with FlinkRest(ws.settings.target_url) as rest:
        states = rest.job_ids()
        assert all(states.get(views[n].job.external_id) == "finished" for n in FLINK_NODES)
    trained_at_stop = trained_hours(out)
    # Each savepoint is in the lineage: its experiment, flow version, the state it holds.
    with ws.db.read() as conn:
        first = {s.node_name: s for s in sp_repo.of_experiments(conn, ["r1"])}
    assert sorted(first) == sorted(FLINK_NODES)
    for node, sp in first.items():
        assert (sp.location, sp.parent, sp.flow_version) == \
            (views[node].job.savepoint, None, exp.flow_version)
        kinds = {op["type"].rsplit("_", 1)[0] for op in sp.operators or []}
        assert {"stream-exec-table-source-scan", "stream-exec-sink"} <= kinds, (node, kinds)
    held = {n: [op["type"].rsplit("_", 1)[0] for op in sp.operators or []]
            for n, sp in first.items()}
    assert any(t.endswith("window-aggregate") for t in held["rider_hourly"]), held
    assert "stream-exec-interval-join" in held["matched"], held

    for h in range(5, 8):  # data keeps arriving while the experiment is stopped
        rides.hour(h)
    resumed = ex.resume(ws, "r1")
    assert resumed.state == "running", resumed
    assert all(resumed[n].state == "running" for n in FLINK_NODES)
    wait_until(lambda: len(trained_hours(out)) >= 5, 300, "five hourly trainings")
    report = wait_until(lambda: (r := exact_before(ws, "r1", 5)) and clean(r) and r, 120,
                        "the outputs before 05:00 to equal the truth")
    assert clean(report), report

    hours = trained_hours(out)
    assert len(hours) == len(set(hours)), f"a window ran twice: {hours}"
    expected = [str(pd.Timestamp(T0) + pd.Timedelta(hours=h)) for h in range(len(hours))]
    assert hours == expected, f"a window was skipped: {hours}"
    assert set(trained_at_stop) < set(hours)
    samples = truth(ws.settings.home)["samples"]
    for row in ledger(out):
        hour = pd.Timestamp(row["hour"])
        assert row["rows"] == int(((samples.ts >= hour) &
                                   (samples.ts < hour + pd.Timedelta(hours=1))).sum())
    # The DuckDB node evaluated after the last training run, over every training output.
    wait_until(lambda: len(output(ws, "r1", "evaluate")) == len(hours), 60,
               "evaluate to see every trained hour")
    ev = output(ws, "r1", "evaluate")
    assert list(ev.n) == [r["rows"] for r in ledger(out)]

    # Stopped again: the new savepoints come from the first ones. One deleted by hand is
    # refused in one line naming the node and the savepoint; nothing changes or starts.
    ex.stop(ws, "r1", savepoint=True)
    with ws.db.read() as conn:
        second = {s.node_name: s for s in sp_repo.of_experiments(conn, ["r1"])
                  if s.id not in {f.id for f in first.values()}}
    assert {n: s.parent for n, s in second.items()} == {n: s.id for n, s in first.items()}
    gone = second["samples"]
    shutil.rmtree(urlsplit(gone.location).path)
    assert "deleted" in str(lineage(ws, "r1"))
    before = row_hashes(ws.settings.home / "ultron.db")
    with FlinkRest(ws.settings.target_url) as rest:
        jobs_before = set(rest.job_ids())
    with pytest.raises(NotFoundError) as refused:
        ex.resume(ws, "r1")
    message = str(refused.value)
    assert "\n" not in message and "node 'samples' of 'r1'" in message, message
    assert f"savepoint {gone.id}" in message and "no longer exists" in message
    assert row_hashes(ws.settings.home / "ultron.db") == before
    with FlinkRest(ws.settings.target_url) as rest:
        assert set(rest.job_ids()) == jobs_before


def test_restart_works_for_every_node_kind_and_a_fresh_launch_shows_no_old_state(
        rides_ws: tuple[Any, Rides, Path]) -> None:
    ws, rides, out = rides_ws
    define_rides(ws, out)
    for h in range(4):
        rides.hour(h)
    ex.launch(ws, "rides", name="a")
    wait_until(lambda: trained_hours(out), 240, "a first training")
    runs = len(ledger(out))
    st = ex.restart_node(ws, "a", "train")  # a Python node: a new run, through the scheduler
    wait_until(lambda: len(ledger(out)) > runs, 60, "the restarted training run")
    st = ex.restart_node(ws, "a", "matched")  # a Flink node: afresh, output recomputed
    assert st["matched"].state == "running" and (st["matched"].attempt or 0) >= 2
    ex.stop(ws, "a")
    # A new experiment of the same identities: its own instances, nothing "finished" yet.
    fresh = ex.launch(ws, "rides", name="b")
    for name in ("train", "evaluate"):
        assert fresh[name].state == "waiting", fresh
    old = ex.status(ws, "a")
    for n in fresh.nodes:
        if n.node not in ("requests", "accepts"):
            assert n.instance != old[n.node].instance, n.node
    ex.stop(ws, "b")


def test_relaunch_writes_a_new_output_and_duplicates_nothing(
        rides_ws: tuple[Any, Rides, Path]) -> None:
    """Defect 4: a relaunch of identities an earlier experiment used reads no old output as
    backlog: its outputs equal the truth, not twice or more."""
    ws, rides, out = rides_ws
    define_rides(ws, out)
    for h in range(4):
        rides.hour(h)
    ex.launch(ws, "rides", name="first")
    wait_until(lambda: clean(exact_before(ws, "first", 2)), 180, "first's outputs")
    ex.stop(ws, "first")
    ex.launch(ws, "rides", name="again")
    last: dict[str, Any] = {}

    def again_clean() -> Any:
        last["report"] = exact_before(ws, "again", 2)
        return clean(last["report"]) and last["report"]

    try:
        report = wait_until(again_clean, 180, "again's outputs to equal the truth")
    except AssertionError as e:
        raise AssertionError(f"{e}: {last.get('report')}") from None
    assert clean(report), report
    ex.stop(ws, "again")


def test_a_launch_on_another_cluster_never_mixes_with_the_local_one(
        rides_ws: tuple[Any, Rides, Path], remote_flink_cluster: Any) -> None:
    """Defect 5: the cluster is part of an instance: two clusters share no instance, output
    or job record."""
    ws, rides, out = rides_ws
    define_rides(ws, out)
    for h in range(3):
        rides.hour(h)
    local = ex.launch(ws, "rides", name="loc")
    remote = ex.launch(ws, "rides", name="rem", target=remote_flink_cluster.url)
    for node in FLINK_NODES:
        assert local[node].instance != remote[node].instance
        assert local[node].job_id != remote[node].job_id
        assert local[node].output != remote[node].output
    with FlinkRest(remote_flink_cluster.url) as rest:
        on_remote = set(rest.job_ids())
    assert not {local[n].job_id for n in FLINK_NODES} & on_remote
    ex.stop(ws, "rem")
    again = ex.status(ws, "loc")
    assert all(again[n].state == "running" for n in FLINK_NODES), again
    assert {again[n].job_id for n in FLINK_NODES} == {local[n].job_id for n in FLINK_NODES}
    report = wait_until(lambda: (r := exact_before(ws, "loc", 1)) and clean(r) and r, 180,
                        "loc's outputs")
    assert clean(report), report
    ex.stop(ws, "loc")


def test_a_shared_job_runs_on_while_any_clone_holds_it(
        rides_ws: tuple[Any, Rides, Path]) -> None:
    """Defect 6: v1 → exp (shares matched from v1) → stop v1 → clone exp → exp2 → stop exp:
    matched keeps running for exp2, and stops when its last holder stops."""
    ws, rides, out = rides_ws
    define_rides(ws, out)
    rides.hour(0)
    v1 = ex.launch(ws, "rides", name="v1")
    exp = ex.launch(ws, "rides", name="exp", params={"train.ledger": str(out / "exp")})
    assert exp["matched"].instance == v1["matched"].instance
    assert exp["matched"].shared_from == "v1"
    ex.stop(ws, "v1")
    assert ex.status(ws, "exp")["matched"].state == "running"
    result = clone(ws, "exp", "exp2", {"train.ledger": str(out / "exp2")})
    exp2 = result.status  # type: ignore[union-attr]
    assert exp2["matched"].instance == v1["matched"].instance
    ex.stop(ws, "exp")
    assert ex.status(ws, "exp2")["matched"].state == "running"
    with FlinkRest(ws.settings.target_url) as rest:
        assert rest.job_state(str(exp2["matched"].job_id)) == "running"
    ex.stop(ws, "exp2")
    with FlinkRest(ws.settings.target_url) as rest:
        assert rest.job_state(str(exp2["matched"].job_id)) == "canceled"


def test_a_launch_needing_more_slots_than_are_free_is_refused_before_anything_is_recorded(
        rides_ws: tuple[Any, Rides, Path]) -> None:
    """Defect 7: one line with needed, free and how to get more; the store unchanged."""
    ws, rides, out = rides_ws
    define_rides(ws, out)
    rides.hour(0)
    with FlinkRest(ws.settings.target_url) as rest:
        free = int(rest.overview()["slots-available"])
    ws.define("rides", define_node(
        "matched", ws.flow("rides")["matched"].body, params={"accept_window": "5"},
        options={"checkpoint_interval": "1 s", "parallelism": str(free + 1)}))
    with ws.db.read() as conn:
        before = repo.list_experiments(conn)
    with pytest.raises(ClusterError) as info:
        ex.launch(ws, "rides", name="big")
    message = str(info.value)
    assert "\n" not in message
    assert f"has {free} free" in message and "--slots" in message
    with ws.db.read() as conn:
        assert repo.list_experiments(conn) == before


def test_a_boundary_that_can_never_fire_is_refused_at_launch(
        flink_workspace: Any, tmp_path: Path) -> None:
    """A stream node whose output has no event time (``window_end AS ts`` is a plain
    timestamp) would leave a ``--boundary`` node downstream waiting forever: say so at launch,
    naming the node and the columns, and record nothing."""
    ws = flink_workspace
    rides = define_rides(ws, tmp_path)
    Rides(ws.settings.home).hour(0)
    for name in ("requests", "accepts", "matched"):
        ws.define("never", rides[name])
    ws.define("never", define_node("rider_hourly", RIDER_HOURLY_WITHOUT_ROWTIME,
                                   options={"checkpoint_interval": "1 s"}))
    ws.define("never", define_node("hourly_report", "def hourly_report(ctx):\n    pass\n",
                                   kind="python", after=["rider_hourly"], boundary="1h"))
    with pytest.raises(FlowError) as info:
        ex.launch(ws, "never", name="never")
    message = str(info.value)
    assert "'hourly_report'" in message and "rider_hourly" in message
    assert "no event time" in message and "window_time" in message and "\n" not in message
    assert ex.list_experiments(ws) == []
    assert not list((ws.settings.home / "topics").glob("rider_hourly_*"))


RIDER_HOURLY_WITHOUT_ROWTIME = """
SELECT rider_id, window_end AS ts, COUNT(*) AS requests
FROM TABLE(TUMBLE(TABLE matched, DESCRIPTOR(ts), INTERVAL '1' HOUR))
GROUP BY rider_id, window_start, window_end
"""


def test_a_stop_with_savepoints_right_after_the_launch_waits_for_the_tasks(
        rides_ws: tuple[Any, Rides, Path]) -> None:
    """A stop issued while the jobs are still deploying (Flink refuses a savepoint until
    every task runs) stops every Flink node with a savepoint, not "failed ... running
    again"; the resume then starts each from it."""
    ws, rides, out = rides_ws
    define_rides(ws, out)
    rides.hour(0)
    st = ex.launch(ws, "rides", name="quick", wait=False)
    flink_nodes = [n.node for n in st.nodes if n.job_id]
    assert len(flink_nodes) == 3, st
    stopped = ex.stop(ws, "quick", savepoint=True)
    assert stopped.state == "stopped", stopped
    with FlinkRest(ws.settings.target_url) as rest:
        states = rest.job_ids()
    for node in flink_nodes:
        ns = stopped[node]
        assert ns.savepoint, (node, ns)
        assert states[st[node].job_id] == "finished", (node, states)  # stop-with-savepoint
    resumed = ex.resume(ws, "quick")
    assert {resumed[n].savepoint for n in flink_nodes} == {stopped[n].savepoint
                                                           for n in flink_nodes}
    ex.stop(ws, "quick")
