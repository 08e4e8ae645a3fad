"""Launch plans: which node instances an experiment shares and which it creates.

Pure: the caller passes the instances that exist on the target cluster (from the metadata
store); the plan says what to do. Sharing rests on content identity: a *running* instance
whose identity equals the node's (same definition, parameters and upstream) computes the same
output, on the same cluster. Anything else gets a NEW instance — a new id, a new, empty
output — so a relaunch never reads an earlier instance's output as backlog and two clusters
never share an instance, an output or a job. (Resuming a stopped experiment restores its
own instances; that is the lifecycle's business, not a plan's.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

from ultron_nb.flow.graph import Flow
from ultron_nb.flow.identity import identities

#: States of an instance that can be shared as it is ("ready": a resource's data).
RUNNING_STATES = frozenset({"created", "initializing", "scheduled", "running", "restarting",
                            "submitting", "ready"})


class Step(StrEnum):
    SHARE = "share"  # a running instance with the same identity: reuse it, launch nothing
    NEW = "new"  # launch a new instance, with an output of its own


@dataclass(frozen=True)
class ExistingInstance:
    """The instances of one identity on the target: the one to share (if running), how many
    there were (the next one's generation), who holds the shared one."""

    id: str
    identity: str
    state: str
    experiments: tuple[str, ...] = ()  # experiments that hold it
    count: int = 1  # instances of this identity on the target so far


@dataclass(frozen=True)
class PlannedNode:
    node: str
    identity: str
    instance_id: str
    step: Step
    shared_with: tuple[str, ...] = ()
    changed_params: tuple[tuple[str, str | None, str | None], ...] = ()  # (param, old, new)
    reason: str = ""


@dataclass
class Plan:
    flow: str
    flow_version: int | None
    params: dict[str, dict[str, str]]
    nodes: list[PlannedNode] = field(default_factory=list)

    def by_step(self, step: Step) -> list[str]:
        return [p.node for p in self.nodes if p.step is step]

    def __getitem__(self, node: str) -> PlannedNode:
        return next(p for p in self.nodes if p.node == node)


def target_key(url: str) -> str:
    """A short, stable name of a cluster (credentials and trailing slashes ignored)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    where = f"{parts.scheme}://{(parts.hostname or '').lower()}:{parts.port or ''}" \
            f"{parts.path.rstrip('/')}"
    return hashlib.sha1(where.encode()).hexdigest()[:6]


def instance_id(node: str, identity: str, target: str = "", generation: int = 1) -> str:
    """The name of a node instance, unique per identity, cluster and generation: its
    output directory is named after it."""
    base = f"{node}_{identity[:10]}"
    if target:
        base += f"_{target_key(target)}"
    return base + (f"_{generation}" if generation > 1 else "")


def plan_launch(
    flow: Flow,
    overrides: Mapping[str, str] | None,
    existing: Mapping[str, ExistingInstance],
    *,
    target: str = "",
    base_params: Mapping[str, Mapping[str, str]] | None = None,
    base_identities: Mapping[str, str] | None = None,
) -> Plan:
    """Plan launching ``flow`` with parameter ``overrides``.

    ``existing`` maps identities to the instances on ``target``. ``base_params`` and
    ``base_identities`` describe the experiment being cloned (for the reasons shown).
    """
    params = flow.effective_params(overrides)
    if base_params:
        # A clone starts from its parent's parameters, then applies its own overrides.
        merged = {n: dict(p) for n, p in params.items()}
        for node, values in base_params.items():
            if node in merged:
                for k, v in values.items():
                    if k in merged[node] and not _overridden(overrides, node, k):
                        merged[node][k] = v
        params = merged
    ids = identities(flow, params)
    plan = Plan(flow.name, flow.version, params)
    for name in flow.topological():
        identity = ids[name]
        found = existing.get(identity)
        old_params = (base_params or {}).get(name, {})
        changed = tuple(
            (k, old_params.get(k), params[name].get(k))
            for k in sorted(set(old_params) | set(params[name]))
            if old_params.get(k) != params[name].get(k)
        ) if base_params is not None else ()
        reason = ""
        if base_identities is not None:
            if name not in base_identities:
                reason = "new node"
            elif base_identities[name] != identity:
                if changed:
                    reason = "parameters changed"
                elif _upstream_changed(flow, name, ids, base_identities):
                    reason = "upstream changed"
                else:
                    reason = "definition changed"
        if found is not None and found.state.lower() in RUNNING_STATES:
            plan.nodes.append(PlannedNode(name, identity, found.id, Step.SHARE,
                                          found.experiments, changed, reason))
            continue
        if found is not None and not reason:
            reason = f"relaunch ({found.id} is {found.state.lower()})"
        generation = (found.count + 1) if found is not None else 1
        plan.nodes.append(PlannedNode(name, identity, instance_id(name, identity, target,
                                                                  generation),
                                      Step.NEW, (), changed, reason))
    return plan


def _overridden(overrides: Mapping[str, str] | None, node: str, param: str) -> bool:
    return bool(overrides) and (f"{node}.{param}" in overrides or param in overrides)


def _upstream_changed(
    flow: Flow, name: str, ids: Mapping[str, str], base: Mapping[str, str]
) -> bool:
    return any(base.get(up) != ids[up] for up in flow[name].data_inputs())
