"""The experiment lifecycle under load: nothing lost, duplicated or mixed, and how long the
user waits for stop-with-savepoint and resume.

One run, on the rides flow (two topics → interval-join labels → hourly features by rider →
point-in-time samples → hourly Python training → DuckDB evaluation), on a local cluster with
the scheduler daemon, under a temporary home:

1. launch ``base`` over a backlog;
2. ``--cycles`` times: a live burst (six segments per partition at once, partitions at
   different rates) → stop with savepoints (timed) → more data while stopped → resume
   (timed);
3. relaunch: stop ``base``, launch ``again`` (same identities: new instances);
4. clone ``again`` → ``clone`` (another training ledger: the Flink nodes are shared), then
   stop the parent ``again``: the clone keeps its shared jobs.

Every Flink output of ``base``, ``again`` and ``clone`` is counted against the truth computed
from the topic files; training windows are counted in the ledger the node writes.

The last line printed is one JSON object with ``missing``, ``duplicates``, ``wrong``,
``windows_run_twice``, ``windows_skipped`` (all 0 when correct), ``stop_savepoint_s`` and
``resume_s`` (median over the cycles, with their spread), and the per-experiment breakdown.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from tests.experiments.rides import (  # noqa: E402
    T0,
    Rides,
    compare,
    define_rides,
    ledger,
    truth,
    wait_until,
)
from ultron_nb import experiments as ex  # noqa: E402
from ultron_nb.config import Settings  # noqa: E402
from ultron_nb.engines.flink.cluster import LocalCluster, free_port  # noqa: E402
from ultron_nb.logs import quiet_third_party  # noqa: E402
from ultron_nb.scheduler import start_daemon, stop_daemon  # noqa: E402
from ultron_nb.services.clone import clone  # noqa: E402
from ultron_nb.workspace import Workspace  # noqa: E402

log = logging.getLogger("lifecycle_bench")


def counts(ws: Workspace, experiment: str, hours: int) -> dict[str, int]:
    """missing / duplicates / wrong over every Flink node, for event time < T0 + hours."""
    want = truth(ws.settings.home)
    cut = pd.Timestamp(T0) + pd.Timedelta(hours=hours)
    total = {"missing": 0, "duplicates": 0, "wrong": 0}
    for node, key, cols in (("matched", ["req_id"], ["accepted"]),
                            ("samples", ["req_id"], ["accepted", "prev_requests"])):
        got = ex.preview(ws, node, experiment=experiment, limit=10**8)
        r = compare(got[got.ts < cut], want[node][want[node].ts < cut], key, cols)
        total["missing"] += r["missing"]
        total["duplicates"] += r["duplicates"] + r["extra"]
        total["wrong"] += r["wrong"]
    return total


def windows(out: Path) -> tuple[int, int, int]:
    """(windows run, run twice, skipped) from a training ledger."""
    hours = [r["hour"] for r in ledger(out)]
    twice = len(hours) - len(set(hours))
    if not hours:
        return 0, 0, 0
    last = max(map(pd.Timestamp, hours))
    span = int((last - pd.Timestamp(T0)) / pd.Timedelta(hours=1)) + 1  # every hour from T0
    return len(set(hours)), twice, span - len(set(hours))


def settled(ws: Workspace, experiment: str, hours: int, timeout: float) -> dict[str, int]:
    """The counts once the outputs caught up (or whatever they are at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        c = counts(ws, experiment, hours)
        if c["missing"] == 0 or time.monotonic() > deadline:
            return c
        time.sleep(1.0)


def run(cycles: int, per_hour: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="ultron-lifecycle-bench-"))
    settings = Settings(home=tmp / ".ultron", flink_port=free_port())
    cluster = LocalCluster(settings, slots=8)
    cluster.up()
    ws = Workspace(settings)
    start_daemon(settings)
    rides = Rides(settings.home, per_hour=per_hour)
    ledgers = {name: tmp / name for name in ("base", "again", "clone")}
    for path in ledgers.values():
        path.mkdir()
    stops: list[float] = []
    resumes: list[float] = []
    try:
        define_rides(ws, ledgers["base"])
        hour = 0
        for hour in range(5):
            rides.hour(hour)
        ex.launch(ws, "rides", name="base")
        wait_until(lambda: ledger(ledgers["base"]), 300, "a first training")
        for _ in range(cycles):
            hour += 1
            rides.hour(hour, segments=6)  # a live burst
            wait_until(lambda h=hour: len(ledger(ledgers["base"])) >= h - 3, 300, "training")
            t = time.monotonic()
            ex.stop(ws, "base", savepoint=True)
            stops.append(time.monotonic() - t)
            hour += 1
            rides.hour(hour)  # while stopped
            t = time.monotonic()
            ex.resume(ws, "base")
            resumes.append(time.monotonic() - t)
        wait_until(lambda: len(ledger(ledgers["base"])) >= hour - 2, 300, "the last windows")
        base = settled(ws, "base", hour - 1, 180)
        # Relaunch over the same identities, then clone it and stop the parent.
        ex.stop(ws, "base")
        ex.launch(ws, "rides", name="again", params={"train.ledger": str(ledgers["again"])})
        again = settled(ws, "again", hour - 1, 300)
        clone(ws, "again", "clone", {"train.ledger": str(ledgers["clone"])})
        ex.stop(ws, "again")
        hour += 1
        rides.hour(hour)
        cloned = settled(ws, "clone", hour - 1, 300)
        ex.stop(ws, "clone")
    finally:
        try:
            stop_daemon(settings)
        finally:
            cluster.down()
    runs, twice, skipped = windows(ledgers["base"])
    per = {"base": base, "again": again, "clone": cloned}
    return {
        "cycles": cycles,
        "missing": sum(c["missing"] for c in per.values()),
        "duplicates": sum(c["duplicates"] for c in per.values()),
        "wrong": sum(c["wrong"] for c in per.values()),
        "windows_run": runs, "windows_run_twice": twice, "windows_skipped": skipped,
        "stop_savepoint_s": round(statistics.median(stops), 2),
        "stop_savepoint_s_spread": [round(min(stops), 2), round(max(stops), 2)],
        "resume_s": round(statistics.median(resumes), 2),
        "resume_s_spread": [round(min(resumes), 2), round(max(resumes), 2)],
        "per_experiment": per,
        "_tmp": str(tmp),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3, help="stop/resume cycles (>= 3)")
    parser.add_argument("--per-hour", type=int, default=150, help="requests per event hour")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    quiet_third_party()
    result = run(max(3, args.cycles), args.per_hour)
    tmp = result.pop("_tmp")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
