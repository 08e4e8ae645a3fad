"""The scheduler's Flink actions: start a triggered batch node, follow it, report its state."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.services.flink_flows import topic_rows
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
