"""Backtracking replay: run a node's *real-time* definition over prepared history.

:func:`ultron_nb.services.backtrack.prepare` turns HDFS-style history into a local topic of
ordered logical partitions. :func:`replay` launches the node (and the Flink nodes it reads)
with the chosen resources pointed at those topics, as a bounded experiment on the same
cluster: the same SQL, compiled by the same code as the live experiment. No second
implementation of the logic exists to drift.

The replay's flow is stored as ``<flow>__backtrack``; its instances have identities of their
own (the input paths differ), so a replay never shares or disturbs live instances, and each
replayed window writes its own, versioned output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultron_nb import experiments
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.errors import ConfigError, FlowError, UltronError
from ultron_nb.experiments import ExperimentStatus
from ultron_nb.flow import Flow, Kind, ResourceType
from ultron_nb.services.backtrack import read_manifest

if TYPE_CHECKING:
    from ultron_nb.workspace import Workspace


def _closure(flow: Flow, node: str) -> list[str]:
    wanted: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current in wanted:
            continue
        wanted.add(current)
        stack.extend(flow[current].data_inputs())
    return [n for n in flow.topological() if n in wanted]


def replay_flow(flow: Flow, node: str, inputs: Mapping[str, str | Path]) -> Flow:
    """The flow a replay launches: ``node`` and what it reads, with each resource named in
    ``inputs`` read from its prepared topic."""

    if flow[node].kind is not Kind.FLINK:
        raise FlowError(f"backtrack run: node {node!r} is {flow[node].label}; only Flink SQL "
                        "nodes replay")
    names = _closure(flow, node)
    for resource in inputs:
        if resource not in names:
            raise FlowError(f"backtrack run --input {resource}: node {node!r} does not read "
                            f"{resource!r} (it reads {', '.join(names[:-1])})")
    nodes = []
    for name in names:
        n = flow[name]
        if name in inputs:
            if n.resource_type is not ResourceType.TOPIC:
                raise FlowError(f"backtrack run --input {name}: {name!r} is a "
                                f"{n.resource_type} resource; a prepared topic replaces a topic")
            topic = LocalTopic.open(inputs[name])
            have = {c for c, _ in topic.columns}
            missing = [c.name for c in n.columns if c.name not in have]
            if missing:
                raise FlowError(f"backtrack run --input {name}={inputs[name]}: the prepared "
                                f"topic lacks column(s) {', '.join(missing)}")
            options = dict(n.options)
            options.update(path=str(Path(inputs[name]).resolve()),
                           partitions=str(topic.partitions))
            n = replace(n, options=tuple(sorted(options.items())))
        nodes.append(n)
    return Flow(f"{flow.name}__backtrack"[:63], nodes).validate()


def replay(ws: Workspace, flow_name: str, node: str, *,
           inputs: Mapping[str, str | Path], start: Any = None, end: Any = None,
           name: str | None = None, timeout: float = 600.0) -> ExperimentStatus:
    """Replay prepared history through ``node`` of ``flow_name``; returns when it finished.

    ``inputs`` maps topic resources to prepared topic directories. ``start``/``end``, when
    given, must lie within what the prepared topics cover (the window is chosen when the
    history is prepared).
    """
    if not inputs:
        raise ConfigError("backtrack run needs --input RESOURCE=PREPARED_TOPIC_DIR")
    for resource, path in inputs.items():
        try:
            manifest = read_manifest(path)
        except (OSError, UltronError):
            raise ConfigError(f"backtrack run --input {resource}={path}: not a prepared "
                              "topic (run backtrack prepare first)") from None
        if start is not None and str(start) < manifest.start[: len(str(start))]:
            raise ConfigError(f"backtrack run --from {start}: {path} starts at "
                              f"{manifest.start}")
        if end is not None and str(end) > manifest.end[: len(str(end))]:
            raise ConfigError(f"backtrack run --to {end}: {path} ends at {manifest.end}")
    flow = replay_flow(ws.flow(flow_name), node, inputs)
    saved = ws.save(flow, change=f"backtrack {node}")
    status = experiments.launch(ws, saved.name, name=name, bounded=True)
    with FlinkRest(status.target, headers=ws.settings.flink_headers,
                   verify=ws.settings.flink_verify) as rest:
        for ns in status.nodes:
            if ns.job_id and not ns.shared_from:
                rest.await_state(ns.job_id, {"finished", "failed", "canceled"}, timeout)
    return experiments.status(ws, status.name)
