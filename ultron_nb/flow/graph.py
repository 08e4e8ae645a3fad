"""A flow: named nodes and the data and control edges between them, with its rules."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ultron_nb.errors import CycleError, DuplicateNodeError, FlowError, UnknownNodeError
from ultron_nb.flow.edges import ControlEdge, Trigger
from ultron_nb.flow.nodes import NAME, Kind, Node
from ultron_nb.flow.quality import Rule
from ultron_nb.flow.render import to_dot

FORMAT_VERSION = 1


@dataclass(frozen=True)
class DataEdge:
    source: str
    target: str


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


class Flow:
    """An ordered set of named nodes. Edges are derived from the nodes.

    A ``Flow`` is a value you can build and check without any I/O; the metadata store keeps
    its versions. Mutating methods return a new ``Flow``.
    """

    def __init__(self, name: str, nodes: Iterable[Node] = (), *, version: int | None = None,
                 rules: Iterable[Rule] = ()):
        if not NAME.match(name):
            raise FlowError(f"invalid flow name {name!r}: use letters, digits and _")
        self.name = name
        self.version = version
        self._nodes: dict[str, Node] = {}
        for node in nodes:
            if node.name in self._nodes:
                raise DuplicateNodeError(f"flow {name!r}: node {node.name!r} is defined twice")
            self._nodes[node.name] = node
        #: Data-quality rules, by node (part of the flow version, not of node identities).
        self.rules: dict[str, tuple[Rule, ...]] = {}
        for rule in rules:
            self.rules[rule.node] = (*self.rules.get(rule.node, ()), rule)

    # ------------------------------------------------------------------ access
    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __getitem__(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise UnknownNodeError(
                f"flow {self.name!r} has no node {name!r}{_suggest(name, self._nodes)}"
            ) from None

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Flow)
            and self.name == other.name
            and list(self._nodes.values()) == list(other._nodes.values())
            and self.rules == other.rules
        )

    def __repr__(self) -> str:
        version = f" v{self.version}" if self.version else ""
        return f"<Flow {self.name}{version}: {len(self)} nodes>"

    @property
    def names(self) -> list[str]:
        return list(self._nodes)

    def data_edges(self) -> list[DataEdge]:
        return [
            DataEdge(src, node.name) for node in self for src in node.data_inputs()
        ]

    def control_edges(self) -> list[ControlEdge]:
        return [edge for node in self for edge in node.triggers]

    def upstream(self, name: str) -> list[str]:
        """Nodes ``name`` reads (data edges)."""
        return self[name].data_inputs()

    def registrars(self, model: str) -> list[str]:
        """The nodes of this flow that register versions of ``model``."""
        return [n.name for n in self if model in n.models_registered]

    def model_inputs(self, name: str) -> list[str]:
        """Model edges into ``name``: the nodes that register a model whose versions or
        aliases trigger it (``--on-model``). ``name`` is downstream of them: a clone that
        changes one of them gets its own ``name`` (its own evaluate, validate, serve)."""
        node = self[name]
        found = [r for model in node.models_watched for r in self.registrars(model)
                 if r != name]
        return list(dict.fromkeys(found))

    def _parents(self, node: Node, stop_after: bool = False) -> list[str]:
        """What ``node`` comes after: its data inputs, ``--after`` sources (and, with
        ``stop_after``, ``--stop-after`` ones), model edges."""
        kinds = (Trigger.AFTER, Trigger.STOP_AFTER) if stop_after else (Trigger.AFTER,)
        after = [e.source for e in node.triggers if e.source and e.trigger in kinds]
        return list(dict.fromkeys([*node.data_inputs(), *after,
                                   *self.model_inputs(node.name)]))

    def downstream(self, name: str) -> list[str]:
        """Every node that depends on ``name`` through data or control edges, transitively."""
        children: dict[str, set[str]] = {n: set() for n in self._nodes}
        for node in self:
            for src in [*node.data_inputs(), *self.model_inputs(node.name)]:
                children.setdefault(src, set()).add(node.name)
            for edge in node.triggers:
                if edge.source:
                    children.setdefault(edge.source, set()).add(node.name)
        seen: list[str] = []
        stack = sorted(children.get(name, ()))
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.append(current)
            stack.extend(sorted(children.get(current, ())))
        return [n for n in self._nodes if n in seen]

    # ------------------------------------------------------------------ change
    def with_node(self, node: Node) -> Flow:
        """A new flow with ``node`` added, or replacing the node of the same name."""
        nodes = dict(self._nodes)
        nodes[node.name] = node
        return Flow(self.name, nodes.values(), rules=self.all_rules())

    def without(self, name: str) -> Flow:
        """A new flow without ``name``; refused while other nodes depend on it."""
        self[name]
        users = sorted(
            n.name for n in self
            if n.name != name
            and (name in n.data_inputs() or any(e.source == name for e in n.triggers))
        )
        if users:
            raise FlowError(
                f"cannot remove node {name!r}: {', '.join(repr(u) for u in users)} "
                "depend on it (remove or redefine them first)"
            )
        return Flow(self.name, (n for n in self if n.name != name),
                    rules=[r for r in self.all_rules() if r.node != name])

    def all_rules(self) -> list[Rule]:
        """Every data-quality rule, node by node."""
        return [r for rules in self.rules.values() for r in rules]

    def with_rules(self, node: str, rules: Iterable[Rule]) -> Flow:
        """A new flow whose rules of ``node`` are ``rules`` (none: the node's rules go)."""
        self[node]
        others = [r for r in self.all_rules() if r.node != node]
        return Flow(self.name, self, rules=[*others, *rules])

    def at_version(self, version: int) -> Flow:
        """This flow, as stored version ``version``."""
        return Flow(self.name, self, version=version, rules=self.all_rules())

    # ------------------------------------------------------------------ rules
    def validate(self) -> Flow:
        """Check every rule; raise a :class:`FlowError` naming the node at fault."""
        for node in self:
            node.check()
        for node in self:
            for ref in node.data_inputs():
                if ref not in self._nodes:
                    how = "--inputs" if ref in node.inputs else "its SQL"
                    raise UnknownNodeError(
                        f"node {node.name!r}: {how} reads {ref!r}, which is not a node of flow "
                        f"{self.name!r}{_suggest(ref, self._nodes)}"
                    )
                if ref == node.name:
                    raise CycleError(f"node {node.name!r} reads itself")
            for edge in node.triggers:
                if edge.source is not None and edge.source not in self._nodes:
                    raise UnknownNodeError(
                        f"node {node.name!r}: --{edge.trigger.replace('_', '-')} names "
                        f"{edge.source!r}, which is not a node{_suggest(edge.source, self._nodes)}"
                    )
        self._check_cycles()
        for node in self:
            self._check_boundedness(node)
        for name in self.rules:
            if name not in self._nodes:
                raise UnknownNodeError(f"rules of node {name!r}: flow {self.name!r} has no "
                                       f"such node{_suggest(name, self._nodes)}")
        return self

    def _check_boundedness(self, node: Node) -> None:
        if node.kind is Kind.RESOURCE or node.is_stream:
            return
        for edge in node.triggers:
            if edge.trigger is Trigger.AFTER and edge.source:
                source_is_stream = self._nodes[edge.source].is_stream
                if source_is_stream and not edge.schedule:
                    raise FlowError(
                        f"node {node.name!r}: --after {edge.source!r} is a stream→batch edge; "
                        "give --boundary (e.g. 1h) to run once per completed event-time window"
                    )
                if not source_is_stream and edge.schedule:
                    raise FlowError(
                        f"node {node.name!r}: --boundary applies only after a stream node, and "
                        f"{edge.source!r} is batch"
                    )
        if node.bounded:
            return
        windowed = {
            e.source for e in node.triggers if e.trigger is Trigger.AFTER and e.schedule
        }
        for ref in node.data_inputs():
            if self._nodes[ref].is_stream and ref not in windowed:
                raise FlowError(
                    f"node {node.name!r} ({node.label}) reads the unbounded stream {ref!r}; "
                    f"add --bounded, or trigger it with --after {ref} --boundary 1h"
                )

    def _check_cycles(self) -> None:
        graph: dict[str, list[str]] = {n: [] for n in self._nodes}
        for node in self:
            for src in self._parents(node):
                if src in graph:
                    graph[src].append(node.name)
        white, grey, black = 0, 1, 2
        color = dict.fromkeys(graph, white)
        for root in graph:
            if color[root] != white:
                continue
            stack: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
            path = [root]
            color[root] = grey
            while stack:
                current, children = stack[-1]
                child = next(children, None)
                if child is None:
                    color[current] = black
                    stack.pop()
                    path.pop()
                elif color[child] == grey:
                    cycle = [*path[path.index(child):], child]
                    raise CycleError(f"flow {self.name!r} has a cycle: {' → '.join(cycle)}")
                elif color[child] == white:
                    color[child] = grey
                    path.append(child)
                    stack.append((child, iter(graph[child])))

    def topological(self, *, stop_after: bool = False) -> list[str]:
        """Node names, every node after the nodes it reads, starts after, or whose models
        trigger it — and, with ``stop_after``, the nodes it stops after (the order in which
        defining the nodes one by one is valid)."""
        indegree = dict.fromkeys(self._nodes, 0)
        children: dict[str, list[str]] = {n: [] for n in self._nodes}
        for node in self:
            for src in self._parents(node, stop_after):
                if src in children:
                    children[src].append(node.name)
                    indegree[node.name] += 1
        ready = [n for n, d in indegree.items() if d == 0]
        order: list[str] = []
        while ready:
            current = ready.pop(0)
            order.append(current)
            for child in children[current]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(order) != len(self._nodes):
            self._check_cycles()
            raise FlowError(f"flow {self.name!r}: --stop-after edges close a cycle")
        return order

    # ------------------------------------------------------------------ params
    def effective_params(
        self, overrides: Mapping[str, str] | None = None, *, flag: str = "--param"
    ) -> dict[str, dict[str, str]]:
        """Each node's parameters after ``overrides``.

        An override key is ``NODE.PARAM`` (one node) or ``PARAM`` (every node that declares
        it). Naming a node or parameter that does not exist is an error naming ``flag``
        (the flag the overrides came from: ``--param`` of a run, ``--set`` of a clone).
        """
        result = {node.name: node.param_dict for node in self}
        for key, value in (overrides or {}).items():
            if "." in key:
                node_name, param = key.split(".", 1)
                params = result.get(node_name)
                if params is None:
                    raise UnknownNodeError(
                        f"{flag} {key}: flow {self.name!r} has no node {node_name!r}"
                        f"{_suggest(node_name, self._nodes)}"
                    )
                if param not in params:
                    known = ", ".join(sorted(params)) or "none"
                    raise FlowError(
                        f"{flag} {key}: node {node_name!r} has no parameter {param!r} "
                        f"(parameters: {known})"
                    )
                params[param] = str(value)
            else:
                hits = [n for n, p in result.items() if key in p]
                if not hits:
                    raise FlowError(f"{flag} {key}: no node of flow {self.name!r} declares it")
                for n in hits:
                    result[n][key] = str(value)
        return result

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "name": self.name,
            "nodes": [node.to_dict() for node in self],
        }
        if self.rules:  # (absent otherwise: flows stored before rules keep their spec)
            data["rules"] = [r.to_dict() for r in self.all_rules()]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, version: int | None = None) -> Flow:
        if data.get("format", 1) > FORMAT_VERSION:
            raise FlowError(
                f"flow {data.get('name')!r} was saved by a newer ultron_nb (format "
                f"{data.get('format')}); upgrade to read it"
            )
        return cls(data["name"], (Node.from_dict(n) for n in data["nodes"]), version=version,
                   rules=[Rule.from_dict(r) for r in data.get("rules", ())])

    # ------------------------------------------------------------------ display
    def to_dot(self, **kwargs: Any) -> str:
        return to_dot(self, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        dot = self.to_dot()
        bundle = {"text/plain": repr(self)}
        try:
            import graphviz

            bundle["image/svg+xml"] = graphviz.Source(dot).pipe(format="svg", encoding="utf-8")
        except Exception:  # dot missing: show the text form rather than fail the display
            bundle["text/plain"] = repr(self) + "\n" + dot
        return bundle
