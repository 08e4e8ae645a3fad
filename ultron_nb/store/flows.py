"""Flow versions in the metadata store. Every change of a flow is a new version; none is lost.

A version's spec holds its nodes with each body (SQL, Python, columns) replaced by the
sha256 of the body, which ``node_bodies`` stores once: a 10 MB cell costs 10 MB however many
versions (of however many flows) keep it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select

from ultron_nb.errors import NotFoundError, StoreError
from ultron_nb.flow import Flow
from ultron_nb.store.schema import flow_versions, flows, node_bodies

#: The key of a node's body reference in a stored spec.
BODY_REF = "body_sha256"


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


def store_bodies(conn: Connection, spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with each node's body replaced by its sha256; the bodies not stored yet are
    stored (inside the caller's write transaction, so concurrent writers cannot race)."""
    nodes = []
    found: dict[str, str] = {}
    for node in spec.get("nodes", []):
        node = dict(node)
        body = node.pop("body", "")
        if body:
            digest = hashlib.sha256(body.encode()).hexdigest()
            found[digest] = body
            node[BODY_REF] = digest
        nodes.append(node)
    if found:
        known = {r[0] for r in conn.execute(
            select(node_bodies.c.sha256).where(node_bodies.c.sha256.in_(list(found))))}
        now = time.time()
        for digest, body in found.items():
            if digest not in known:
                conn.execute(insert(node_bodies).values(
                    sha256=digest, body=body, size=len(body.encode()), created_at=now))
    return {**spec, "nodes": nodes}


def load_bodies(conn: Connection, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`store_bodies`: each node's body put back."""
    refs = {n[BODY_REF] for n in spec.get("nodes", []) if n.get(BODY_REF)}
    bodies = dict(conn.execute(select(node_bodies.c.sha256, node_bodies.c.body)
                               .where(node_bodies.c.sha256.in_(list(refs)))).all()) \
        if refs else {}
    nodes = []
    for node in spec.get("nodes", []):
        node = dict(node)
        ref = node.pop(BODY_REF, None)
        if ref is not None:
            if ref not in bodies:
                raise StoreError(f"flow {spec.get('name')!r}: the body of node "
                                 f"{node.get('name')!r} (sha256 {ref[:12]}) is missing from "
                                 "the store")
            node["body"] = bodies[ref]
        node.setdefault("body", "")
        nodes.append(node)
    return {**spec, "nodes": nodes}


def save_flow(conn: Connection, flow: Flow, change: str = "") -> int:
    """Store ``flow`` as its next version (unless it equals the latest); return the version."""
    spec = store_bodies(conn, flow.to_dict())
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
    return Flow.from_dict(load_bodies(conn, row.spec), version=int(row.version))


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
