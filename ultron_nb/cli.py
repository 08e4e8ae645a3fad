"""The ``ultron`` command: the same API as the magics, from a shell.

Errors a user can cause print one line ``ErrorType: message`` and exit with status 2;
``ULTRON_TRACEBACK=1`` shows the full traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ultron_nb.arguments import add_node_arguments, node_kwargs
from ultron_nb.errors import UltronError

Handler = Callable[[argparse.Namespace], Any]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Handler]]] = {}


def command(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], Handler]],
                                              None]:
    def register(build: Callable[[argparse.ArgumentParser], Handler]) -> None:
        COMMANDS[name] = (help, build)

    return register


def _workspace(args: argparse.Namespace) -> Any:
    from ultron_nb.services.workspace import Workspace

    return Workspace(home=args.home, db_url=args.db_url, flink_url=args.flink_url)


def _emit(value: Any) -> None:
    if value is None:
        return
    text = str(value)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@command("flows", "list the flows in the metadata store")
def _flows(p: argparse.ArgumentParser) -> Handler:
    def run(a: argparse.Namespace) -> Any:
        from ultron_nb.display import flows_table

        return flows_table(_workspace(a).flows())

    return run


@command("nodes", "list the nodes of a flow")
def _nodes(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("flow")
    p.add_argument("--version", type=int)

    def run(a: argparse.Namespace) -> Any:
        from ultron_nb.display import nodes_table
        from ultron_nb.services.local_topics import topic_paths

        ws = _workspace(a)
        flow = ws.flow(a.flow, a.version)
        return nodes_table(flow, topic_paths(ws, flow))

    return run


@command("history", "list the versions of a flow")
def _history(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("flow")

    def run(a: argparse.Namespace) -> Any:
        from ultron_nb.display import history_table

        return history_table(_workspace(a).history(a.flow))

    return run


@command("show", "render a flow's DAG as SVG or DOT")
def _show(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("flow")
    p.add_argument("--format", dest="fmt", choices=("svg", "dot"), default="svg")
    p.add_argument("--version", type=int)
    p.add_argument("-o", "--out", help="write to this file instead of standard output")

    def run(a: argparse.Namespace) -> Any:
        ws = _workspace(a)
        text = ws.render(ws.flow(a.flow, a.version), a.fmt)
        if a.out:
            Path(a.out).write_text(text)
            return f"wrote {a.out}"
        return text

    return run


@command("node", "define or redefine a node (body from --body-file or standard input)")
def _node(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("flow")
    add_node_arguments(p)
    p.add_argument("--body-file", help="file with the SQL, Python or columns ('-': stdin)")

    def run(a: argparse.Namespace) -> Any:
        from ultron_nb.flow.build import define_node

        body = _read_body(a.body_file)
        node = define_node(a.name, body, **node_kwargs(a))
        flow = _workspace(a).define(a.flow, node)
        return f"defined {node.label} node {node.name} (flow {a.flow} version {flow.version})"

    return run


@command("rm", "remove a node that nothing depends on")
def _rm(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("flow")
    p.add_argument("node")

    def run(a: argparse.Namespace) -> Any:
        flow = _workspace(a).remove(a.flow, a.node)
        return f"removed node {a.node} (flow {a.flow} version {flow.version})"

    return run


@command("up", "start the local Flink cluster and the scheduler (reuses running ones)")
def _up(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("--port", type=int, help="REST port of the local cluster (default 8081)")
    p.add_argument("--slots", type=int, help="task slots of the local cluster")
    p.add_argument("--no-scheduler", action="store_true", help="do not start the scheduler")

    def run(a: argparse.Namespace) -> Any:
        from ultron_nb.services import runtime

        return runtime.up(_workspace(a), port=a.port, slots=a.slots,
                          scheduler=not a.no_scheduler)

    return run


@command("down", "stop the scheduler and the local Flink cluster")
def _down(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("--port", type=int)

    def run(a: argparse.Namespace) -> Any:
        from ultron_nb.services import runtime

        return runtime.down(_workspace(a), port=a.port)

    return run


@command("status", "the cluster and scheduler, or an experiment's live status")
def _status(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("experiment", nargs="?", help="an experiment (default: the runtime)")

    def run(a: argparse.Namespace) -> Any:
        ws = _workspace(a)
        if a.experiment:
            from ultron_nb.services import experiments

            return experiments.status(ws, a.experiment)
        from ultron_nb.services import runtime

        return runtime.status(ws)

    return run


@command("scheduler", "run the scheduler daemon in the foreground (ultron up starts it)")
def _scheduler(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("--actions", help="module:factory of the node actions (tests)")

    def run(a: argparse.Namespace) -> Any:
        from ultron_nb.services.scheduler import main as scheduler_main

        argv = ["--home", str(_workspace(a).settings.home)]
        if a.actions:
            argv += ["--actions", a.actions]
        code = scheduler_main(argv)
        if code:
            raise UltronError(f"the scheduler exited with status {code}")
        return None

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ultron", description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="directory of the metadata store (default ./.ultron)")
    parser.add_argument("--db-url", help="SQLAlchemy URL of the metadata store")
    parser.add_argument("--flink-url", help="REST URL of a remote Flink cluster")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_, build) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=build(p))
    from ultron_nb.commands import COMMANDS as SHARED

    for name, cmd in SHARED.items():
        if name in COMMANDS:
            continue
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if cmd.uses_flow:
            p.add_argument("--flow", required=name not in ("preview",),
                           help="the flow" + ("" if name != "preview" else " (optional)"))
        if cmd.cell is not False:
            p.add_argument("--body-file", help="file with the body ('-' or absent: stdin)")
        p.set_defaults(handler=_shared(cmd.build(p), cmd.cell))
    return parser


def _shared(run: Any, cell: bool | None) -> Handler:
    def handler(a: argparse.Namespace) -> Any:
        body = None
        if cell is not False:
            body = _read_body(getattr(a, "body_file", None))
        return run(_workspace(a), a, body)

    return handler


def _read_body(path: str | None) -> str:
    if path in (None, "-"):
        return "" if path is None and sys.stdin.isatty() else sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UltronError(f"--body-file {path}: {exc.strerror}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _emit(args.handler(args))
    except UltronError as exc:
        if os.environ.get("ULTRON_TRACEBACK"):
            raise
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
