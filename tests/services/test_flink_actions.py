"""The scheduler's Flink actions: start a triggered batch node, follow it, report its state."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.services.flink_flows import topic_rows, wait_for
from ultron_nb.events import latest
from ultron_nb.flow.build import define_node
from ultron_nb.services import experiments as ex
from ultron_nb.services.datagen import clicklog_nodes, gen_clicklog
from ultron_nb.services.flink_actions import FlinkActions
from ultron_nb.services.scheduler import NodeTarget

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
    flow = ws.define("f", counts)
    st = ex.launch(ws, "f", name="sched")
    assert st["counts"].state == "waiting"  # a triggered node waits for the scheduler

    actions = FlinkActions(ws.db, ws.settings)
    target = NodeTarget("sched", "counts", flow["counts"], st["counts"].instance or "",
                        payload={"window_start": 1735689600000,  # 2025-01-01 00:00
                                 "window_end": 1735689660000})  # + 1 minute
    assert actions.state("sched", target) is None
    actions.start("sched", target)
    finished = None
    for _ in range(120):
        finished = actions.state("sched", target)
        if finished != "running":
            break
        time.sleep(0.5)
    assert finished == "finished"
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

    def die_when_the_id_is_recorded(conn: Any, job_id: int, **values: Any) -> None:
        if values.get("external_id"):
            raise Died  # the process is gone: the transaction never commits
        real_update(conn, job_id, **values)

    monkeypatch.setattr(repo, "update_job", die_when_the_id_is_recorded)
    with pytest.raises(Died):
        ex.start_node(ws, "crash", "label_join")
    monkeypatch.setattr(repo, "update_job", real_update)
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, "crash")
        inst = next(m.instance_id for m in repo.members(conn, exp.id)
                    if m.node_name == "label_join")
        lost = repo.latest_job(conn, inst)
    assert lost.state == "submitting" and lost.external_id is None

    ex.start_node(ws, "crash", "label_join")  # the trigger, driven again
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
    with ws.db.write() as conn:
        repo.add_job(conn, instance_id=inst, engine="flink", external_id=None,
                     target=ws.settings.target_url, state="submitting", attempt=2)
    assert ex.status(ws, "crash")["label_join"].state == "submitting"  # maybe in flight
    monkeypatch.setattr(ex, "SUBMIT_GRACE", 0.0)
    node = ex.status(ws, "crash")["label_join"]
    assert node.state == "failed" and "interrupted before Flink accepted" in (node.error or "")
