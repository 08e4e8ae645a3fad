"""Compiled plans of stream jobs: stable operator ids, and what state a restore would drop.

A compiled plan (``compilePlanSql``) numbers its nodes from a counter of the JVM that
compiles it, and a job run from a plan gives each operator the uid ``<id>_<transformation>``
(Flink's ``table.exec.uid.generation: PLAN_ONLY``); a savepoint's state goes back to the
operators by those uids. Compiled twice in one job server, the same SQL gets other ids, and
none of its state would map back. :func:`stable_ids` renumbers a plan so that the ids depend
only on the plan: a node's id is made of its type and its rank among the nodes of that type
(in plan order). The same query gets the same uids wherever and however often it is
compiled, and a changed query keeps the uids of the operators it did not change in kind or
order (a filter added before an aggregation leaves the aggregation's uid alone).

:func:`operators` lists the operators whose state a savepoint holds (sources' read
positions, stateful operators, sinks' pending files) with their state's shape: the node
type, its named states and the row types it reads and writes. :func:`compare` says, for a
restore of a savepoint into a plan, which of them would be dropped (no operator with that
uid) or could not be read (same uid, other shape).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Node types whose operators keep no state of their own; every other one does (sources
#: their read positions, sinks their pending files, joins, windows, aggregates, ranks...),
#: although only some list it in the plan's ``state`` field.
_STATELESS = frozenset({
    "stream-exec-calc", "stream-exec-exchange", "stream-exec-watermark-assigner",
    "stream-exec-union", "stream-exec-correlate", "stream-exec-expand", "stream-exec-values",
    "stream-exec-drop-update-before", "stream-exec-mini-batch-assigner",
    "stream-exec-python-calc", "stream-exec-python-correlate", "stream-exec-lookup-join",
    "stream-exec-local-group-aggregate", "stream-exec-local-window-aggregate",
})
#: Ids of one type lie in one block of this size: its nodes' ranks.
_BLOCK = 1000
_BLOCKS = 1_000_000  # ids stay below 10^9 (Flink's are Java ints)


def _type_block(node_type: str, taken: set[int]) -> int:
    block = zlib.crc32(node_type.encode()) % _BLOCKS
    while block in taken:  # two types on one block: the next free one, in plan order
        block = (block + 1) % _BLOCKS
    taken.add(block)
    return block


def stable_ids(plan_json: str, *, sink_salt: str = "") -> str:
    """``plan_json`` with its node ids made of the node's type and rank (see the module).

    With ``sink_salt`` (the node instance the job writes for), the sinks' ids are made of it
    too: state restored into another instance (a clone branched from a savepoint) then
    leaves the sink's state — the part files it was writing in the other instance's
    folder — unclaimed, while every other operator takes its state back."""
    plan = json.loads(plan_json)
    blocks: dict[str, int] = {}
    taken: set[int] = set()
    ranks: dict[str, int] = {}
    renumber: dict[int, int] = {}
    for node in plan.get("nodes", []):
        kind = str(node["type"])
        if kind not in blocks:
            salted = f"{kind}@{sink_salt}" if sink_salt and is_sink(kind) else kind
            blocks[kind] = _type_block(salted, taken)
        ranks[kind] = ranks.get(kind, 0) + 1
        if ranks[kind] >= _BLOCK:
            raise ValueError(f"a plan with {_BLOCK} or more nodes of type {kind}")
        renumber[int(node["id"])] = blocks[kind] * _BLOCK + ranks[kind]
        node["id"] = renumber[int(node["id"])]
    for edge in plan.get("edges", []):
        edge["source"] = renumber[int(edge["source"])]
        edge["target"] = renumber[int(edge["target"])]
    return json.dumps(plan, separators=(",", ":"))


def is_sink(node_type: str) -> bool:
    """Whether a plan node of ``node_type`` is a sink (``stream-exec-sink_2``)."""
    return node_type.rsplit("_", 1)[0] == "stream-exec-sink"


def _row_type(value: Any) -> str:
    """A row type of a plan as one line (its JSON, keys sorted)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")) if value else ""


def _describe(row: Any) -> str:
    """``(a BIGINT, b STRING)`` for a plan's row type (a string type is kept as it is)."""
    if isinstance(row, str):
        return row
    if isinstance(row, Mapping) and isinstance(row.get("fields"), list):
        parts = []
        for f in row["fields"]:
            kind = f.get("fieldType")
            if isinstance(kind, Mapping):
                kind = kind.get("type", "?")
            parts.append(f"{f.get('name')} {kind}")
        return "(" + ", ".join(parts) + ")"
    return str(row)


@dataclass(frozen=True)
class Operator:
    """An operator whose state a savepoint holds, and that state's shape."""

    uid: int
    type: str
    description: str
    states: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()  # the row types it reads (JSON)
    output: str = ""  # the row type it writes (JSON)
    table: str = ""  # a source's or sink's table

    def to_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "type": self.type, "description": self.description,
                "states": list(self.states), "inputs": list(self.inputs),
                "output": self.output, "table": self.table}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Operator:
        return cls(int(data["uid"]), str(data["type"]), str(data.get("description", "")),
                   tuple(data.get("states", ())), tuple(data.get("inputs", ())),
                   str(data.get("output", "")), str(data.get("table", "")))

    @property
    def label(self) -> str:
        what = self.type.rsplit("_", 1)[0].removeprefix("stream-exec-")
        return f"{what} #{self.uid}" + (f" ({self.table})" if self.table else "")


def _table(node: Mapping[str, Any]) -> str:
    for key in ("scanTableSource", "dynamicTableSink"):
        table = (node.get(key) or {}).get("table") or {}
        ident = table.get("identifier")
        if ident:
            return str(ident).rsplit(".", 1)[-1].strip("`")
    return ""


def operators(plan_json: str) -> dict[int, Operator]:
    """The operators of a plan whose state a savepoint holds, by uid (node id)."""
    plan = json.loads(plan_json)
    nodes = {int(n["id"]): n for n in plan.get("nodes", [])}
    inputs: dict[int, list[str]] = {i: [] for i in nodes}
    for edge in plan.get("edges", []):
        source = nodes.get(int(edge["source"]))
        if source is not None and int(edge["target"]) in inputs:
            inputs[int(edge["target"])].append(_row_type(source.get("outputType")))
    out: dict[int, Operator] = {}
    for uid, node in nodes.items():
        kind = str(node["type"])
        states = tuple(f"{s.get('name')}#{s.get('index')}" for s in node.get("state") or ())
        if not states and kind.rsplit("_", 1)[0] in _STATELESS:
            continue
        out[uid] = Operator(uid, kind, str(node.get("description", ""))[:200], states,
                            tuple(inputs[uid]), _row_type(node.get("outputType")),
                            _table(node))
    return out


@dataclass
class StateCheck:
    """What restoring a savepoint into a plan does with each operator's state."""

    kept: list[Operator] = field(default_factory=list)
    dropped: list[Operator] = field(default_factory=list)  # no operator with its uid
    changed: list[tuple[Operator, Operator, str]] = field(default_factory=list)  # old, new, why

    @property
    def ok(self) -> bool:
        return not self.dropped and not self.changed

    def lines(self) -> list[str]:
        out = [f"{op.label}: its state would be dropped (the new plan has no such operator)"
               for op in self.dropped]
        out += [f"{old.label}: its state cannot be read by the new plan ({why})"
                for old, _new, why in self.changed]
        return out

    def summary(self) -> str:
        return "; ".join(self.lines()) or f"all {len(self.kept)} stateful operators kept"


def _difference(old: Operator, new: Operator) -> str | None:
    if old.type != new.type:
        return f"{old.type} became {new.type}"
    if old.type.startswith("stream-exec-table-source-scan") and old.table != new.table:
        return f"it read {old.table or '?'}, the new plan reads {new.table or '?'} there"
    if old.states != new.states:
        return f"states {', '.join(old.states)} became {', '.join(new.states) or 'none'}"
    if old.inputs != new.inputs:
        was = "; ".join(_describe(json.loads(i)) if i else "?" for i in old.inputs)
        now = "; ".join(_describe(json.loads(i)) if i else "?" for i in new.inputs)
        return f"its input {was} became {now}"
    if old.states and old.output != new.output:  # an aggregate's accumulators follow its output
        return (f"its output {_describe(json.loads(old.output) if old.output else '?')} became "
                f"{_describe(json.loads(new.output) if new.output else '?')}")
    return None


def compare(old: Mapping[int, Operator], new: Mapping[int, Operator]) -> StateCheck:
    """What a restore of state taken with ``old`` operators does in a plan with ``new``.

    A source must read the same table (its positions are of that table); a sink's table
    may differ (a restore into another output). Any other difference of an operator's
    kind, states or row types means Flink cannot read that state back."""
    check = StateCheck()
    for uid, op in sorted(old.items()):
        other = new.get(uid)
        if other is None:
            check.dropped.append(op)
            continue
        why = _difference(op, other)
        if why is None:
            check.kept.append(op)
        else:
            check.changed.append((op, other, why))
    return check


def to_json(ops: Mapping[int, Operator]) -> list[dict[str, Any]]:
    return [op.to_dict() for _, op in sorted(ops.items())]


def from_json(data: Any) -> dict[int, Operator]:
    return {int(d["uid"]): Operator.from_dict(d) for d in data or ()}
