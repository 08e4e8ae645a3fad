"""Commands shared by the faces: each is its flags and one call into the API.

The ``%ultron`` magic and the ``ultron`` CLI register every command below, so what one face
can do the other can too. A command's ``run(ws, args, body)`` returns an object that shows
itself (text, HTML, a DataFrame). ``args.flow`` is filled from the current flow by the magic
and from ``--flow`` by the CLI.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ultron_nb.flow.build import parse_pairs

Run = Callable[[Any, argparse.Namespace, str | None], Any]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    build: Callable[[argparse.ArgumentParser], Run]  # adds the flags, returns the runner
    cell: bool | None = False  # True: needs a body (cell / stdin); None: either
    uses_flow: bool = False  # takes the current flow


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, *, cell: bool | None = False, uses_flow: bool = False
            ) -> Callable[[Callable[[argparse.ArgumentParser], Run]], None]:
    def register(build: Callable[[argparse.ArgumentParser], Run]) -> None:
        COMMANDS[name] = Command(name, help, build, cell, uses_flow)

    return register


# ------------------------------------------------------------------ cluster
@command("cluster", "start, stop or report the local Flink cluster (or the remote one)")
def _cluster(p: argparse.ArgumentParser) -> Run:
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--port", type=int, help="REST port of the local cluster (default 8081)")
    p.add_argument("--slots", type=int, help="task slots of the local cluster")
    p.add_argument("--no-scheduler", action="store_true",
                   help="with up: do not start the scheduler daemon")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import runtime

        if a.action == "up":
            return runtime.up(ws, port=a.port, slots=a.slots, scheduler=not a.no_scheduler)
        if a.action == "down":
            return runtime.down(ws, port=a.port)
        return runtime.status(ws, port=a.port)

    return run


# ------------------------------------------------------------------ data
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

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services.datagen import gen_clicklog

        return gen_clicklog(ws.settings, rate=a.rate, duration=a.duration,
                            partitions=a.partitions, users=a.users, items=a.items, ctr=a.ctr,
                            disorder=a.disorder, seed=a.seed, start=a.start, live=a.live)

    return run


# ------------------------------------------------------------------ experiments
@command("run", "launch the current flow version as an experiment", uses_flow=True)
def _run(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--name", help="experiment name (default: FLOW-N)")
    p.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="override a parameter: PARAM=V or NODE.PARAM=V; repeatable")
    p.add_argument("--label", help="experiment label carried with the data (default: name)")
    p.add_argument("--target", help="Flink REST URL (default: the configured cluster)")
    p.add_argument("--bounded", action="store_true",
                   help="read what the sources hold now, then finish (a replay)")
    p.add_argument("--no-wait", action="store_true", help="return once jobs are submitted")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import experiments

        return experiments.launch(ws, a.flow, name=a.name,
                                  params=parse_pairs(a.param, flag="--param"), label=a.label,
                                  target=a.target, bounded=a.bounded, wait=not a.no_wait)

    return run


@command("status", "live status of an experiment (default: the latest), from Flink")
def _status(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment", nargs="?")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import experiments

        return experiments.status(ws, a.experiment)

    return run


@command("experiments", "list experiments: state, target, created, parent")
def _experiments(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--of", dest="of_flow", metavar="FLOW", help="only this flow's")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from datetime import datetime

        from ultron_nb.display import Table
        from ultron_nb.services import experiments

        rows = [[e.name, e.flow_name, e.flow_version, e.state, e.label, e.target,
                 datetime.fromtimestamp(e.created_at).isoformat(" ", "seconds"), e.parent or ""]
                for e in experiments.list_experiments(ws, a.of_flow)]
        return Table(["experiment", "flow", "version", "state", "label", "target", "created",
                      "parent"], rows)

    return run


@command("stop", "stop an experiment (shared nodes keep running for the others)")
def _stop(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment")
    p.add_argument("--savepoint", action="store_true",
                   help="stop with a savepoint, so that resume continues where it stopped")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import experiments

        return experiments.stop(ws, a.experiment, savepoint=a.savepoint)

    return run


@command("resume", "start a stopped experiment again from its last savepoints")
def _resume(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import experiments

        return experiments.resume(ws, a.experiment)

    return run


@command("restart", "restart one node of an experiment (e.g. after it failed)")
def _restart(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment")
    p.add_argument("node")
    p.add_argument("--from-savepoint", action="store_true")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import experiments

        return experiments.restart_node(ws, a.experiment, a.node,
                                        from_savepoint=a.from_savepoint)

    return run


@command("preview", "the latest rows of a node's output, as a DataFrame", uses_flow=True)
def _preview(p: argparse.ArgumentParser) -> Run:
    p.add_argument("node")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--experiment", help="default: the latest experiment that has the node")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import experiments

        return experiments.preview(ws, a.node, experiment=a.experiment, flow=a.flow,
                                   limit=a.limit)

    return run


@command("sql", "an ad-hoc, bounded Flink SQL query over the flow's tables (a DataFrame)",
         cell=True, uses_flow=True)
def _sql(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--experiment", help="whose node outputs to read (default: the latest)")

    def run(ws: Any, a: argparse.Namespace, body: str | None) -> Any:
        from ultron_nb.services import experiments

        return experiments.sql(ws, body or "", flow=a.flow, experiment=a.experiment,
                               limit=a.limit)

    return run


@command("clone", "clone an experiment: unchanged nodes are shared, changed ones launched")
def _clone(p: argparse.ArgumentParser) -> Run:
    p.add_argument("source", help="the experiment to clone")
    p.add_argument("name", help="the new experiment's name")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.PARAM=V",
                   help="override a parameter; repeatable")
    p.add_argument("--label", help="the clone's label (default: its name)")
    p.add_argument("--dry-run", action="store_true", help="only show the plan")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services.clone import clone

        return clone(ws, a.source, a.name, parse_pairs(a.sets, flag="--set"),
                     dry_run=a.dry_run, label=a.label)

    return run


@command("diff", "compare two experiments node by node: shared, changed, new")
def _diff(p: argparse.ArgumentParser) -> Run:
    p.add_argument("a")
    p.add_argument("b")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services.clone import diff

        return diff(ws, a.a, a.b)

    return run


@command("backtrack", "replayable history: prepare ordered partitions, replay a node, check")
def _backtrack(p: argparse.ArgumentParser) -> Run:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                           parser_class=type(p))
    prep = sub.add_parser("prepare", add_help=False,
                          help="hash-partition history by key, order by event time")
    prep.add_argument("source", help="ROOT/date=YYYY-MM-DD/hour=HH/ (Parquet or JSON lines)")
    prep.add_argument("--key", required=True, nargs="+")
    prep.add_argument("--time", required=True)
    prep.add_argument("--partitions", type=int, required=True)
    prep.add_argument("--from", dest="start", required=True, help="first hour (inclusive)")
    prep.add_argument("--to", dest="end", required=True, help="end (exclusive)")
    prep.add_argument("--out", help="topic directory (default: .ultron/topics/<source name>)")
    prep.add_argument("--format", dest="fmt", choices=("parquet", "json"))
    prep.add_argument("--allow", nargs="+", default=[], metavar="KIND",
                      help="problem kinds to accept (e.g. missing_hour schema_drift)")
    prep.add_argument("--null-keys", choices=("fail", "route"), default="fail",
                      help="route: write rows with null keys to OUT/_null_keys.jsonl")
    chk = sub.add_parser("check", add_help=False, help="check the source, or a topic's order")
    chk.add_argument("what", choices=("source", "order"))
    chk.add_argument("path")
    chk.add_argument("--key", nargs="+")
    chk.add_argument("--time")
    chk.add_argument("--from", dest="start")
    chk.add_argument("--to", dest="end")
    rep = sub.add_parser("run", add_help=False,
                         help="replay prepared history through a node's real-time definition")
    rep.add_argument("node")
    rep.add_argument("--flow")
    rep.add_argument("--input", action="append", default=[], metavar="RESOURCE=TOPIC_DIR",
                     help="replay this prepared topic as the resource; repeatable")
    rep.add_argument("--from", dest="start", help="event time from (inclusive)")
    rep.add_argument("--to", dest="end", help="event time to (exclusive)")
    rep.add_argument("--name", help="the replay experiment's name")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.errors import ConfigError
        from ultron_nb.services import backtrack

        if a.action == "prepare":
            return backtrack.prepare(a.source, key=a.key, time=a.time,
                                     partitions=a.partitions, start=a.start, end=a.end,
                                     out=a.out, fmt=a.fmt, settings=ws.settings,
                                     allow=a.allow, null_keys=a.null_keys)
        if a.action == "check":
            if a.what == "order":
                return backtrack.check_order(a.path, time=a.time)
            if not (a.key and a.time and a.start and a.end):
                raise ConfigError("backtrack check source needs --key, --time, --from, --to")
            return backtrack.check_source(a.path, key=a.key, time=a.time, start=a.start,
                                          end=a.end)
        from ultron_nb.services import replay

        if not a.flow:
            raise ConfigError("backtrack run needs --flow (or a current flow)")
        return replay.replay(ws, a.flow, a.node, inputs=parse_pairs(a.input, flag="--input"),
                             start=a.start, end=a.end, name=a.name)

    return run


@command("events", "recent notification events (of KEY, or keys starting with KEY*)")
def _events(p: argparse.ArgumentParser) -> Run:
    p.add_argument("key", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--namespace", default="default")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from datetime import datetime

        from ultron_nb.display import Table
        from ultron_nb.events import recent

        rows = [[e.id, e.key, e.version, str(e.value), e.sender,
                 datetime.fromtimestamp(e.created_at).isoformat(" ", "milliseconds")]
                for e in recent(ws.db, a.key, namespace=a.namespace, limit=a.limit)]
        return Table(["id", "key", "version", "value", "sender", "time"], rows)

    return run


@command("send", "send a notification event (a JSON or text value) to KEY")
def _send(p: argparse.ArgumentParser) -> Run:
    p.add_argument("key")
    p.add_argument("value", help="JSON (e.g. '{\"auc\": 0.72}') or text")
    p.add_argument("--namespace", default="default")
    p.add_argument("--sender", default="user")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        import json

        from ultron_nb.display import Message
        from ultron_nb.events import send_event

        try:
            value: Any = json.loads(a.value)
        except json.JSONDecodeError:
            value = a.value
        event = send_event(ws.db, a.key, value, namespace=a.namespace, sender=a.sender)
        return Message(f"event {event.key} version {event.version} = {a.value}")

    return run


# ------------------------------------------------------------------ feeding topics
@command("append", "append rows to a local topic: --file (CSV, Parquet, JSON lines) or, in a "
                   "notebook, --frame VAR (a DataFrame)")
def _append(p: argparse.ArgumentParser) -> Run:
    p.add_argument("topic", help="a topic node (of --flow, else of any flow) or a topic directory")
    p.add_argument("--file", help="a CSV, Parquet or JSON-lines file")
    p.add_argument("--frame", metavar="VAR", help="in a notebook: the DataFrame variable VAR")
    p.add_argument("--partition", type=int, help="write every row to partition N")
    p.add_argument("--partition-by", metavar="COLUMN",
                   help="hash rows to partitions by COLUMN (default: the topic's --key)")
    p.add_argument("--flow", help="the flow that defines TOPIC (default: the current flow)")

    def run(ws: Any, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.errors import ConfigError

        if (a.file is None) == (a.frame is None):
            raise ConfigError("append needs one of --file F or --frame VAR")
        data = a.file if a.file is not None else _notebook_frame(a.frame)
        return ws.append(a.topic, data, partition_by=a.partition_by, partition=a.partition,
                         flow=a.flow)

    return run


def _notebook_frame(name: str) -> Any:
    """The DataFrame in notebook variable ``name``."""
    import pandas as pd
    from IPython import get_ipython

    from ultron_nb.errors import ConfigError, NotFoundError

    shell = get_ipython()
    if shell is None:
        raise ConfigError("--frame VAR reads a notebook variable; outside a notebook use "
                          "--file F")
    if name not in shell.user_ns:
        raise NotFoundError(f"--frame {name}: no variable {name!r} in the notebook")
    value = shell.user_ns[name]
    if not isinstance(value, pd.DataFrame):
        raise ConfigError(f"--frame {name}: {name!r} is a {type(value).__name__}, not a "
                          "pandas DataFrame")
    return value

