"""The ONE verb registry: every verb's flags and its one call into the API.

The ``%ultron`` magic (:mod:`ultron_nb.notebook.magics`) and the ``ultron`` CLI
(:mod:`ultron_nb.cli`) both build their parsers from :data:`COMMANDS` with
:func:`build_parser`, so a verb has the same flags in both (a test walks the registry). A
command's ``run(face, args, body)`` returns an object that shows itself (text, HTML, a
DataFrame). ``face`` gives the workspace and the current flow (:class:`Face`).

Verbs that take a flow get ``--flow`` (and, for the looking verbs, an optional positional
FLOW); without one, the face's current flow is used — the notebook's selection, remembered
across kernel restarts per notebook, else the only flow in the store.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ultron_nb.arguments import add_node_arguments, node_kwargs
from ultron_nb.errors import ConfigError
from ultron_nb.flow.build import parse_pairs
from ultron_nb.views import Dot, Message, Svg, Table


class Face(Protocol):
    """What a command needs from the face that runs it."""

    @property
    def workspace(self) -> Any: ...

    def current_flow(self, explicit: str | None = None) -> str: ...

    def select_flow(self, name: str) -> None: ...


Run = Callable[[Face, argparse.Namespace, "str | None"], Any]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    build: Callable[[argparse.ArgumentParser], Run]  # adds the flags, returns the runner
    cell: bool | None = False  # True: needs a body (cell / stdin / --body-file); None: either
    flow: str = ""  # "": no flow; "option": --flow; "positional": [FLOW] and --flow
    faces: frozenset[str] = field(default_factory=lambda: frozenset({"magic", "cli"}))


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, *, cell: bool | None = False, flow: str = "",
            faces: tuple[str, ...] = ("magic", "cli"),
            ) -> Callable[[Callable[[argparse.ArgumentParser], Run]], None]:
    def register(build: Callable[[argparse.ArgumentParser], Run]) -> None:
        COMMANDS[name] = Command(name, help, build, cell, flow, frozenset(faces))

    return register


def build_parser(cmd: Command, parser: argparse.ArgumentParser) -> Run:
    """Add ``cmd``'s flags (the same for every face) to ``parser``; its runner."""
    if cmd.flow == "positional":
        parser.add_argument("flow_name", nargs="?", metavar="FLOW",
                            help="the flow (default: the current flow)")
    if cmd.flow:
        parser.add_argument("--flow", help="the flow (default: the current flow)")
    return cmd.build(parser)


def flow_of(face: Face, a: argparse.Namespace) -> str:
    """The flow a command acts on: positional, ``--flow``, or the face's current one."""
    return face.current_flow(getattr(a, "flow_name", None) or getattr(a, "flow", None))


def _when(epoch: float, spec: str = "seconds") -> str:
    return datetime.fromtimestamp(epoch).isoformat(" ", spec)


# ------------------------------------------------------------------ flows
@command("help", "list the verbs, or show one verb's flags")
def _help(p: argparse.ArgumentParser) -> Run:
    p.add_argument("verb", nargs="?")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        return Message(*help_text(a.verb, getattr(face, "face_name", "magic")).splitlines())

    return run


def help_text(name: str | None = None, face: str = "magic") -> str:
    """The verbs (or one verb's flags), as the face shows them."""
    prefix = "%ultron" if face == "magic" else "ultron"
    if name:
        cmd = COMMANDS.get(name)
        if cmd is None or face not in cmd.faces:
            raise ConfigError(f"{prefix} help: unknown verb {name!r}")
        parser = argparse.ArgumentParser(prog=f"{prefix} {name}", description=cmd.help,
                                         add_help=False)
        build_parser(cmd, parser)
        return parser.format_help()
    verbs = [c for c in COMMANDS.values() if face in c.faces]
    width = max(len(c.name) for c in verbs)
    lines = [f"{prefix} VERB [args]" + ("   (%%ultron for verbs with a cell body)"
                                        if face == "magic" else ""), ""]
    lines += [f"  {c.name.ljust(width)}  {c.help}" for c in verbs]
    lines += ["", f"{prefix} help VERB shows a verb's flags."]
    return "\n".join(lines)


@command("flow", "create or select the current flow", faces=("magic",))
def _flow(p: argparse.ArgumentParser) -> Run:
    p.add_argument("name")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        flow = face.workspace.flow(a.name, create=True)
        face.select_flow(a.name)
        if flow.version:
            return Message(f"flow {a.name} (version {flow.version}, {len(flow)} nodes)")
        return Message(f"flow {a.name} (new: define nodes with %%ultron node NAME ...)")

    return run


@command("node", "define or redefine a node; the body holds its SQL, Python or columns",
         cell=True, flow="option")
def _node(p: argparse.ArgumentParser) -> Run:
    add_node_arguments(p)

    def run(face: Face, a: argparse.Namespace, body: str | None) -> Any:
        from ultron_nb.flow.build import define_node

        flow_name = flow_of(face, a)
        ws = face.workspace
        node = define_node(a.name, body or "", **node_kwargs(a))
        existed = node.name in ws.flow(flow_name, create=True)
        flow = ws.define(flow_name, node)
        inputs = flow[node.name].data_inputs()
        reads = f", reads {', '.join(inputs)}" if inputs else ""
        return Message(f"{'redefined' if existed else 'defined'} {node.label} node "
                       f"{node.name}{reads} (flow {flow_name} version {flow.version})")

    return run


@command("rm", "remove a node that nothing depends on", flow="option")
def _rm(p: argparse.ArgumentParser) -> Run:
    p.add_argument("node")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        flow = face.workspace.remove(flow_of(face, a), a.node)
        return Message(f"removed node {a.node} (flow {flow.name} version {flow.version})")

    return run


@command("nodes", "list the nodes of a flow", flow="positional")
def _nodes(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--version", type=int, help="a version of the flow (default: the latest)")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.display import nodes_table

        ws = face.workspace
        return nodes_table(ws.flow(flow_of(face, a), a.version), ws)

    return run


@command("show", "render a flow's DAG (SVG, or DOT text), coloured by live status",
         flow="positional")
def _show(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--format", dest="fmt", choices=("svg", "dot"), default="svg")
    p.add_argument("--version", type=int, help="a version of the flow (default: the latest)")
    p.add_argument("-o", "--out", help="also write the rendering to this file")
    p.add_argument("--experiment", help="colour by this experiment (default: the latest)")
    p.add_argument("--static", action="store_true", help="no live status")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import live

        ws = face.workspace
        flow = ws.flow(flow_of(face, a), a.version)
        decorations = {} if a.static else live.decorations(ws, flow, a.experiment)
        text = ws.render(flow, a.fmt, **decorations)
        note = ""
        if a.out:
            Path(a.out).write_text(text)
            note = f"wrote {a.out}"
        return Dot(text) if a.fmt == "dot" else Svg(text, repr(flow), note)

    return run


@command("flows", "list the flows in the metadata store")
def _flows(p: argparse.ArgumentParser) -> Run:
    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.display import flows_table

        return flows_table(face.workspace.flows())

    return run


@command("history", "list the versions of a flow", flow="positional")
def _history(p: argparse.ArgumentParser) -> Run:
    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.display import history_table

        return history_table(face.workspace.history(flow_of(face, a)))

    return run


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


@command("resume", "start a stopped experiment again from its savepoints")
def _resume(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb import experiments

        return experiments.resume(face.workspace, a.experiment)

    return run


@command("restart", "restart one node of an experiment (any kind; e.g. after it failed)")
def _restart(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment")
    p.add_argument("node")
    p.add_argument("--from-savepoint", action="store_true",
                   help="a Flink node: restore its last savepoint instead of starting afresh")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb import experiments

        return experiments.restart_node(face.workspace, a.experiment, a.node,
                                        from_savepoint=a.from_savepoint)

    return run


@command("preview", "the latest rows of a node's output, as a DataFrame", flow="option")
def _preview(p: argparse.ArgumentParser) -> Run:
    p.add_argument("node")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--experiment", help="default: the latest experiment that has the node")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb import experiments

        flow = None
        try:
            flow = flow_of(face, a)
        except ConfigError:
            pass  # any experiment that has the node will do
        return experiments.preview(face.workspace, a.node, experiment=a.experiment,
                                   flow=flow, limit=a.limit)

    return run


@command("sql", "an ad-hoc, bounded Flink SQL query over the flow's tables (a DataFrame)",
         cell=True, flow="option")
def _sql(p: argparse.ArgumentParser) -> Run:
    p.add_argument("--limit", type=int, default=100, help="at most this many rows (100)")
    p.add_argument("--experiment", help="whose node outputs to read (default: the latest)")

    def run(face: Face, a: argparse.Namespace, body: str | None) -> Any:
        from ultron_nb import experiments

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
    p.add_argument("--dry-run", action="store_true", help="only show the plan")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services.clone import clone

        return clone(face.workspace, a.source, a.name, parse_pairs(a.sets, flag="--set"),
                     dry_run=a.dry_run, label=a.label)

    return run


@command("diff", "compare two experiments node by node: shared, changed, new")
def _diff(p: argparse.ArgumentParser) -> Run:
    p.add_argument("a")
    p.add_argument("b")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services.clone import diff

        return diff(face.workspace, a.a, a.b)

    return run


# ------------------------------------------------------------------ backtracking
def _backtrack_flags(p: argparse.ArgumentParser) -> None:
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
                      help="problem kinds to accept (e.g. missing_partition schema_drift)")
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


@command("backtrack", "replayable history: prepare ordered partitions, replay a node, check")
def _backtrack(p: argparse.ArgumentParser) -> Run:
    _backtrack_flags(p)

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import backtrack

        ws = face.workspace
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

        return replay.replay(ws, face.current_flow(a.flow), a.node,
                             inputs=parse_pairs(a.input, flag="--input"),
                             start=a.start, end=a.end, name=a.name)

    return run


# ------------------------------------------------------------------ events
@command("events", "recent notification events (of KEY, or keys starting with KEY*)")
def _events(p: argparse.ArgumentParser) -> Run:
    p.add_argument("key", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--namespace", default="default")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.events import recent

        rows = [[e.id, e.key, e.version, json.dumps(e.value, default=str), e.sender,
                 _when(e.created_at, "milliseconds")]
                for e in recent(face.workspace.db, a.key, namespace=a.namespace,
                                limit=a.limit)]
        return Table(["id", "key", "version", "value", "sender", "time"], rows)

    return run


@command("send", "send a notification event (a JSON or text value) to KEY")
def _send(p: argparse.ArgumentParser) -> Run:
    p.add_argument("key")
    p.add_argument("value", help="JSON (e.g. '{\"auc\": 0.72}') or text")
    p.add_argument("--namespace", default="default")
    p.add_argument("--sender", default="user")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.events import send_event

        try:
            value: Any = json.loads(a.value)
        except json.JSONDecodeError:
            value = a.value
        event = send_event(face.workspace.db, a.key, value, namespace=a.namespace,
                           sender=a.sender)
        return Message(f"event {event.key} version {event.version} = {a.value}")

    return run
