"""Label-join throughput: launched through ultron vs the same SQL in a hand-written PyFlink job.

One run: start a local Flink cluster (free ports, under a temporary home), generate a bounded
click log (impressions + clicks, N partitions, one segment per partition), then run the LEFT
interval-join label job

* through ultron: ``experiments.launch(..., bounded=True)`` (generated per-partition DDL,
  validation, checkpointing, the hidden watermark column, the store), and
* as a plain PyFlink script: two filesystem tables over the topic directories, the same
  SELECT, an INSERT into a filesystem sink,

on the same cluster with the same parallelism, after one warm-up of each, alternating for
``--rounds`` rounds (at least 3; which side goes first alternates too). Each round's ratio
compares the two jobs of that round, run back to back; the figures are the medians over the
rounds, never the best, with their spread (max - min) and the load average at each round's
start (the machine may be shared). Throughput is events
(impressions + clicks) divided by the job's time from submission to its last output row as
Flink itself reports it (job start-time to end-time: a bounded job ends once its sink has
committed every row). Both outputs are checked to label every impression.

The last line printed is one JSON object:
``{"events", "ultron_events_per_s", "plain_events_per_s", "overhead_ratio",
"overhead_ratio_spread", ...}`` with ``overhead_ratio`` the median over the rounds of
``plain events/s / ultron events/s`` (goal <= 1.02).
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
from ultron_nb.services.datagen import clicklog_nodes, gen_clicklog  # noqa: E402
from ultron_nb.workspace import Workspace  # noqa: E402

LABEL_JOIN = """
SELECT i.imp_id, i.user_id, i.item_id, i.ts,
       CASE WHEN c.imp_id IS NULL THEN 0 ELSE 1 END AS label
FROM impressions i
LEFT JOIN clicks c
  ON i.imp_id = c.imp_id AND c.ts BETWEEN i.ts AND i.ts + INTERVAL '10' MINUTE
"""


def _job_seconds(rest: FlinkRest, job_id: str, timeout: float = 600.0) -> float:
    """Submission to the last output row, by Flink's clock (start-time → end-time)."""
    rest.await_state(job_id, {"finished"}, timeout)
    info = rest.job(job_id)
    assert info.start_time and info.end_time
    return info.end_time - info.start_time


def _count_rows(folder: Path) -> tuple[int, int]:
    rows = labels = 0
    for path in folder.rglob("part-*"):
        for line in path.read_text().splitlines():
            if line.strip():
                rows += 1
                labels += json.loads(line)["label"]
    return rows, labels


def run_plain(home: Path, url: str, parallelism: int, out: Path) -> tuple[str, float]:
    """The hand-written PyFlink job. Returns (job id, client seconds until submitted)."""
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    host, port = url.split("://")[1].split(":")
    conf = Configuration()
    for key, value in {
        "execution.target": "remote", "rest.address": host, "rest.port": port,
        "parallelism.default": str(parallelism), "execution.checkpointing.interval": "5 s",
        "pipeline.name": "plain label join",
    }.items():
        conf.set_string(key, value)
    started = time.monotonic()
    env = TableEnvironment.create(
        EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build())
    topics = home / "topics"
    env.execute_sql(f"""
        CREATE TEMPORARY TABLE impressions (
          imp_id BIGINT, user_id BIGINT, item_id BIGINT, `position` INT, ts TIMESTAMP(3),
          WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
        ) WITH ('connector' = 'filesystem', 'path' = '{topics / "impressions"}',
                'format' = 'json')""")
    env.execute_sql(f"""
        CREATE TEMPORARY TABLE clicks (
          imp_id BIGINT, user_id BIGINT, item_id BIGINT, ts TIMESTAMP(3),
          WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
        ) WITH ('connector' = 'filesystem', 'path' = '{topics / "clicks"}', 'format' = 'json')""")
    env.execute_sql(f"""
        CREATE TEMPORARY TABLE labelled (
          imp_id BIGINT, user_id BIGINT, item_id BIGINT, ts TIMESTAMP(3), label INT
        ) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'json')""")
    result = env.execute_sql(f"INSERT INTO labelled {LABEL_JOIN}")
    job_id = str(result.get_job_client().get_job_id())
    return job_id, time.monotonic() - started


def run_ultron(ws: Workspace, name: str) -> tuple[str, float, Path]:
    started = time.monotonic()
    st = ex.launch(ws, "bench", name=name, bounded=True, wait=False)
    node = st["label_join"]
    assert node.job_id and node.output
    return node.job_id, time.monotonic() - started, Path(node.output)


def finish(ws: Workspace, name: str) -> None:
    """Release a finished bounded experiment: its status is read from Flink first (a stop
    of a job the store still records as running, which Flink finished, is refused)."""
    ex.status(ws, name)
    ex.stop(ws, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=400.0, help="impressions per second")
    parser.add_argument("--duration", type=float, default=900.0, help="seconds of event time")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (medians)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="ultron-bench-"))
    home = tmp / ".ultron"
    cluster = LocalCluster(Settings(home=home, flink_port=free_port()), slots=4,
                           taskmanager_memory="1536m")
    try:
        cluster.up()
        ws = Workspace(Settings(home=home, flink_port=cluster.rest_port))
        log = gen_clicklog(ws.settings, rate=args.rate, duration=args.duration,
                           partitions=args.partitions, seed=args.seed)
        events = log.impression_count + log.click_count
        for node in clicklog_nodes(partitions=args.partitions):
            ws.define("bench", node)
        ws.define("bench", define_node("label_join", LABEL_JOIN, options={
            "parallelism": str(args.parallelism), "checkpoint_interval": "5 s"}))
        rest = FlinkRest(cluster.url)

        # Warm-up: one run of each (JVM gateway, planner, task manager JIT).
        job, _ = run_plain(home, cluster.url, args.parallelism, tmp / "plain-warmup")
        _job_seconds(rest, job)
        job, _, _ = run_ultron(ws, "warmup")
        _job_seconds(rest, job)
        finish(ws, "warmup")

        # Alternate the two (and which goes first); medians over the rounds, never the best.
        plain_times: list[float] = []
        ultron_times: list[float] = []
        loads: list[float] = []
        plain_client = ultron_client = 0.0
        plain_rows = ultron_rows = (0, 0)
        wrong = []
        for k in range(max(3, args.rounds)):
            loads.append(round(os.getloadavg()[0], 1))
            for side in (("plain", "ultron") if k % 2 == 0 else ("ultron", "plain")):
                if side == "plain":
                    plain_out = tmp / f"plain-out-{k}"
                    plain_job, plain_client = run_plain(home, cluster.url, args.parallelism,
                                                        plain_out)
                    plain_times.append(_job_seconds(rest, plain_job))
                    plain_rows = _count_rows(plain_out)
                    if plain_rows != (log.impression_count, log.click_count):
                        wrong.append(f"plain round {k}: {plain_rows}")
                else:
                    ultron_job, ultron_client, ultron_out = run_ultron(ws, f"measured-{k}")
                    ultron_times.append(_job_seconds(rest, ultron_job))
                    ultron_rows = _count_rows(ultron_out)
                    if ultron_rows != (log.impression_count, log.click_count):
                        wrong.append(f"ultron round {k}: {ultron_rows}")
                    finish(ws, f"measured-{k}")
        ratios = [u / p for p, u in zip(plain_times, ultron_times, strict=True)]
        detail = {
            "impressions": log.impression_count, "clicks": log.click_count,
            "partitions": args.partitions, "parallelism": args.parallelism,
            "plain_job_s": [round(t, 3) for t in plain_times],
            "ultron_job_s": [round(t, 3) for t in ultron_times],
            "plain_client_submit_s": round(plain_client, 3),
            "ultron_client_launch_s": round(ultron_client, 3),
            "plain_rows_labels": plain_rows, "ultron_rows_labels": ultron_rows,
        }
        print(json.dumps(detail), flush=True)
        for problem in wrong:
            print(f"output differs from the truth: {problem}", file=sys.stderr)
        ultron_eps = events / statistics.median(ultron_times)
        plain_eps = events / statistics.median(plain_times)
        print(json.dumps({
            "events": events,
            "ultron_events_per_s": round(ultron_eps, 1),
            "plain_events_per_s": round(plain_eps, 1),
            "overhead_ratio": round(statistics.median(ratios), 3),
            "overhead_ratio_spread": round(max(ratios) - min(ratios), 3),
            "ultron_job_s_spread": round(max(ultron_times) - min(ultron_times), 3),
            "plain_job_s_spread": round(max(plain_times) - min(plain_times), 3),
            "rows_correct": not wrong,
            "load_avg": loads,
            "rounds": len(ratios),
        }), flush=True)
        rest.close()
        return 0
    finally:
        cluster.down()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
