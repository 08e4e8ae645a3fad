"""Build nodes from the words people type: kind names, ``k=v`` pairs, trigger flags."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ultron_nb.errors import FlowError
from ultron_nb.flow.edges import Action, ControlEdge, Trigger
from ultron_nb.flow.nodes import (
    Kind,
    Mode,
    Node,
    ResourceType,
    parse_columns,
    python_function_names,
)

KIND_NAMES = ("flink", "duckdb", "python", "topic", "kafka", "dataset", "feature_table")


def parse_pairs(pairs: Iterable[str], *, flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}``; a malformed pair names the flag."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise FlowError(f"{flag} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def define_node(
    name: str,
    body: str = "",
    *,
    kind: str | None = None,
    mode: str | None = None,
    inputs: Sequence[str] = (),
    params: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    time: str | None = None,
    watermark: str | None = None,
    key: str | None = None,
    partitions: int | None = None,
    path: str | None = None,
    fmt: str | None = None,
    fn: str | None = None,
    bounded: bool = False,
    after: Sequence[str] = (),
    stop_after: Sequence[str] = (),
    boundary: str | None = None,
    every: str | None = None,
    on_event: str | None = None,
    on_model: str | None = None,
    alias: str | None = None,
    when: str | None = None,
    action: str = "start",
    on_failure: bool = False,
    description: str = "",
) -> Node:
    """Build and check one node. ``kind`` is one of :data:`KIND_NAMES` (default ``flink``).

    ``on_model NAME`` (with ``alias``) is ``on_event model/NAME/version`` (or
    ``model/NAME/alias/ALIAS``): a new version of registered model NAME, or a move of its
    alias, as the scheduler's registry watcher announces them."""
    kind = (kind or "flink").lower().replace("-", "_")
    if kind not in KIND_NAMES:
        raise FlowError(f"node {name!r}: unknown --kind {kind!r} (one of {', '.join(KIND_NAMES)})")
    try:
        act = Action(action)
    except ValueError:
        raise FlowError(f"node {name!r}: unknown --action {action!r} (start, restart, stop)") \
            from None
    opts = {str(k): str(v) for k, v in (options or {}).items()}
    for key_, value in (("partitions", partitions), ("path", path), ("format", fmt)):
        if value is not None:
            opts[key_] = str(value)
    fields: dict[str, Any] = {
        "name": name,
        "body": body.strip("\n"),
        "inputs": tuple(dict.fromkeys(inputs)),
        "params": tuple(sorted((str(k), str(v)) for k, v in (params or {}).items())),
        "options": tuple(sorted(opts.items())),
        "time_column": time,
        "watermark": watermark,
        "key": key,
        "bounded": bounded,
        "triggers": _triggers(name, act, after=after, stop_after=stop_after,
                              boundary=boundary, every=every, on_event=on_event, when=when,
                              on_failure=on_failure, on_model=on_model, alias=alias),
        "description": description,
    }
    fields.update(_kind_fields(name, kind, mode, body, fn))
    node = Node(**fields)
    node.check()
    return node


def _triggers(name: str, act: Action, *, after: Sequence[str], stop_after: Sequence[str],
              boundary: str | None, every: str | None, on_event: str | None,
              when: str | None, on_failure: bool, on_model: str | None = None,
              alias: str | None = None) -> tuple[ControlEdge, ...]:
    """The control edges of a node's flags."""
    triggers: list[ControlEdge] = []
    for src in after:
        triggers.append(ControlEdge(name, Trigger.AFTER, src, act, schedule=boundary,
                                    on_failure=on_failure))
    for src in stop_after:
        triggers.append(ControlEdge(name, Trigger.STOP_AFTER, src, Action.STOP))
    if boundary and not after:
        raise FlowError(f"node {name!r}: --boundary needs --after STREAM_NODE")
    if every:
        triggers.append(ControlEdge(name, Trigger.PERIODIC, None, act, schedule=every))
    if alias and not on_model:
        raise FlowError(f"node {name!r}: --alias needs --on-model NAME")
    if on_model:
        if on_event:
            raise FlowError(f"node {name!r}: give --on-model or --on-event, not both")
        on_event = _model_key(name, on_model, alias)
    if on_event:
        triggers.append(ControlEdge(name, Trigger.EVENT, None, act, event_key=on_event,
                                    condition=when or None))
    elif when:
        raise FlowError(f"node {name!r}: --when needs --on-event KEY or --on-model NAME")
    return tuple(triggers)


def _kind_fields(name: str, kind: str, mode: str | None, body: str, fn: str | None
                 ) -> dict[str, Any]:
    """The fields that depend on the node's kind (and the checks of its kind's flags)."""
    fields: dict[str, Any] = {}
    if kind in ("topic", "kafka", "dataset", "feature_table"):
        if mode:
            raise FlowError(f"node {name!r}: --mode does not apply to a {kind} resource")
        fields.update(kind=Kind.RESOURCE, resource_type=ResourceType(kind),
                      columns=parse_columns(body, node=name), body="")
    elif kind == "flink":
        try:
            fields.update(kind=Kind.FLINK, mode=Mode(mode or "stream"))
        except ValueError:
            raise FlowError(f"node {name!r}: unknown --mode {mode!r} (stream or batch)") from None
    else:
        if mode not in (None, "batch"):
            raise FlowError(f"node {name!r}: a {kind} node runs in batch mode only")
        fields.update(kind=Kind(kind), mode=Mode.BATCH)
        if kind == "python":
            if fn is None:
                funcs = python_function_names(body)
                if name in funcs:
                    fn = name
                elif len(funcs) == 1:
                    fn = funcs[0]
            fields["function"] = fn
    if fn is not None and kind != "python":
        raise FlowError(f"node {name!r}: --fn applies to python nodes only")
    return fields


def _model_key(node: str, model: str, alias: str | None) -> str:
    """The event key of ``--on-model MODEL [--alias ALIAS]``."""
    import re

    # The keys of ultron_nb.events.model_keys (version_key, alias_key); the flow layer
    # imports nothing above it, so they are spelled here too (a test checks both agree).
    if not model.strip() or "/" in model or ":" in model:
        raise FlowError(f"node {node!r}: --on-model {model!r}: a registered model name "
                        "(no '/' or ':')")
    if alias is None:
        return f"model/{model}/version"
    if not re.fullmatch(r"[\w\-]+", alias):
        raise FlowError(f"node {node!r}: --alias {alias!r}: letters, digits, _ and - only")
    return f"model/{model}/alias/{alias}"
