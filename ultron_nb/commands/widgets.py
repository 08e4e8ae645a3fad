"""Verbs of live views: watch an experiment (a live widget in a notebook, refreshed lines in
a terminal). ``preview --follow`` and ``sql --follow`` (:mod:`.experiments`) are the other
live views."""

from __future__ import annotations

import argparse
from typing import Any

from ultron_nb.commands.registry import Face, Run, command


@command("watch", "watch an experiment live: its DAG, node states, watermarks and row rates, "
                  "refreshed until it stops")
def _watch(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment", nargs="?", help="default: the latest experiment")
    p.add_argument("--interval", type=float, default=2.0,
                   help="seconds between refreshes (2; backs off while Flink does not answer)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop watching after this many seconds (default: until it stops)")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.experiments import watch

        return watch(face.workspace, a.experiment, interval=a.interval,
                     max_interval=max(30.0, a.interval), duration=a.duration)

    return run
