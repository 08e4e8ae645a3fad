"""Verbs of experiments: launch, follow, stop, resume, savepoints, restart, preview, query,
clone, diff."""

from __future__ import annotations

import argparse
from typing import Any

from ultron_nb.commands.registry import Face, Run, _when, command, flow_of
from ultron_nb.errors import ConfigError
from ultron_nb.flow.build import parse_pairs
from ultron_nb.views import Table


# ------------------------------------------------------------------ experiments
@command("run", "launch the current flow version as an experiment", flow="option")
def _run(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--name", help="experiment name (default: FLOW_N)")
    p.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="override a parameter: PARAM=V or NODE.PARAM=V; repeatable")
    p.add_argument("--label", help="experiment label carried with the data (default: name)")
    p.add_argument("--target", help="Flink REST URL (default: the configured cluster)")
    p.add_argument("--bounded", action="store_true",
                   help="read what the sources hold now, then finish (a replay)")
    p.add_argument("--no-wait", action="store_true", help="return once jobs are submitted")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb import experiments

        return experiments.launch(face.workspace, flow_of(face, a), name=a.name,
                                  params=parse_pairs(a.param, flag="--param"), label=a.label,
                                  target=a.target, bounded=a.bounded, wait=not a.no_wait)

    return run


@command("status", "live status of an experiment (default: the latest), from Flink")
def _status(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment", nargs="?")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb import experiments

        return experiments.status(face.workspace, a.experiment)

    return run


@command("experiments", "list experiments: state, cluster, created, parent")
def _experiments(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--of", dest="of_flow", metavar="FLOW", help="only this flow's")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb import experiments

        rows = [[e.name, e.flow_name, e.flow_version, e.state, e.label,
                 experiments.mask_url(e.target), _when(e.created_at), e.parent or ""]
                for e in experiments.list_experiments(face.workspace, a.of_flow)]
        return Table(["experiment", "flow", "version", "state", "label", "cluster", "created",
                      "parent"], rows)

    return run


@command("stop", "stop an experiment (instances others hold keep running for them)")
def _stop(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment")
    p.add_argument("--savepoint", action="store_true",
                   help="stop with savepoints, so that resume continues where it stopped")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb import experiments

        return experiments.stop(face.workspace, a.experiment, savepoint=a.savepoint)

    return run


_ALLOW_HELP = ("restore even if the savepoint holds state this job cannot take back "
               "(that state is dropped; without this the restore is refused)")


@command("resume", "start a stopped experiment again from its savepoints")
def _resume(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment")
    p.add_argument("--allow-dropped-state", action="append", default=[], metavar="NODE",
                   help=_ALLOW_HELP + "; name each node; repeatable")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb import experiments

        return experiments.resume(face.workspace, a.experiment,
                                  allow_dropped=a.allow_dropped_state)

    return run


@command("savepoints", "the savepoints of an experiment and its family (parents, clones), "
                       "as a tree")
def _savepoints(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.experiments.savepoints import lineage

        return lineage(face.workspace, a.experiment)

    return run


@command("quality", "an experiment's data-quality rules: last value per window, "
                    "violations, the node to look at first")
def _quality(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services.quality import quality_report

        return quality_report(face.workspace, a.experiment)

    return run


@command("restart", "restart one node of an experiment (any kind; e.g. after it failed)")
def _restart(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment")
    p.add_argument("node")
    p.add_argument("--from-savepoint", action="store_true",
                   help="a Flink node: restore its last savepoint instead of starting afresh")
    p.add_argument("--allow-dropped-state", action="store_true",
                   help="with --from-savepoint: " + _ALLOW_HELP)

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb import experiments

        if a.allow_dropped_state and not a.from_savepoint:
            raise ConfigError("--allow-dropped-state goes with --from-savepoint")
        return experiments.restart_node(face.workspace, a.experiment, a.node,
                                        from_savepoint=a.from_savepoint,
                                        allow_dropped_state=a.allow_dropped_state)

    return run


def _add_follow(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--follow", action="store_true",
                   help=f"{what} as they arrive (a live table), until --limit rows or "
                        "--duration seconds")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help=f"with --follow: stop after this many seconds ({FOLLOW_SECONDS:g})")


def _duration(a: argparse.Namespace) -> float:
    if a.duration is not None and not a.follow:
        raise ConfigError("--duration goes with --follow")
    return FOLLOW_SECONDS if a.duration is None else a.duration


#: How long --follow follows by default (seconds).
FOLLOW_SECONDS = 60.0


@command("preview", "the latest rows of a node's output, as a DataFrame (--follow: new rows "
                    "as they arrive)", flow="option")
def _preview(p: argparse.ArgumentParser) -> Run:
    p.add_argument("node")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--experiment", help="default: the latest experiment that has the node")
    _add_follow(p, "the rows the node writes from now on,")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb import experiments

        duration = _duration(a)
        flow = None
        try:
            flow = flow_of(face, a)
        except ConfigError:
            pass  # any experiment that has the node will do
        if a.follow:
            from ultron_nb.experiments.follow_sources import follow_preview

            return follow_preview(face.workspace, a.node, experiment=a.experiment, flow=flow,
                                  limit=a.limit, duration=duration)
        return experiments.preview(face.workspace, a.node, experiment=a.experiment,
                                   flow=flow, limit=a.limit)

    return run


@command("sql", "an ad-hoc, bounded Flink SQL query over the flow's tables (a DataFrame; "
                "--follow: a streaming query, changelog-aware)", cell=True, flow="option")
def _sql(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--limit", type=int, default=100, help="at most this many rows (100)")
    p.add_argument("--experiment", help="whose node outputs to read (default: the latest)")
    _add_follow(p, "stream the result: rows and their updates")

    def run(face: Face, a: argparse.Namespace, body: str | None) -> Any:
        from ultron_nb import experiments

        duration = _duration(a)
        if a.follow:
            from ultron_nb.experiments.follow_sources import follow_sql

            return follow_sql(face.workspace, body or "", flow=flow_of(face, a),
                              experiment=a.experiment, limit=a.limit, duration=duration)
        return experiments.sql(face.workspace, body or "", flow=flow_of(face, a),
                               experiment=a.experiment, limit=a.limit)

    return run


@command("clone", "clone an experiment: unchanged nodes are shared, changed ones launched")
def _clone(p: argparse.ArgumentParser) -> Run:
    p.add_argument("source", help="the experiment to clone")
    p.add_argument("name", help="the new experiment's name")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.PARAM=V",
                   help="override a parameter; repeatable")
    p.add_argument("--label", help="the clone's label (default: its name)")
    p.add_argument("--from-savepoint", dest="savepoints", action="append", default=[],
                   type=int, metavar="ID",
                   help="start that savepoint's node (see `savepoints SOURCE`) from its "
                        "state; repeatable, one per node")
    p.add_argument("--dry-run", action="store_true", help="only show the plan")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services.clone import clone

        return clone(face.workspace, a.source, a.name, parse_pairs(a.sets, flag="--set"),
                     dry_run=a.dry_run, label=a.label, from_savepoints=a.savepoints)

    return run


@command("diff", "compare two experiments node by node: shared, changed, new")
def _diff(p: argparse.ArgumentParser) -> Run:
    p.add_argument("a")
    p.add_argument("b")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services.clone import diff

        return diff(face.workspace, a.a, a.b)

    return run
