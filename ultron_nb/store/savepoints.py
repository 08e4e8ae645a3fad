"""Savepoints in the metadata store: each one a Flink job took, and where it came from.

A savepoint row names the experiment whose node took it (the instance's owner), the flow
version, the job, the savepoint that job had restored (``parent``: the lineage) and the
operators whose state it holds. Every function takes an open connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from ultron_nb.errors import NotFoundError
from ultron_nb.store.schema import experiment_nodes, experiments, jobs, savepoints
from ultron_nb.store.schema import node_instances as instances


@dataclass(frozen=True)
class SavepointRow:
    id: int
    location: str
    experiment: str
    node_name: str
    instance_id: str
    job_id: int
    flow_name: str
    flow_version: int
    parent: int | None
    operators: list[dict[str, Any]] | None
    created_at: float


def _row(r: Any) -> SavepointRow:
    return SavepointRow(
        id=int(r.id), location=r.location, experiment=r.experiment, node_name=r.node_name,
        instance_id=r.instance_id, job_id=int(r.job_id), flow_name=r.flow_name,
        flow_version=int(r.flow_version), parent=int(r.parent) if r.parent is not None else None,
        operators=list(r.operators) if r.operators is not None else None,
        created_at=float(r.created_at))


def record(conn: Connection, *, location: str, job_id: int, instance_id: str,
           parent: int | None, operators: list[dict[str, Any]] | None) -> SavepointRow:
    """Record the savepoint ``job_id`` took (its experiment: the instance's owner)."""
    inst = conn.execute(select(instances).where(instances.c.id == instance_id)).one()
    owner = _owner(conn, instance_id) or ""
    result = conn.execute(insert(savepoints).values(
        location=location, experiment=owner, node_name=inst.node_name,
        instance_id=instance_id, job_id=job_id, flow_name=inst.flow_name,
        flow_version=int(inst.flow_version), parent=parent, operators=operators,
        created_at=time.time()))
    return get(conn, int(result.inserted_primary_key[0]))


def _owner(conn: Connection, instance_id: str) -> str | None:
    row = conn.execute(
        select(experiments.c.name)
        .join(experiment_nodes, experiment_nodes.c.experiment_id == experiments.c.id)
        .where(experiment_nodes.c.instance_id == instance_id)
        .order_by(experiment_nodes.c.shared_from.is_not(None), experiments.c.id)
        .limit(1)).first()
    return row[0] if row else None


def get(conn: Connection, savepoint_id: int) -> SavepointRow:
    row = conn.execute(select(savepoints).where(savepoints.c.id == savepoint_id)).first()
    if row is None:
        raise NotFoundError(f"no savepoint {savepoint_id} (see `%ultron savepoints EXP`)")
    return _row(row)


def by_location(conn: Connection, instance_id: str, location: str) -> SavepointRow | None:
    """The latest record of ``location`` taken by ``instance_id``'s jobs."""
    row = conn.execute(select(savepoints).where(savepoints.c.instance_id == instance_id,
                                                savepoints.c.location == location)
                       .order_by(savepoints.c.id.desc()).limit(1)).first()
    return _row(row) if row else None


def of_experiments(conn: Connection, names: list[str]) -> list[SavepointRow]:
    """The savepoints the experiments ``names`` took, oldest first."""
    rows = conn.execute(select(savepoints).where(savepoints.c.experiment.in_(sorted(names)))
                        .order_by(savepoints.c.id))
    return [_row(r) for r in rows]


def backfill(conn: Connection) -> int:
    """Rows for the savepoints stopped jobs took before savepoints had a table (the
    schema 4 migration): their operators and parents are not known. Returns how many."""
    found = conn.execute(
        select(jobs.c.id, jobs.c.instance_id, jobs.c.savepoint, jobs.c.ended_at,
               jobs.c.started_at)
        .where(jobs.c.engine == "flink", jobs.c.state == "stopped",
               jobs.c.savepoint.is_not(None)).order_by(jobs.c.id)).all()
    for job in found:
        inst = conn.execute(select(instances).where(instances.c.id == job.instance_id)).first()
        if inst is None:
            continue
        conn.execute(insert(savepoints).values(
            location=job.savepoint, experiment=_owner(conn, job.instance_id) or "",
            node_name=inst.node_name, instance_id=job.instance_id, job_id=job.id,
            flow_name=inst.flow_name, flow_version=int(inst.flow_version), parent=None,
            operators=None, created_at=float(job.ended_at or job.started_at)))
    return len(found)
