"""Launch plans: which node instances an experiment shares, reuses, restarts or creates.

Pure: the caller passes the instances that exist on the target (from the metadata store);
the plan says what to do. Sharing rests on content identity: an instance whose identity
equals the node's (same definition, parameters and upstream) computes the same output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ultron_nb.flow.graph import Flow
from ultron_nb.flow.identity import identities

#: States of an instance that can be shared as it is ("ready": a resource's data).
RUNNING_STATES = frozenset({"created", "initializing", "scheduled", "running", "restarting",
                            "ready"})


class Step(StrEnum):
    SHARE = "share"  # a running instance with the same identity: reuse it, launch nothing
    RESTART = "restart"  # an instance with the same identity exists but is not running
    NEW = "new"  # no instance has this identity: launch one


@dataclass(frozen=True)
class ExistingInstance:
    id: str
    identity: str
    state: str
    experiments: tuple[str, ...] = ()  # running experiments that use it


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


def instance_id(node: str, identity: str) -> str:
    """The name of a node instance: its outputs (topics, tables) are named after it."""
    return f"{node}_{identity[:12]}"


def plan_launch(
    flow: Flow,
    overrides: Mapping[str, str] | None,
    existing: Mapping[str, ExistingInstance],
    *,
    base_params: Mapping[str, Mapping[str, str]] | None = None,
    base_identities: Mapping[str, str] | None = None,
) -> Plan:
    """Plan launching ``flow`` with parameter ``overrides``.

    ``existing`` maps identities to the instances on the target. ``base_params`` and
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
            step, shared = Step.SHARE, found.experiments
        elif found is not None:
            step, shared = Step.RESTART, found.experiments
        else:
            step, shared = Step.NEW, ()
        plan.nodes.append(PlannedNode(name, identity, found.id if found else
                                      instance_id(name, identity), step, shared, changed, reason))
    return plan


def _overridden(overrides: Mapping[str, str] | None, node: str, param: str) -> bool:
    return bool(overrides) and (f"{node}.{param}" in overrides or param in overrides)


def _upstream_changed(
    flow: Flow, name: str, ids: Mapping[str, str], base: Mapping[str, str]
) -> bool:
    return any(base.get(up) != ids[up] for up in flow[name].data_inputs())
