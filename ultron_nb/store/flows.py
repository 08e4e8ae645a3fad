"""Flow versions in the metadata store. Every change of a flow is a new version; none is lost."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select

from ultron_nb.errors import NotFoundError
from ultron_nb.flow import Flow
from ultron_nb.store.schema import flow_versions, flows


@dataclass(frozen=True)
class FlowSummary:
    name: str
    version: int
    nodes: int
    change: str
    updated_at: float


def _flow_id(conn: Connection, name: str, *, create: bool) -> int | None:
    row = conn.execute(select(flows.c.id).where(flows.c.name == name)).first()
    if row:
        return int(row[0])
    if not create:
        return None
    result = conn.execute(insert(flows).values(name=name, created_at=time.time()))
    return int(result.inserted_primary_key[0])


def save_flow(conn: Connection, flow: Flow, change: str = "") -> int:
    """Store ``flow`` as its next version (unless it equals the latest); return the version."""
    spec = flow.to_dict()
    flow_id = _flow_id(conn, flow.name, create=True)
    latest = conn.execute(
        select(flow_versions.c.version, flow_versions.c.spec)
        .where(flow_versions.c.flow_id == flow_id)
        .order_by(flow_versions.c.version.desc())
        .limit(1)
    ).first()
    if latest is not None and latest.spec == spec:
        return int(latest.version)
    version = (int(latest.version) if latest else 0) + 1
    conn.execute(
        insert(flow_versions).values(
            flow_id=flow_id, version=version, spec=spec, change=change, created_at=time.time()
        )
    )
    return version


def load_flow(conn: Connection, name: str, version: int | None = None) -> Flow:
    """The latest (or the given) version of flow ``name``."""
    flow_id = _flow_id(conn, name, create=False)
    if flow_id is None:
        known = [r[0] for r in conn.execute(select(flows.c.name).order_by(flows.c.name))]
        hint = f" (flows: {', '.join(known)})" if known else " (no flows yet)"
        raise NotFoundError(f"no flow named {name!r}{hint}")
    query = select(flow_versions.c.version, flow_versions.c.spec).where(
        flow_versions.c.flow_id == flow_id
    )
    if version is None:
        query = query.order_by(flow_versions.c.version.desc()).limit(1)
    else:
        query = query.where(flow_versions.c.version == version)
    row = conn.execute(query).first()
    if row is None:
        if version is None:
            return Flow(name, version=0)
        raise NotFoundError(f"flow {name!r} has no version {version}")
    return Flow.from_dict(row.spec, version=int(row.version))


def list_flows(conn: Connection) -> list[FlowSummary]:
    latest = (
        select(flow_versions.c.flow_id, func.max(flow_versions.c.version).label("v"))
        .group_by(flow_versions.c.flow_id)
        .subquery()
    )
    rows = conn.execute(
        select(flows.c.name, flow_versions.c.version, flow_versions.c.spec,
               flow_versions.c.change, flow_versions.c.created_at)
        .join(latest, latest.c.flow_id == flows.c.id)
        .join(flow_versions, (flow_versions.c.flow_id == flows.c.id)
              & (flow_versions.c.version == latest.c.v))
        .order_by(flows.c.name)
    )
    return [
        FlowSummary(r.name, int(r.version), len(r.spec["nodes"]), r.change, float(r.created_at))
        for r in rows
    ]


def flow_history(conn: Connection, name: str) -> list[dict[str, Any]]:
    flow_id = _flow_id(conn, name, create=False)
    if flow_id is None:
        raise NotFoundError(f"no flow named {name!r}")
    rows = conn.execute(
        select(flow_versions.c.version, flow_versions.c.change, flow_versions.c.created_at,
               flow_versions.c.spec)
        .where(flow_versions.c.flow_id == flow_id)
        .order_by(flow_versions.c.version)
    )
    return [
        {"version": int(r.version), "change": r.change, "created_at": float(r.created_at),
         "nodes": len(r.spec["nodes"])}
        for r in rows
    ]
