"""Exactly once under failures: a task manager killed twice in a running multi-node link.

Each round, in a fresh home with its own local cluster, scheduler and job server: the rides
flow (two topics → a LEFT interval join → hourly features per rider → point-in-time samples,
three Flink jobs in a chain, then a Python training step per event-time hour and a DuckDB
evaluation after each) runs over a backlog with late accepts and several segments per
partition. Its task manager is killed with ``kill -9`` once mid-run (after the first
training) and once while checkpoints are under way (one asked of every job, the task manager
frozen at once and killed while the coordinator still had one pending; each such checkpoint
then fails, or completes without its commit reaching the dead task manager — counted in
``caught_checkpoints_failed`` / ``_completed``); the scheduler starts
a task manager again and Flink restarts every job from its last checkpoint
(``recovery_s``: from the kill until every job restarted and runs). Then every node's
committed output is compared with the truth computed from the topics — what an undisturbed
run produces (the lifecycle tests check that it does): ``lost`` and ``duplicates`` (totals over
all nodes and rounds; ``per_node`` breaks them down, with ``wrong`` values), and the hourly
training windows that ran twice or never.

Figures are medians over ``--runs`` rounds with their spread; the last line is one JSON
object: ``{"kills", "recovery_s", "lost", "duplicates", "per_node", ...}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.experiments.rides import (  # noqa: E402
    FLINK_NODES,
    T0,
    Rides,
    define_rides,
    exact_before,
    trained_hours,
)
from tests.support.chaos import (  # noqa: E402
    await_recovered,
    checkpoint_outcome,
    kill_during_checkpoints,
    kill_taskmanager,
    restarts,
)
from ultron_nb import experiments as ex  # noqa: E402
from ultron_nb.config import Settings  # noqa: E402
from ultron_nb.engines.flink import jobclient  # noqa: E402
from ultron_nb.engines.flink.cluster import LocalCluster, free_port  # noqa: E402
from ultron_nb.engines.flink.rest import FlinkRest  # noqa: E402
from ultron_nb.scheduler import start_daemon, stop_daemon  # noqa: E402
from ultron_nb.workspace import Workspace  # noqa: E402

#: Hours of data before the run (the backlog) and while it runs.
BACKLOG, LATER = 4, 4
#: Trainings complete once the samples are two hours behind the data.
TRAINED = BACKLOG + LATER - 3


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def one_round(base: Path) -> dict[str, Any]:
    home = base / ".ultron"
    settings = Settings(home=home, flink_port=free_port())
    cluster = LocalCluster(settings, slots=4, taskmanager_memory="1280m")
    cluster.up()
    try:
        start_daemon(settings)
        jobclient.start_server(settings, warm_after=settings.target_url)
        ws = Workspace(settings)
        out = base / "ledger"
        out.mkdir()
        rides = Rides(home)
        define_rides(ws, out)
        for h in range(BACKLOG):
            rides.hour(h)
        st = ex.launch(ws, "rides", name="chaos")
        jobs = [st[n].job_id for n in FLINK_NODES]
        recovery = []
        with FlinkRest(settings.target_url) as rest:
            wait_for(lambda: len(trained_hours(out)) >= 1, 300, "a first training")
            before = {j: restarts(rest, j) for j in jobs}
            killed = kill_taskmanager(cluster)
            recovery.append(await_recovered(cluster, rest, before, killed, timeout=300))
            for h in range(BACKLOG, BACKLOG + LATER):
                rides.hour(h)
            before = {j: restarts(rest, j) for j in jobs}
            killed, triggers = kill_during_checkpoints(cluster, rest, jobs)
            recovery.append(await_recovered(cluster, rest, before, killed, timeout=300))
            # the checkpoints the kill caught: failed, or completed without the commit
            # reaching the dead task manager
            outcomes = [checkpoint_outcome(rest, j, t) for j, t in triggers.items()]
        wait_for(lambda: len(trained_hours(out)) >= TRAINED, 600, f"{TRAINED} trainings")
        # The outputs settle once the jobs have caught up with the data: the last comparison.
        report: dict[str, dict[str, int]] = {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            report = exact_before(ws, "chaos", TRAINED)
            if not any(v["missing"] for v in report.values()):
                break
            time.sleep(1.0)
        hours = trained_hours(out)
        expected = {str(T0.replace(hour=h)) for h in range(TRAINED)}
        ex.stop(ws, "chaos")
        return {"recovery": recovery, "caught": outcomes, "report": report,
                "windows_twice": len(hours) - len(set(hours)),
                "windows_missing": len(expected - set(hours))}
    finally:
        stop_daemon(settings, timeout=30)
        jobclient.stop_server(settings)
        cluster.down()


def spread(values: list[float]) -> float:
    return round(max(values) - min(values), 3) if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are reported)")
    args = parser.parse_args()
    rounds = []
    for i in range(args.runs):
        base = Path(tempfile.mkdtemp(prefix="ultron-eo-"))
        try:
            r = one_round(base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        rounds.append(r)
        print(json.dumps({"round": i, **r}), flush=True)
    per_node = {n: {"lost": sum(r["report"][n]["missing"] for r in rounds),
                    "duplicates": sum(r["report"][n]["duplicates"] for r in rounds),
                    "wrong": sum(r["report"][n]["wrong"] for r in rounds)}
                for n in FLINK_NODES}
    recoveries = [s for r in rounds for s in r["recovery"]]
    print(json.dumps({
        "kills": len(recoveries),
        "kills_during_checkpoint": sum(bool(r["caught"]) for r in rounds),
        "caught_checkpoints_failed": sum(r["caught"].count("failed") for r in rounds),
        "caught_checkpoints_completed": sum(r["caught"].count("completed") for r in rounds),
        "recovery_s": round(statistics.median(recoveries), 3),
        "recovery_s_spread": spread(recoveries),
        "lost": sum(v["lost"] for v in per_node.values()),
        "duplicates": sum(v["duplicates"] for v in per_node.values()),
        "per_node": per_node,
        "training_windows_twice": sum(r["windows_twice"] for r in rounds),
        "training_windows_missing": sum(r["windows_missing"] for r in rounds),
        "runs": args.runs,
    }))


if __name__ == "__main__":
    main()
