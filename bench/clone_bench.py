"""Clone vs fresh launch: the time until every node of an experiment runs.

One run: start a local Flink cluster (free ports, temporary home), generate a click log,
define a chain of Flink stream nodes (label-join → filters → per-item counts), launch it as
experiment ``base`` (this also warms the kernel's JVM gateway, as in a notebook), then

* **fresh**: launch the same flow in a new, empty workspace on the same cluster (nothing to
  share: every node gets a job), and
* **clone**: ``clone base → next`` changing only the last node's parameter (every other node
  is shared),

for ``--rounds`` rounds (at least 3). Each round's ratio compares that round's clone with that
round's fresh launch; the figures are medians over the rounds (never the best), with their
spread (max - min) and the load average at each round's start. Each time runs from the
command until every Flink job of the new experiment is RUNNING. ``jobs_launched`` counts the
jobs the clone added on the cluster (asked from Flink's REST API).

Last line: ``{"nodes", "changed_nodes", "jobs_launched", "clone_s", "fresh_s", "ratio"}``
with ``ratio`` the median of the rounds' ``clone_s / fresh_s`` (goal <= 0.15 when only the last
node changes), plus ``ratio_spread``, ``clone_s_spread``, ``fresh_s_spread``, ``load_avg``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ultron_nb import experiments as ex  # noqa: E402
from ultron_nb.config import Settings  # noqa: E402
from ultron_nb.engines.flink.cluster import LocalCluster, free_port  # noqa: E402
from ultron_nb.engines.flink.rest import FlinkRest  # noqa: E402
from ultron_nb.flow.build import define_node  # noqa: E402
from ultron_nb.services.clone import clone  # noqa: E402
from ultron_nb.services.datagen import clicklog_nodes, gen_clicklog  # noqa: E402
from ultron_nb.workspace import Workspace  # noqa: E402

LABEL_JOIN = """
SELECT i.imp_id, i.user_id, i.item_id, i.ts,
       CASE WHEN c.imp_id IS NULL THEN 0 ELSE 1 END AS label
FROM impressions i LEFT JOIN clicks c
  ON i.imp_id = c.imp_id AND c.ts BETWEEN i.ts AND i.ts + INTERVAL '10' MINUTE
"""


def define(ws: Workspace, stages: int) -> list[str]:
    opts = {"checkpoint_interval": "2 s"}
    for node in clicklog_nodes(partitions=2):
        ws.define("chain", node)
    ws.define("chain", define_node("label_join", LABEL_JOIN, options=opts))
    names = ["label_join"]
    for i in range(stages):
        body = f"SELECT imp_id, user_id, item_id, ts, label FROM {names[-1]} WHERE item_id >= {i}"
        names.append(f"stage_{i}")
        ws.define("chain", define_node(names[-1], body, options=opts))
    ws.define("chain", define_node(
        "item_counts",
        f"SELECT item_id, window_end AS ts, COUNT(*) AS imps FROM TABLE(TUMBLE(TABLE "
        f"{names[-1]}, DESCRIPTOR(ts), INTERVAL '${{window}}' MINUTE)) "
        "GROUP BY item_id, window_start, window_end",
        params={"window": "5"}, options=opts))
    names.append("item_counts")
    return names


def running_job_ids(url: str) -> set[str]:
    with FlinkRest(url) as rest:
        return {j for j, s in rest.job_ids().items() if s == "running"}


def cancel_all(url: str) -> None:
    with FlinkRest(url) as rest:
        for job_id, state in rest.job_ids().items():
            if state == "running":
                rest.cancel(job_id)
                rest.await_state(job_id, {"canceled"}, 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=5, help="filter stages in the chain")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="clone-bench-"))
    port = free_port()
    cluster = LocalCluster(Settings(home=root / "cluster", flink_port=port), slots=16,
                           taskmanager_memory="2048m")
    cluster.up()
    try:
        url = cluster.url
        clone_times, fresh_times, launched = [], [], 0
        loads: list[float] = []
        nodes = 0
        for r in range(max(3, args.rounds)):
            loads.append(round(os.getloadavg()[0], 1))
            base_ws = Workspace(Settings(home=root / f"base{r}", flink_port=port))
            gen_clicklog(base_ws.settings, rate=10, duration=300, partitions=2, seed=r)
            names = define(base_ws, args.stages)
            nodes = len(names)
            ex.launch(base_ws, "chain", name="base")

            fresh_ws = Workspace(Settings(home=root / f"fresh{r}", flink_port=port))
            gen_clicklog(fresh_ws.settings, rate=10, duration=300, partitions=2, seed=r)
            define(fresh_ws, args.stages)
            t = time.perf_counter()
            st = ex.launch(fresh_ws, "chain", name="fresh")
            fresh_times.append(time.perf_counter() - t)
            assert all(n.state == "running" for n in st.nodes if n.job_id), str(st)

            before = running_job_ids(url)
            t = time.perf_counter()
            result = clone(base_ws, "base", "next", {"item_counts.window": "2"})
            clone_times.append(time.perf_counter() - t)
            launched = len(running_job_ids(url) - before)
            assert all(n.state == "running" for n in result.status.nodes  # type: ignore[union-attr]
                       if n.job_id), str(result)
            cancel_all(url)
        ratios = [c / f for c, f in zip(clone_times, fresh_times, strict=True)]
        print(json.dumps({"nodes": nodes, "changed_nodes": 1, "jobs_launched": launched,
                          "clone_s": round(statistics.median(clone_times), 3),
                          "fresh_s": round(statistics.median(fresh_times), 3),
                          "ratio": round(statistics.median(ratios), 3),
                          "ratio_spread": round(max(ratios) - min(ratios), 3),
                          "clone_s_spread": round(max(clone_times) - min(clone_times), 3),
                          "fresh_s_spread": round(max(fresh_times) - min(fresh_times), 3),
                          "clone_s_all": [round(t, 3) for t in clone_times],
                          "fresh_s_all": [round(t, 3) for t in fresh_times],
                          "load_avg": loads, "rounds": len(ratios)}))
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
