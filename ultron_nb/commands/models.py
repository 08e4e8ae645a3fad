"""Verbs of the model center: versions, promotion and rollback of aliases, the MLflow UI."""

from __future__ import annotations

import argparse
from typing import Any

from ultron_nb.commands.registry import Face, Run, command
from ultron_nb.views import Message


@command("models", "model versions in the registry: aliases, metrics, lineage (a table)")
def _models(p: argparse.ArgumentParser) -> Run:
    p.add_argument("name", nargs="?", help="a registered model (default: every model)")
    p.add_argument("--experiment", help="only the versions this experiment trained")
    p.add_argument("--limit", type=int, default=100, help="at most this many versions")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services.models import mlflow_errors, models_table

        ws = face.workspace
        with mlflow_errors(ws):
            return models_table(ws, a.name, experiment=a.experiment, limit=a.limit)

    return run


@command("model", "one model: promote a version to an alias, roll an alias back, show lineage")
def _model(p: argparse.ArgumentParser) -> Run:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                           parser_class=type(p))
    pro = sub.add_parser("promote", add_help=p.add_help, prog=f"{p.prog} promote",
                         help="move an alias to a version")
    pro.add_argument("name")
    pro.add_argument("version", type=int)
    pro.add_argument("--alias", required=True, help="e.g. champion")
    pro.add_argument("--experiment", help="move this experiment's alias (a clone's own); "
                                          "default: the plain alias")
    back = sub.add_parser("rollback", add_help=p.add_help, prog=f"{p.prog} rollback",
                          help="move an alias back to its previous holder")
    back.add_argument("name")
    back.add_argument("--alias", required=True)
    back.add_argument("--to", type=int, metavar="VERSION", help="this version instead")
    back.add_argument("--experiment", help="roll back this experiment's alias")
    show = sub.add_parser("show", add_help=p.add_help, prog=f"{p.prog} show",
                          help="a version's lineage")
    show.add_argument("name")
    show.add_argument("version", type=int)

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import models

        ws = face.workspace
        mc = models.center(ws)
        with models.mlflow_errors(ws):
            if a.action == "promote":
                moved = mc.promote(a.name, a.version, a.alias, experiment=a.experiment)
                return models.promoted(a.name, a.version, moved)
            if a.action == "rollback":
                alias, now, before = mc.rollback(a.name, a.alias, to=a.to,
                                                 experiment=a.experiment)
                return models.rolled_back(a.name, alias, now, before)
            return models.lineage_table(ws, a.name, a.version)

    return run


@command("mlflow", "the MLflow UI of the model center on 127.0.0.1: ui, stop, status")
def _mlflow(p: argparse.ArgumentParser) -> Run:
    p.add_argument("action", choices=("ui", "stop", "status"))
    p.add_argument("--port", type=int, help="with ui: the port (default 5000)")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.engines.mlflow import ui

        settings = face.workspace.settings
        if a.action == "ui":
            return ui.start(settings, port=a.port)
        if a.action == "stop":
            return Message("MLflow UI stopped" if ui.stop(settings) else "MLflow UI: not running")
        return ui.status(settings)

    return run
