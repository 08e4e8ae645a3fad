"""What the faces show of the model center: version tables, a version's lineage, and the
line a clone plan prints about models."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ultron_nb.engines.mlflow.center import TAG, ModelCenter
from ultron_nb.engines.mlflow.store import MlflowStore, engine_error, error_code
from ultron_nb.errors import NotFoundError, UltronError
from ultron_nb.events.model_keys import parse_key, scope_suffix
from ultron_nb.views import Message, Table

if TYPE_CHECKING:
    from ultron_nb.flow import Flow
    from ultron_nb.workspace import Workspace

COLUMNS = ["model", "version", "aliases", "experiment", "node", "flow", "window", "rows",
           "metrics", "run", "created"]


def center(ws: Workspace, experiment: str | None = None) -> ModelCenter:
    return ModelCenter(ws.settings, ws.db, experiment=experiment)


@contextlib.contextmanager
def mlflow_errors(ws: Workspace) -> Iterator[None]:
    """Turn an MLflow failure into one line (an :class:`EngineError`, the URI masked)."""
    try:
        yield
    except UltronError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith("mlflow") and error_code(exc) is None:
            raise
        store = MlflowStore.of(ws.settings)
        raise engine_error(f"MLflow ({store.safe_uri})", exc, store) from None


def models_table(ws: Workspace, name: str | None = None, *, experiment: str | None = None,
                 limit: int = 100) -> Table:
    """Versions (newest first) with their aliases, lineage and run metrics."""
    from ultron_nb.engines.mlflow.registry import run_metrics

    mc = center(ws)
    mc.chain(experiment)  # an experiment this workspace never ran is a mistake, not "none"
    found = mc.versions(name, experiment=experiment, limit=limit)
    aliases: dict[str, dict[int, list[str]]] = {}
    rows = []
    for v in found:
        if v.name not in aliases:
            aliases[v.name] = aliases_by_version(mc.client.get_registered_model(v.name))
        tags = dict(v.tags or {})
        flow = tags.get(TAG + "flow", "")
        if flow and tags.get(TAG + "flow_version"):
            flow += f" v{tags[TAG + 'flow_version']}"
        metrics = run_metrics(mc.client, v.run_id)
        rows.append([
            v.name, int(v.version), ", ".join(sorted(aliases[v.name].get(int(v.version), []))),
            tags.get(TAG + "experiment", ""), tags.get(TAG + "node", ""), flow,
            tags.get(TAG + "window", ""), tags.get(TAG + "rows", ""),
            ", ".join(f"{k}={val:.4g}" for k, val in sorted(metrics.items())),
            (v.run_id or "")[:12],
            datetime.fromtimestamp(int(v.creation_timestamp) / 1000).isoformat(" ", "seconds"),
        ])
    what = name or "every model"
    if experiment:
        what += f" of experiment {experiment}"
    return Table(COLUMNS, rows, title=f"{what} ({mc.store.safe_uri})")


def aliases_by_version(registered: Any) -> dict[int, list[str]]:
    """A registered model's aliases, by the version each points at (sorted)."""
    out: dict[int, list[str]] = {}
    for alias, number in dict(registered.aliases or {}).items():
        out.setdefault(int(number), []).append(str(alias))
    return {v: sorted(a) for v, a in out.items()}


def model_summaries(ws: Workspace, name: str | None = None, *,
                    per_model: int = 10) -> list[dict[str, Any]]:
    """Every registered model (or ``name``) with its newest ``per_model`` versions (newest
    first), each with its aliases and lineage (experiment, node, flow, window), as plain
    data: what the side panel lists. Empty, without creating a store, when the workspace
    has none."""
    mc = center(ws)
    out = []
    for registered in mc.models(name):
        aliases = aliases_by_version(registered)
        versions = []
        for v in mc.newest_versions(registered.name, per_model):
            tags = dict(v.tags or {})
            number = int(v.version)
            versions.append({
                "version": number, "aliases": aliases.get(number, []),
                "experiment": tags.get(TAG + "experiment", ""),
                "node": tags.get(TAG + "node", ""), "flow": tags.get(TAG + "flow", ""),
                "window": tags.get(TAG + "window", ""), "created": int(v.creation_timestamp),
            })
        out.append({"name": str(registered.name), "versions": versions})
    return out


def model_summary(ws: Workspace, name: str, *, versions: int = 100) -> dict[str, Any]:
    """Model ``name`` with its newest ``versions``; NotFoundError for an unknown model."""
    found = model_summaries(ws, name, per_model=versions)
    if not found:
        raise NotFoundError(f"no model {name!r} in the model center")
    return found[0]


def lineage_table(ws: Workspace, name: str, version: int) -> Table:
    """One version's lineage, field by field."""
    info = center(ws).lineage(name, version)
    rows = [[k, v if isinstance(v, str) else json.dumps(v, sort_keys=True)]
            for k, v in info.items()]
    return Table(["field", "value"], rows, title=f"model {name} version {version}")


def promoted(name: str, version: int, registry_alias: str) -> Message:
    return Message(f"model {name}: alias {registry_alias} → version {version}")


def rolled_back(name: str, registry_alias: str, now: int, before: int | None) -> Message:
    was = f" (was {before})" if before is not None else ""
    return Message(f"model {name}: alias {registry_alias} rolled back to version {now}{was}")


def clone_note(ws: Workspace, source: str, name: str, launches: Iterable[str],
               flow: Flow | None = None) -> list[str]:
    """Lines for a clone plan: which models the clone trains its own versions of, that the
    aliases of ``source`` stay where they are, and (given the ``flow``) which nodes on a
    model's events are shared, so see ``source``'s versions only. Reads the registry only
    when the workspace has one (a plan stays fast without models)."""
    launched = set(launches)
    rule = (f"models: aliases set by {name}'s nodes are its own (e.g. champion"
            f"{scope_suffix(name)}); aliases of {source} untouched")
    mc = center(ws)
    if not mc.store.exists():
        return [rule]
    own: dict[str, set[str]] = {}
    shared: dict[str, set[str]] = {}
    for v in mc.versions(experiment=source, limit=0):
        node = dict(v.tags or {}).get(TAG + "node", "")
        (own if node in launched else shared).setdefault(v.name, set()).add(node)
    lines = [f"models: {name} trains its own versions of {model} (node "
             f"{', '.join(sorted(nodes))}); aliases of {source} untouched"
             for model, nodes in sorted(own.items())]
    lines += [f"models: {model} comes from {source}'s shared node "
              f"{', '.join(sorted(nodes))}; {name} reads {source}'s aliases"
              for model, nodes in sorted(shared.items()) if model not in own]
    for node in flow or ():
        if node.name in launched:
            continue
        for edge in node.triggers:
            parsed = parse_key(edge.event_key or "")
            if parsed and parsed[0] in own:
                lines.append(f"models: {node.name} (on {edge.event_key}) is shared with "
                             f"{source}: it sees {source}'s versions of {parsed[0]} only")
    return lines or [rule]

__all__ = ["aliases_by_version", "clone_note", "lineage_table", "model_summaries",
           "model_summary", "models_table"]

