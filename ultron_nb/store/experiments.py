"""Experiments, node instances and jobs in the metadata store (repository functions).

Every function takes an open connection (``db.read()`` / ``db.write()``), so callers
group several changes into one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from ultron_nb.errors import NotFoundError
from ultron_nb.store.schema import experiment_nodes, experiments, jobs
from ultron_nb.store.schema import node_instances as instances


@dataclass(frozen=True)
class ExperimentRow:
    id: int
    name: str
    flow_name: str
    flow_version: int
    params: dict[str, Any]
    label: str
    target: str
    state: str
    parent: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class InstanceRow:
    id: str
    identity: str
    target: str
    node_name: str
    flow_name: str
    flow_version: int
    params: dict[str, Any]
    upstream: dict[str, str]
    output: dict[str, Any]
    state: str
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class JobRow:
    id: int
    instance_id: str
    engine: str
    external_id: str | None
    target: str
    state: str
    attempt: int
    savepoint: str | None
    error: str | None
    started_at: float
    ended_at: float | None
    trigger_id: int | None = None


@dataclass(frozen=True)
class MemberRow:
    """One node of an experiment: which instance runs it, and whether it is shared.

    ``released_at`` is when the experiment let go of the instance (None while it holds it).
    """

    node_name: str
    instance_id: str
    shared_from: str | None
    released_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeView:
    """A node of an experiment with its instance and the instance's latest job (one read)."""

    member: MemberRow
    instance: InstanceRow
    job: JobRow | None


def _experiment(row: Any) -> ExperimentRow:
    return ExperimentRow(
        id=int(row.id), name=row.name, flow_name=row.flow_name,
        flow_version=int(row.flow_version), params=dict(row.params or {}), label=row.label,
        target=row.target, state=row.state, parent=row.parent,
        created_at=float(row.created_at), updated_at=float(row.updated_at),
    )


def _instance(row: Any) -> InstanceRow:
    return InstanceRow(
        id=row.id, identity=row.identity, target=row.target, node_name=row.node_name,
        flow_name=row.flow_name, flow_version=int(row.flow_version),
        params=dict(row.params or {}), upstream=dict(row.upstream or {}),
        output=dict(row.output or {}), state=row.state, created_at=float(row.created_at),
        updated_at=float(row.updated_at),
    )


def _job(row: Any) -> JobRow:
    return JobRow(
        id=int(row.id), instance_id=row.instance_id, engine=row.engine,
        external_id=row.external_id, target=row.target, state=row.state,
        attempt=int(row.attempt), savepoint=row.savepoint, error=row.error,
        started_at=float(row.started_at),
        ended_at=float(row.ended_at) if row.ended_at is not None else None,
        trigger_id=int(row.trigger_id) if row.trigger_id is not None else None,
    )


# ---------------------------------------------------------------- experiments
def create_experiment(
    conn: Connection,
    *,
    name: str,
    flow_name: str,
    flow_version: int,
    params: dict[str, Any],
    label: str,
    target: str,
    state: str = "launching",
    parent: str | None = None,
) -> ExperimentRow:
    now = time.time()
    conn.execute(insert(experiments).values(
        name=name, flow_name=flow_name, flow_version=flow_version, params=params, label=label,
        target=target, state=state, parent=parent, created_at=now, updated_at=now,
    ))
    return get_experiment(conn, name)


def experiment_exists(conn: Connection, name: str) -> bool:
    return conn.execute(select(experiments.c.id).where(experiments.c.name == name)).first() \
        is not None


def get_experiment(conn: Connection, name: str) -> ExperimentRow:
    row = conn.execute(select(experiments).where(experiments.c.name == name)).first()
    if row is None:
        known = [r[0] for r in conn.execute(
            select(experiments.c.name).order_by(experiments.c.id.desc()).limit(8))]
        hint = f" (recent: {', '.join(known)})" if known else " (no experiments yet)"
        raise NotFoundError(f"no experiment named {name!r}{hint}")
    return _experiment(row)


def list_experiments(conn: Connection, flow_name: str | None = None) -> list[ExperimentRow]:
    query = select(experiments).order_by(experiments.c.id.desc())
    if flow_name:
        query = query.where(experiments.c.flow_name == flow_name)
    return [_experiment(r) for r in conn.execute(query)]


def latest_experiment(conn: Connection, flow_name: str | None = None) -> ExperimentRow | None:
    rows = list_experiments(conn, flow_name)
    return rows[0] if rows else None


def oldest_experiment_time(conn: Connection) -> float | None:
    """When the store's first experiment was created (None when there is none)."""
    value = conn.execute(select(func.min(experiments.c.created_at))).scalar()
    return float(value) if value is not None else None


def parents(conn: Connection) -> dict[str, str | None]:
    """Experiment name → the experiment it was cloned from."""
    return {r.name: r.parent for r in conn.execute(
        select(experiments.c.name, experiments.c.parent))}


def next_experiment_name(conn: Connection, flow_name: str) -> str:
    count = conn.execute(
        select(func.count()).select_from(experiments).where(experiments.c.flow_name == flow_name)
    ).scalar_one()
    k = int(count) + 1
    while experiment_exists(conn, f"{flow_name}_{k}"):
        k += 1
    return f"{flow_name}_{k}"


def set_experiment_state(conn: Connection, name: str, state: str) -> None:
    conn.execute(update(experiments).where(experiments.c.name == name)
                 .values(state=state, updated_at=time.time()))


# ---------------------------------------------------------------- instances
def get_instance(conn: Connection, instance_id: str) -> InstanceRow | None:
    row = conn.execute(select(instances).where(instances.c.id == instance_id)).first()
    return _instance(row) if row else None


def save_instance(conn: Connection, inst: InstanceRow) -> InstanceRow:
    """Insert ``inst``, or update target, upstream, output and state of the existing row."""
    now = time.time()
    if get_instance(conn, inst.id) is None:
        conn.execute(insert(instances).values(
            id=inst.id, identity=inst.identity, target=inst.target, node_name=inst.node_name,
            flow_name=inst.flow_name, flow_version=inst.flow_version, params=inst.params,
            upstream=inst.upstream, output=inst.output, state=inst.state, created_at=now,
            updated_at=now,
        ))
    else:
        conn.execute(update(instances).where(instances.c.id == inst.id).values(
            target=inst.target, upstream=inst.upstream, output=inst.output, state=inst.state,
            updated_at=now,
        ))
    result = get_instance(conn, inst.id)
    assert result is not None
    return result


def set_instance_state(conn: Connection, instance_id: str, state: str,
                       output: dict[str, Any] | None = None) -> None:
    values: dict[str, Any] = {"state": state, "updated_at": time.time()}
    if output is not None:
        values["output"] = output
    conn.execute(update(instances).where(instances.c.id == instance_id).values(**values))


def set_instance_output(conn: Connection, instance_id: str, output: dict[str, Any]) -> None:
    """Record what an instance's output is now (its columns after a run, say)."""
    conn.execute(update(instances).where(instances.c.id == instance_id)
                 .values(output=output, updated_at=time.time()))


def link_node(conn: Connection, experiment_id: int, node_name: str, instance_id: str,
              shared_from: str | None = None) -> None:
    conn.execute(insert(experiment_nodes).values(
        experiment_id=experiment_id, node_name=node_name, instance_id=instance_id,
        shared_from=shared_from,
    ))


def members(conn: Connection, experiment_id: int) -> list[MemberRow]:
    rows = conn.execute(
        select(experiment_nodes).where(experiment_nodes.c.experiment_id == experiment_id)
    )
    return [MemberRow(r.node_name, r.instance_id, r.shared_from, r.released_at) for r in rows]


def member(conn: Connection, experiment: ExperimentRow, node: str) -> MemberRow:
    """The node ``node`` of ``experiment``; NotFoundError naming both when it has none."""
    row = conn.execute(select(experiment_nodes).where(
        experiment_nodes.c.experiment_id == experiment.id,
        experiment_nodes.c.node_name == node)).first()
    if row is None:
        names = sorted(m.node_name for m in members(conn, experiment.id))
        raise NotFoundError(f"experiment {experiment.name!r} has no node {node!r} "
                            f"(nodes: {', '.join(names)})")
    return MemberRow(row.node_name, row.instance_id, row.shared_from, row.released_at)


def node_views(conn: Connection, experiment_id: int) -> list[NodeView]:
    """Every node of an experiment with its instance and latest job, in two reads."""
    rows = conn.execute(
        select(instances, experiment_nodes.c.node_name.label("member_node"),
               experiment_nodes.c.shared_from, experiment_nodes.c.released_at)
        .select_from(experiment_nodes.join(
            instances, instances.c.id == experiment_nodes.c.instance_id))
        .where(experiment_nodes.c.experiment_id == experiment_id)
    ).all()
    found = latest_jobs(conn, [r.id for r in rows])
    return [NodeView(MemberRow(r.member_node, r.id, r.shared_from, r.released_at),
                     _instance(r), found.get(r.id)) for r in rows]


def holders(conn: Connection, instance_id: str) -> list[ExperimentRow]:
    """The experiments that hold ``instance_id`` now (reference counting: it runs while
    any experiment holds it)."""
    rows = conn.execute(
        select(experiments)
        .join(experiment_nodes, experiment_nodes.c.experiment_id == experiments.c.id)
        .where(experiment_nodes.c.instance_id == instance_id,
               experiment_nodes.c.released_at.is_(None))
        .order_by(experiments.c.id)
    )
    return [_experiment(r) for r in rows]


def instance_users(conn: Connection, instance_id: str) -> list[ExperimentRow]:
    """Every experiment that ever used ``instance_id`` (held or released)."""
    rows = conn.execute(
        select(experiments)
        .join(experiment_nodes, experiment_nodes.c.experiment_id == experiments.c.id)
        .where(experiment_nodes.c.instance_id == instance_id)
        .order_by(experiments.c.id)
    )
    return [_experiment(r) for r in rows]


def release(conn: Connection, experiment_id: int, node: str | None = None) -> list[str]:
    """The experiment lets go of its instances (or of one node's); returns their ids."""
    where = [experiment_nodes.c.experiment_id == experiment_id,
             experiment_nodes.c.released_at.is_(None)]
    if node is not None:
        where.append(experiment_nodes.c.node_name == node)
    ids = [r[0] for r in conn.execute(select(experiment_nodes.c.instance_id).where(*where))]
    conn.execute(update(experiment_nodes).where(*where).values(released_at=time.time()))
    return ids


def hold(conn: Connection, experiment_id: int, node: str | None = None) -> None:
    """The experiment holds its instances again (resume), or one node's."""
    where = [experiment_nodes.c.experiment_id == experiment_id]
    if node is not None:
        where.append(experiment_nodes.c.node_name == node)
    conn.execute(update(experiment_nodes).where(*where).values(released_at=None))


def instances_of(conn: Connection, identities: list[str], target: str) -> list[InstanceRow]:
    """Instances with one of ``identities`` on cluster ``target``, oldest first."""
    if not identities:
        return []
    rows = conn.execute(select(instances).where(instances.c.identity.in_(identities),
                                                instances.c.target == target)
                        .order_by(instances.c.created_at))
    return [_instance(r) for r in rows]


def latest_jobs(conn: Connection, instance_ids: list[str]) -> dict[str, JobRow]:
    """The latest job of each instance (those that have one)."""
    if not instance_ids:
        return {}
    latest_ids = (select(func.max(jobs.c.id)).where(jobs.c.instance_id.in_(instance_ids))
                  .group_by(jobs.c.instance_id))
    return {j.instance_id: _job(j) for j in conn.execute(
        select(jobs).where(jobs.c.id.in_(latest_ids)))}


def holder_names(conn: Connection, instance_ids: list[str]) -> dict[str, list[str]]:
    """Instance id → names of the experiments holding it."""
    if not instance_ids:
        return {}
    out: dict[str, list[str]] = {i: [] for i in instance_ids}
    rows = conn.execute(
        select(experiment_nodes.c.instance_id, experiments.c.name)
        .join(experiments, experiments.c.id == experiment_nodes.c.experiment_id)
        .where(experiment_nodes.c.instance_id.in_(instance_ids),
               experiment_nodes.c.released_at.is_(None))
        .order_by(experiments.c.id))
    for inst, name in rows:
        out[inst].append(name)
    return out


def owner_of(conn: Connection, instance_id: str) -> str | None:
    """The experiment that launched ``instance_id`` (the first user that does not share it)."""
    row = conn.execute(
        select(experiments.c.name)
        .join(experiment_nodes, experiment_nodes.c.experiment_id == experiments.c.id)
        .where(experiment_nodes.c.instance_id == instance_id)
        .where(experiment_nodes.c.shared_from.is_(None))
        .order_by(experiments.c.id)
        .limit(1)
    ).first()
    return row[0] if row else None


# ---------------------------------------------------------------- jobs
def add_job(
    conn: Connection,
    *,
    instance_id: str,
    engine: str,
    external_id: str | None,
    target: str,
    state: str,
    attempt: int = 1,
    savepoint: str | None = None,
    error: str | None = None,
    trigger_id: int | None = None,
) -> JobRow:
    result = conn.execute(insert(jobs).values(
        instance_id=instance_id, engine=engine, external_id=external_id, target=target,
        state=state, attempt=attempt, savepoint=savepoint, error=error, started_at=time.time(),
        trigger_id=trigger_id,
    ))
    row = conn.execute(select(jobs).where(jobs.c.id == result.inserted_primary_key[0])).one()
    return _job(row)


_JOB_COLUMNS = frozenset({"external_id", "state", "savepoint", "error", "ended_at"})


def update_job(conn: Connection, job_id: int, *, only_if: frozenset[str] | set[str] | None = None,
               **values: Any) -> bool:
    """Update a job row; with ``only_if``, only while its state is one of those (a
    compare-and-set: False when another actor changed it first)."""
    unknown = set(values) - _JOB_COLUMNS
    if unknown:
        raise ValueError(f"cannot update job columns {sorted(unknown)}")
    stmt = update(jobs).where(jobs.c.id == job_id)
    if only_if is not None:
        stmt = stmt.where(jobs.c.state.in_(sorted(only_if)))
    return conn.execute(stmt.values(**values)).rowcount == 1


def next_attempt(conn: Connection, instance_id: str) -> int:
    """The attempt number the next job of ``instance_id`` gets."""
    return 1 + int(conn.execute(select(func.coalesce(func.max(jobs.c.attempt), 0))
                                .where(jobs.c.instance_id == instance_id)).scalar_one())


def jobs_in_state(conn: Connection, engine: str, states: set[str] | frozenset[str], *,
                  instance_id: str | None = None) -> list[JobRow]:
    """Jobs of ``engine`` in one of ``states`` (of one instance, when given)."""
    query = select(jobs).where(jobs.c.engine == engine, jobs.c.state.in_(sorted(states)))
    if instance_id is not None:
        query = query.where(jobs.c.instance_id == instance_id)
    return [_job(r) for r in conn.execute(query.order_by(jobs.c.id))]


def latest_job(conn: Connection, instance_id: str) -> JobRow | None:
    row = conn.execute(
        select(jobs).where(jobs.c.instance_id == instance_id).order_by(jobs.c.id.desc()).limit(1)
    ).first()
    return _job(row) if row else None


def instance_jobs(conn: Connection, instance_id: str) -> list[JobRow]:
    rows = conn.execute(select(jobs).where(jobs.c.instance_id == instance_id)
                        .order_by(jobs.c.id))
    return [_job(r) for r in rows]


def last_savepoint(conn: Connection, instance_id: str) -> str | None:
    row = conn.execute(
        select(jobs.c.savepoint).where(jobs.c.instance_id == instance_id)
        .where(jobs.c.savepoint.is_not(None)).order_by(jobs.c.id.desc()).limit(1)
    ).first()
    return row[0] if row else None
