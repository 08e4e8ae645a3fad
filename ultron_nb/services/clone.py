"""Clone an experiment in one command, and compare two experiments node by node.

A clone launches the flow's *current* version (a node redefined since the parent launched
counts as changed) with the parent's parameters plus the clone's overrides. Nodes whose
content identity is unchanged share the parent's running instances: no new Flink job. Only
changed nodes and their downstream get new instances, with outputs of their own.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ultron_nb import experiments
from ultron_nb.engines.graphviz import dot_to_svg
from ultron_nb.errors import ConfigError, EngineError, NotFoundError
from ultron_nb.experiments import ExperimentStatus
from ultron_nb.experiments.report import mask_url
from ultron_nb.experiments.savepoints import savepoint_exists, taken_at
from ultron_nb.flow import Kind
from ultron_nb.flow.plan import Plan, Step, plan_launch
from ultron_nb.store import experiments as repo
from ultron_nb.store import savepoints as sp_repo
from ultron_nb.store.savepoints import SavepointRow
from ultron_nb.views import Table

if TYPE_CHECKING:
    from ultron_nb.workspace import Workspace


@dataclass
class ClonePlan:
    """What a clone will do, node by node (shown before launching, and by ``--dry-run``);
    ``notes`` say what it means for the models (:func:`ultron_nb.services.models.clone_note`)."""

    source: str
    name: str
    plan: Plan
    overrides: dict[str, str]
    notes: list[str] = field(default_factory=list)
    #: node → the savepoint its new instance starts from (``--from-savepoint``); the other
    #: new nodes start afresh.
    restores: dict[str, SavepointRow] = field(default_factory=dict)

    def rows(self) -> list[list[str]]:
        out = []
        for p in self.plan.nodes:
            what = {Step.SHARE: "shared", Step.NEW: "new"}[p.step]
            if p.node in self.restores:
                what += f", from savepoint {self.restores[p.node].id}"
            params = ", ".join(f"{k}: {a} → {b}" for k, a, b in p.changed_params)
            out.append([p.node, what, p.instance_id, p.reason, params])
        return out

    @property
    def launches(self) -> list[str]:
        return [p.node for p in self.plan.nodes if p.step is not Step.SHARE]

    def __str__(self) -> str:
        table = str(Table(["node", "plan", "instance", "why", "parameters"], self.rows(),
                          title=f"clone {self.source} → {self.name}"))
        return "\n".join([table, *self.notes])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        colours = {"shared": "#b2f2bb", "new": "#a5d8ff"}
        body = "".join(
            "<tr>" + "".join(
                f'<td style="background:{colours.get(v, "")}">{html.escape(v)}</td>'
                if i == 1 else f"<td>{html.escape(v)}</td>" for i, v in enumerate(r)
            ) + "</tr>" for r in self.rows()
        )
        return (f"<table><caption>clone <b>{html.escape(self.source)}</b> → "
                f"<b>{html.escape(self.name)}</b></caption><tr><th>node</th><th>plan</th>"
                f"<th>instance</th><th>why</th><th>parameters</th></tr>{body}</table>"
                + ("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
                   + "</ul>" if self.notes else ""))


@dataclass
class CloneResult:
    plan: ClonePlan
    status: ExperimentStatus

    def __str__(self) -> str:
        return f"{self.plan}\n\n{self.status}"

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return self.plan._repr_html_() + self.status._repr_html_()


def _source_identities(ws: Workspace, source: str) -> tuple[Any, dict[str, str]]:
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, source)
        views = repo.node_views(conn, exp.id)
    return exp, {v.member.node_name: v.instance.identity for v in views}


def plan_clone(ws: Workspace, source: str, name: str,
               overrides: Mapping[str, str] | None = None, *,
               from_savepoints: Sequence[int] = ()) -> ClonePlan:
    """The plan of cloning ``source`` into ``name`` with ``overrides`` (NODE.PARAM=V);
    the nodes of ``from_savepoints`` (savepoint ids) start from those savepoints."""
    exp, base_ids = _source_identities(ws, source)
    with ws.db.read() as conn:
        if repo.experiment_exists(conn, name):
            raise ConfigError(f"an experiment named {name!r} exists already; choose another name")
    flow = ws.flow(exp.flow_name)
    parent_flow = ws.flow(exp.flow_name, exp.flow_version)
    merged = {**{str(k): str(v) for k, v in exp.params.items()},
              **{str(k): str(v) for k, v in (overrides or {}).items()}}
    base_params = parent_flow.effective_params(exp.params)
    with ws.db.read() as conn:
        existing = experiments.existing_instances(conn, flow, exp.target.rstrip("/"))
    plan = plan_launch(flow, merged, existing, target=exp.target.rstrip("/"),
                       base_params=base_params, base_identities=base_ids, flag="--set")
    cplan = ClonePlan(source, name, plan, merged)
    cplan.restores = _restores(ws, exp, flow, plan, from_savepoints)
    cplan.notes = _model_notes(ws, cplan, flow)
    if cplan.restores:
        cplan.notes.append(
            "branched from savepoints: " + ", ".join(
                f"{n} from {sp.id} (taken {taken_at(sp.created_at)})"
                for n, sp in cplan.restores.items())
            + "; each of them writes only what it computes from there on, and every other "
            "new node starts afresh")
    return cplan


def _restores(ws: Workspace, exp: Any, flow: Any, plan: Plan, ids: Sequence[int]
              ) -> dict[str, SavepointRow]:
    """The savepoint each branched node starts from; a one-line error naming the flag and
    the savepoint (or node) for one that cannot be restored into the clone."""
    steps = {p.node: p.step for p in plan.nodes}
    out: dict[str, SavepointRow] = {}
    for sp_id in ids:
        with ws.db.read() as conn:
            try:
                sp = sp_repo.get(conn, int(sp_id))
            except NotFoundError:
                raise NotFoundError(f"--from-savepoint {sp_id}: no such savepoint (see "
                                    f"`%ultron savepoints {exp.name}`)") from None
        where = f"--from-savepoint {sp.id}"
        if sp.flow_name != exp.flow_name:
            raise ConfigError(f"{where}: it is of flow {sp.flow_name!r} ({sp.experiment}), "
                              f"not of {exp.name!r}'s flow {exp.flow_name!r}")
        node = sp.node_name
        if node not in flow or flow[node].kind is not Kind.FLINK:
            raise ConfigError(f"{where}: the flow has no Flink node {node!r} any more")
        if node in out:
            raise ConfigError(f"{where}: node {node!r} already starts from savepoint "
                              f"{out[node].id}")
        if savepoint_exists(sp.location) is False:
            raise NotFoundError(f"{where}: savepoint {sp.id} of node {node!r} no longer "
                                f"exists ({mask_url(sp.location)})")
        if steps.get(node) is not Step.NEW:
            raise ConfigError(
                f"{where}: node {node!r} is shared with a running instance, so the clone "
                f"starts nothing there; change it (--set {node}.PARAM=V) to branch it")
        for upstream in flow.upstream(node):
            if flow[upstream].kind is Kind.FLINK and steps.get(upstream) is Step.NEW:
                raise ConfigError(
                    f"{where}: node {node!r} reads {upstream!r}, which the clone launches "
                    f"anew, and the read positions in savepoint {sp.id} are in "
                    f"{sp.experiment}'s {upstream!r} output; branch {upstream!r} from its "
                    f"savepoint instead ({node!r} then starts on its new output)")
        out[node] = sp
    return out


def _model_notes(ws: Workspace, cplan: ClonePlan, flow: Any) -> list[str]:
    """The clone plan's lines about models (one line, not a failure, if the registry
    cannot be read)."""
    from ultron_nb.services.models import clone_note, mlflow_errors

    try:
        with mlflow_errors(ws):
            return clone_note(ws, cplan.source, cplan.name, cplan.launches, flow)
    except EngineError as exc:
        return [f"models: the registry could not be read ({exc})"]


def clone(ws: Workspace, source: str, name: str, overrides: Mapping[str, str] | None = None,
          *, dry_run: bool = False, label: str | None = None,
          timeout: float = 120.0, from_savepoints: Sequence[int] = ()
          ) -> ClonePlan | CloneResult:
    """Clone experiment ``source`` as ``name``; with ``dry_run`` only return the plan.

    ``from_savepoints`` (ids of ``savepoints SRC``) branches those savepoints' nodes: each
    one's new instance starts with the state the savepoint holds (its sources' positions,
    joins, windows), checked against its plan first, and writes its own output."""
    cplan = plan_clone(ws, source, name, overrides, from_savepoints=from_savepoints)
    if dry_run:
        return cplan
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, source)
    status = experiments.launch(ws, exp.flow_name, name=name, params=cplan.overrides,
                                label=label, target=exp.target, parent=source, timeout=timeout,
                                restore=cplan.restores)
    return CloneResult(cplan, status)


@dataclass
class ExperimentDiff:
    a: str
    b: str
    rows: list[list[str]]
    dot_a: str
    dot_b: str

    def __str__(self) -> str:
        return str(Table(["node", self.a, self.b, "difference"], self.rows,
                         title=f"diff {self.a} {self.b}"))

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        table = Table(["node", self.a, self.b, "difference"], self.rows)._repr_html_()
        try:
            pics = (f'<div style="display:flex;gap:1em"><div>{dot_to_svg(self.dot_a)}</div>'
                    f"<div>{dot_to_svg(self.dot_b)}</div></div>")
        except ConfigError:
            pics = ""
        return table + pics


def diff(ws: Workspace, a: str, b: str) -> ExperimentDiff:
    """Node by node: shared (same instance), changed (with the parameter diff), new, gone."""

    def load(name: str) -> tuple[Any, dict[str, tuple[str, dict[str, str]]]]:
        with ws.db.read() as conn:
            exp = repo.get_experiment(conn, name)
            views = repo.node_views(conn, exp.id)
        return exp, {v.member.node_name: (v.instance.id, dict(v.instance.params))
                     for v in views}

    exp_a, nodes_a = load(a)
    exp_b, nodes_b = load(b)
    rows: list[list[str]] = []
    shared: set[str] = set()
    for node in [*nodes_a, *(n for n in nodes_b if n not in nodes_a)]:
        ia, ib = nodes_a.get(node), nodes_b.get(node)
        if ia is None:
            rows.append([node, "", ib[0], "new"])  # type: ignore[index]
        elif ib is None:
            rows.append([node, ia[0], "", "removed"])
        elif ia[0] == ib[0]:
            shared.add(node)
            rows.append([node, ia[0], ib[0], "shared"])
        else:
            pa, pb = ia[1], ib[1]
            changes = ", ".join(f"{k}: {pa.get(k)} → {pb.get(k)}"
                                for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k))
            rows.append([node, ia[0], ib[0], "changed" + (f" ({changes})" if changes else "")])
    flow_a = ws.flow(exp_a.flow_name, exp_a.flow_version)
    flow_b = ws.flow(exp_b.flow_name, exp_b.flow_version)
    return ExperimentDiff(a, b, rows,
                          flow_a.to_dot(shared=shared, title=f"{a}"),
                          flow_b.to_dot(shared=shared, title=f"{b}"))
