"""Verbs of the processes ultron runs: the local cluster, the scheduler, generated data."""

from __future__ import annotations

import argparse
from typing import Any

from ultron_nb.commands.registry import Face, Run, command


# ------------------------------------------------------------------ runtime
@command("cluster", "start, stop or report the local Flink cluster and the scheduler "
                    "(or the remote cluster)")
def _cluster(p: argparse.ArgumentParser) -> Run:
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--port", type=int, help="REST port of the local cluster (default 8081)")
    p.add_argument("--slots", type=int, help="task slots of the local cluster")
    p.add_argument("--no-scheduler", action="store_true",
                   help="with up: do not start the scheduler daemon")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import runtime

        ws = face.workspace
        if a.action == "up":
            return runtime.up(ws, port=a.port, slots=a.slots, scheduler=not a.no_scheduler)
        if a.action == "down":
            return runtime.down(ws, port=a.port)
        return runtime.status(ws, port=a.port)

    return run


@command("scheduler", "run the scheduler daemon in the foreground (cluster up starts it)",
         faces=("cli",))
def _scheduler(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--runner", action="append", default=[], metavar="KIND=MODULE:CLASS",
                   help="the runner of a node kind (tests)")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.errors import UltronError
        from ultron_nb.scheduler import main as scheduler_main

        argv = ["--home", str(face.workspace.settings.home), "--foreground"]
        for item in a.runner:
            argv += ["--runner", item]
        code = scheduler_main(argv)
        if code:
            raise UltronError(f"the scheduler exited with status {code}")
        return None

    return run


@command("gen", "generate data: gen clicklog writes impressions and clicks to local topics")
def _gen(p: argparse.ArgumentParser) -> Run:
    p.add_argument("what", choices=("clicklog",))
    p.add_argument("--rate", type=float, default=100.0, help="impressions per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of event time")
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--ctr", type=float, default=0.05, help="mean click-through rate")
    p.add_argument("--disorder", type=float, default=2.0, help="max event-time disorder (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", help="event time of the first impression (default: continue)")
    p.add_argument("--live", action="store_true",
                   help="write in wall-clock time, one segment per tick")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services.datagen import gen_clicklog

        return gen_clicklog(face.workspace.settings, rate=a.rate, duration=a.duration,
                            partitions=a.partitions, users=a.users, items=a.items, ctr=a.ctr,
                            disorder=a.disorder, seed=a.seed, start=a.start, live=a.live)

    return run
