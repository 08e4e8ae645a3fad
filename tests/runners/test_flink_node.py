"""The Flink runner: start a triggered batch node, follow it, report its state; adopt an
interrupted start instead of repeating it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.services.flink_flows import topic_rows, wait_for
from ultron_nb import experiments as ex
from ultron_nb.events import latest
from ultron_nb.events.keys import NodeState
from ultron_nb.experiments.status import experiment_row, run_specs
from ultron_nb.flow.build import define_node
from ultron_nb.runners import flink_node
from ultron_nb.runners.base import RunSpec, TriggerRef
from ultron_nb.runners.flink_node import FlinkRunner
from ultron_nb.services.datagen import clicklog_nodes, gen_clicklog


def spec_of(ws: Any, experiment: str, node: str) -> RunSpec:
    exp = experiment_row(ws, experiment)
    return run_specs(ws, exp, ws.flow(exp.flow_name, exp.flow_version))[node]

pytestmark = [pytest.mark.flink, pytest.mark.slow]

COUNTS = """
SELECT MOD(user_id, 10) AS bucket, COUNT(*) AS impressions
FROM impressions
WHERE ts >= TIMESTAMP '${window_start}' AND ts < TIMESTAMP '${window_end}'
GROUP BY MOD(user_id, 10)
"""


def test_a_triggered_batch_node_runs_when_the_scheduler_starts_it(flink_workspace: Any) -> None:
    ws = flink_workspace
    log = gen_clicklog(ws.settings, rate=10, duration=120, partitions=2, seed=11)
    for node in clicklog_nodes(partitions=2):
        ws.define("f", node)
    counts = define_node("counts", COUNTS, mode="batch", bounded=True, every="1h",
                         params={"window_start": "2000-01-01 00:00:00",
                                 "window_end": "2100-01-01 00:00:00"})
    ws.define("f", counts)
    st = ex.launch(ws, "f", name="sched")
    assert st["counts"].state == "waiting"  # a triggered node waits for the scheduler

    runner = FlinkRunner(ws)
    spec = replace(spec_of(ws, "sched", "counts"), trigger=TriggerRef(
        1, "every", "t1", {"window_start": 1735689600000,  # 2025-01-01 00:00
                           "window_end": 1735689660000}))  # + 1 minute
    assert runner.state(spec) is None
    runner.start(spec)
    finished = wait_for(lambda: (s := runner.state(spec)) not in (
        NodeState.RUNNING, NodeState.SUBMITTING) and s, timeout=60, interval=0.2)
    runner.close()
    assert finished is NodeState.FINISHED
    rows = ex.preview(ws, "counts", experiment="sched", limit=100)
    first_minute = sum(1 for r in topic_rows(ws, "impressions")
                       if r["ts"] < "2025-01-01 00:01:00")
    assert int(rows.impressions.sum()) == first_minute < log.impression_count
    event = latest(ws.db, "status/sched/counts")
    assert event is not None and event.value["state"] == "finished"


def test_a_start_interrupted_before_its_job_id_was_recorded_is_adopted_not_repeated(
        flink_workspace: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler dies between Flink accepting a job and the store hearing its id; the
    re-driven trigger must find that job, not submit a second one."""
    from ultron_nb.engines.flink.rest import FlinkRest
    from ultron_nb.store import experiments as repo

    ws = flink_workspace
    gen_clicklog(ws.settings, rate=10, duration=120, partitions=2, seed=12)
    for node in clicklog_nodes(partitions=2):
        ws.define("g", node)
    ws.define("g", define_node("label_join", "SELECT imp_id, ts FROM impressions",
                               mode="stream", on_event="go"))
    st = ex.launch(ws, "g", name="crash")
    assert st["label_join"].state == "waiting"

    class Died(BaseException):
        pass

    real_update = repo.update_job

    def die_when_the_id_is_recorded(conn: Any, job_id: int, **values: Any) -> bool:
        if values.get("external_id"):
            raise Died  # the process is gone: the transaction never commits
        return real_update(conn, job_id, **values)

    runner = FlinkRunner(ws)
    spec = spec_of(ws, "crash", "label_join")
    monkeypatch.setattr(repo, "update_job", die_when_the_id_is_recorded)
    with pytest.raises(Died):
        runner.start(spec)
    monkeypatch.setattr(repo, "update_job", real_update)
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, "crash")
        inst = next(m.instance_id for m in repo.members(conn, exp.id)
                    if m.node_name == "label_join")
        lost = repo.latest_job(conn, inst)
    assert lost.state == "submitting" and lost.external_id is None

    runner.start(spec)  # the trigger, driven again
    st = wait_for(lambda: (s := ex.status(ws, "crash"))["label_join"].state == "running" and s)
    with FlinkRest(ws.settings.target_url) as rest:
        mine = [j for j in rest.jobs_overview() if f"[{inst}]" in j["name"]]
    assert len(mine) == 1, mine  # one job on the cluster, not two
    assert st["label_join"].job_id == mine[0]["jid"] and st["label_join"].attempt == 1
    with ws.db.read() as conn:
        recorded = [(j.external_id, j.state) for j in repo.instance_jobs(conn, inst)]
    assert recorded == [(mine[0]["jid"], "running")]

    # A start that died before Flink had the job: once it is overdue, status says so.
    ex.stop(ws, "crash")
    runner.close()
    with ws.db.write() as conn:
        repo.add_job(conn, instance_id=inst, engine="flink", external_id=None,
                     target=ws.settings.target_url, state="submitting", attempt=2)
    assert ex.status(ws, "crash")["label_join"].state == "submitting"  # maybe in flight
    monkeypatch.setattr(flink_node, "SUBMIT_GRACE", 0.0)
    node = ex.status(ws, "crash")["label_join"]
    assert node.state == "failed" and "interrupted before Flink accepted" in (node.error or "")
