"""Savepoint lineage, and the check made before any state is restored.

Every savepoint a stop takes is recorded (:mod:`ultron_nb.store.savepoints`) with the
experiment, node, flow version, the savepoint its job had itself restored and the operators
whose state it holds. :func:`lineage` shows them as a tree: an experiment's family (its
parents and clones) with each one's savepoints and where each savepoint came from.

Before a resume or restart submits anything, :func:`check_restore` refuses, in one line
naming the node, a savepoint that no longer exists and one whose state the job to run cannot
take back (an operator it held is gone or reads other rows): Flink would fail that job at
start, or, told to ignore unclaimed state, silently start those operators empty. Restoring
anyway is the user's call, by node name (``allow_dropped``).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ultron_nb.engines.flink import plans
from ultron_nb.errors import ConfigError, NotFoundError
from ultron_nb.experiments.report import mask_url
from ultron_nb.runners.flink_compile import CompiledNode, load_job_spec
from ultron_nb.store import experiments as repo
from ultron_nb.store import savepoints as sp_repo
from ultron_nb.store.savepoints import SavepointRow
from ultron_nb.urls import local_path
from ultron_nb.views import Table

if TYPE_CHECKING:
    from ultron_nb.workspace import Workspace

#: Flink's option to start a job whose savepoint holds state no operator claims.
IGNORE_UNCLAIMED = "execution.savepoint.ignore-unclaimed-state"


def savepoint_exists(location: str) -> bool | None:
    """Whether the savepoint at ``location`` is still there (its ``_metadata`` file); None
    when this process cannot tell (a file system other than the local one)."""
    path = local_path(location)
    return None if path is None else (path / "_metadata").is_file()


def find(ws: Workspace, instance_id: str, location: str) -> SavepointRow | None:
    with ws.db.read() as conn:
        return sp_repo.by_location(conn, instance_id, location)


def _held(ws: Workspace, record: SavepointRow | None, instance_id: str
          ) -> dict[int, plans.Operator] | None:
    """The operators whose state a savepoint holds: as recorded, or for one taken before
    they were recorded, those of the plan the instance ran then; None when unknown."""
    if record is not None and record.operators is not None:
        return plans.from_json(record.operators)
    try:
        old_plan = load_job_spec(ws.instance_dir(instance_id)).plan
    except NotFoundError:
        return None
    return plans.operators(old_plan) if old_plan else None


def check_restore(ws: Workspace, exp_name: str, item: CompiledNode, location: str, *,
                  allow_dropped: Collection[str] = ()) -> None:
    """Refuse (one line) to restore ``location`` into ``item``'s job when the savepoint is
    gone or its state does not fit the job's plan; with the node in ``allow_dropped``, let
    Flink start without the state that does not fit."""
    node = item.node
    record = find(ws, item.instance, location)
    name = f"savepoint {record.id}" if record else "its savepoint"
    if savepoint_exists(location) is False:
        raise NotFoundError(
            f"node {node!r} of {exp_name!r}: {name} ({mask_url(location)}) no longer exists; "
            f"restart the node afresh (`%ultron restart {exp_name} {node}`) or pick another "
            f"(`%ultron savepoints {exp_name}`)")
    new_plan = item.job.spec.plan
    if not new_plan:
        return  # a job without a compiled plan: Flink maps its state by topology
    old = _held(ws, record, item.instance)
    if old is None:
        return
    check = plans.compare(old, plans.operators(new_plan))
    if check.ok:
        return
    if node in allow_dropped:
        item.job.spec.config[IGNORE_UNCLAIMED] = "true"
        return
    raise ConfigError(
        f"node {node!r} of {exp_name!r}: restoring {name} would lose state: "
        f"{check.summary()}; nothing was submitted (to restore anyway, allow it for "
        f"{node!r} by name)")


def branch(ws: Workspace, exp_name: str, item: CompiledNode, record: SavepointRow
           ) -> CompiledNode:
    """``item`` (a new instance of a clone) set to start from ``record``, a savepoint of
    another instance of its node; refused in one line when the state does not fit.

    Every operator takes its state back but the sink: its state is the part files it was
    writing in the other instance's folder, and a sink's id is salted by its instance
    (:func:`~ultron_nb.engines.flink.plans.stable_ids`), so it stays unclaimed."""
    from ultron_nb.engines.flink import jobclient

    node = item.node
    where = f"node {node!r} of {exp_name!r}: savepoint {record.id}"
    if savepoint_exists(record.location) is False:
        raise NotFoundError(f"{where} ({mask_url(record.location)}) no longer exists")
    new_plan = item.job.spec.plan
    if not new_plan:
        raise ConfigError(f"{where}: the node's job has no compiled plan, so its state "
                          "cannot be mapped to operators; launch it afresh")
    old = _held(ws, record, record.instance_id)
    if old is None:
        raise ConfigError(f"{where}: what state it holds is not known (taken by a job "
                          "without a compiled plan); launch the node afresh")
    check = plans.compare(old, plans.operators(new_plan))
    if any(plans.is_sink(op.type) for op in check.kept):
        raise ConfigError(f"{where}: its sink state would write into {record.experiment}'s "
                          "output folder (a savepoint taken before sinks were salted by "
                          "instance); launch the node afresh")
    check.dropped = [op for op in check.dropped if not plans.is_sink(op.type)]
    if not check.ok:
        raise ConfigError(f"{where} would lose state: {check.summary()}; nothing was "
                          f"submitted")
    spec = item.job.spec
    spec.config["execution.savepoint.path"] = record.location
    spec.config[IGNORE_UNCLAIMED] = "true"  # the sink's state only (checked above)
    return CompiledNode(node, item.instance, jobclient.prepare(ws.settings, spec),
                        item.output, item.depends_on)


@dataclass
class Lineage:
    """The savepoints of an experiment's family, as a tree (see :func:`lineage`)."""

    experiment: str
    table: Table
    savepoints: list[SavepointRow]

    def __str__(self) -> str:
        return str(self.table)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return self.table._repr_html_()

    @property
    def df(self) -> object:
        return self.table.df


def _family(parents: dict[str, str | None], name: str) -> list[tuple[str, int]]:
    """``name``'s root ancestor and all its descendants, depth first: (name, depth)."""
    root, seen = name, {name}
    while parents.get(root) and parents[root] not in seen:
        root = str(parents[root])
        seen.add(root)
    children: dict[str, list[str]] = {}
    for child, parent in sorted(parents.items()):
        if parent:
            children.setdefault(parent, []).append(child)
    out: list[tuple[str, int]] = []
    todo = [(root, 0)]
    while todo:
        current, depth = todo.pop()
        out.append((current, depth))
        todo.extend((c, depth + 1) for c in reversed(children.get(current, [])))
    return out


def taken_at(ts: float) -> str:
    """When a savepoint was taken, as ``savepoints`` shows it (local time)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@dataclass(frozen=True)
class BranchChoice:
    """A savepoint a clone may branch from, as a clone dialog lists it."""

    savepoint: SavepointRow
    exists: bool | None  # None: not known (a remote file system)
    taken: str  # local time, as ``savepoints`` shows it
    location: str  # credentials masked


def branch_choices(ws: Workspace, name: str) -> list[BranchChoice]:
    """The savepoints a clone of ``name`` may branch from: those of its family (root
    ancestor and every clone), ``name``'s own first, newest first."""
    _, rows = _family_savepoints(ws, name)
    rows.sort(key=lambda r: (r.experiment != name, -r.created_at))
    return [BranchChoice(r, savepoint_exists(r.location), taken_at(r.created_at),
                         mask_url(r.location)) for r in rows]


def _family_savepoints(ws: Workspace, name: str
                       ) -> tuple[list[tuple[str, int]], list[SavepointRow]]:
    """``name``'s family (see :func:`_family`) and the savepoints its experiments took,
    oldest first; a one-line NotFoundError for an unknown name."""
    with ws.db.read() as conn:
        repo.get_experiment(conn, name)
        family = _family(repo.parents(conn), name)
        return family, sp_repo.of_experiments(conn, [n for n, _ in family])


def lineage(ws: Workspace, name: str) -> Lineage:
    """The savepoints of ``name``'s family: its root ancestor and every clone below it, each
    with the savepoints it took (id, node, when, flow version, the savepoint it restored,
    where, whether it is still there)."""
    family, rows = _family_savepoints(ws, name)
    by_exp: dict[str, list[SavepointRow]] = {}
    for row in rows:
        by_exp.setdefault(row.experiment, []).append(row)
    lines: list[list[object]] = []
    for exp, depth in family:
        head = ("   " * (depth - 1) + "└─ " if depth else "") + exp
        mine = by_exp.get(exp, [])
        lines.append([head + (" ◀" if exp == name else ""), "", "", "", "", "", "", ""])
        for sp in mine:
            there = savepoint_exists(sp.location)
            lines.append(["   " * depth + "   ", sp.id, sp.node_name, taken_at(sp.created_at),
                          f"v{sp.flow_version}", f"#{sp.parent}" if sp.parent else "start",
                          {True: "ok", False: "deleted", None: "?"}[there],
                          mask_url(sp.location)])
    table = Table(["experiment", "savepoint", "node", "taken", "flow", "restored", "state",
                   "location"], lines, title=f"savepoints of {name}'s lineage")
    return Lineage(name, table, rows)
