"""Verbs that share experiments: export one as a notebook, import such a notebook's flow."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any, NoReturn

from ultron_nb.commands.registry import COMMANDS, Face, Run, build_parser, command
from ultron_nb.errors import ConfigError, UltronError
from ultron_nb.views import Table


@command("export", "write an experiment as a self-contained notebook (node cells, "
                   "parameters, run and lineage cells, results; no secrets)")
def _export(p: argparse.ArgumentParser) -> Run:
    p.add_argument("experiment")
    p.add_argument("--out", required=True, metavar="FILE.ipynb")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services.share import export_notebook

        return export_notebook(face.workspace, a.experiment, Path(a.out))

    return run


class _CellParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")


@command("import", "define the flow of an exported notebook (its node cells; nothing runs) "
                   "and check the node identities it recorded")
def _import(p: argparse.ArgumentParser) -> Run:
    p.add_argument("notebook", metavar="FILE.ipynb")
    p.add_argument("--as", dest="as_flow", metavar="FLOW",
                   help="define the nodes in this flow (default: the notebook's)")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.flow.cells import unescape_line
        from ultron_nb.flow.identity import identities
        from ultron_nb.services.share import read_export

        exported = read_export(Path(a.notebook))
        name = a.as_flow or exported.flow
        cells = [("node", *c) for c in exported.node_cells] + \
            [("rule", *c) for c in exported.rule_cells]
        for verb, line, body in cells:  # the nodes, then their rules
            parser = _CellParser(prog=f"%%ultron {verb}", add_help=False)
            define = build_parser(COMMANDS[verb], parser)
            try:
                words = shlex.split(unescape_line(line))
            except ValueError as exc:
                raise ConfigError(f"import {a.notebook}: cannot read {line!r}: {exc}") from None
            args = parser.parse_args(words)
            args.flow = name
            define(face, args, body)
        face.select_flow(name)
        flow = face.workspace.flow(name)
        try:
            ids = identities(flow, flow.effective_params(exported.params))
        except UltronError:  # parameters of nodes this flow does not have (any more)
            ids = identities(flow)
        rows = []
        for node in flow.names:
            recorded = exported.identities.get(node)
            same = "" if recorded is None else "same" if recorded == ids[node] else "DIFFERENT"
            rows.append([node, flow[node].label, ids[node][:12], same])
        return Table(["node", "kind", "identity", "as exported"], rows,
                     title=f"flow {name} version {flow.version}: {len(exported.node_cells)} "
                           f"node cells from {a.notebook}"
                           + (f" (identities with the parameters of {exported.experiment})"
                              if exported.experiment else ""))

    return run
