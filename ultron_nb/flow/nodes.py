"""Nodes of a flow: resources, Flink SQL jobs, DuckDB queries and Python steps.

Nodes are immutable values. Redefining a node replaces the value in its :class:`Flow`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

from ultron_nb.errors import FlowError
from ultron_nb.flow.edges import ControlEdge
from ultron_nb.flow.sqltext import placeholders, table_references

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Kind(StrEnum):
    RESOURCE = "resource"
    FLINK = "flink"
    DUCKDB = "duckdb"
    PYTHON = "python"


class Mode(StrEnum):
    STREAM = "stream"
    BATCH = "batch"


class ResourceType(StrEnum):
    TOPIC = "topic"  # a local topic: ordered partitions of JSON lines (Kafka stand-in)
    KAFKA = "kafka"  # a Kafka topic
    DATASET = "dataset"  # bounded files (json, csv, parquet)
    FEATURE_TABLE = "feature_table"  # versioned features keyed by entity


_STREAM_RESOURCES = (ResourceType.TOPIC, ResourceType.KAFKA)


@dataclass(frozen=True)
class Column:
    name: str
    type: str


_COLUMN = re.compile(r"^\s*(`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)\s+(.+?)\s*$", re.DOTALL)


def parse_columns(text: str, *, node: str) -> tuple[Column, ...]:
    """Parse ``name TYPE, name TYPE`` (one per line or comma-separated)."""
    cols: list[Column] = []
    depth = 0
    current = ""
    pieces: list[str] = []
    for ch in text:
        if ch in "(<":
            depth += 1
        elif ch in ")>":
            depth -= 1
        if (ch == "," or ch == "\n") and depth == 0:
            pieces.append(current)
            current = ""
        else:
            current += ch
    pieces.append(current)
    for piece in pieces:
        piece = piece.split("--", 1)[0].strip()
        if not piece:
            continue
        m = _COLUMN.match(piece)
        if not m:
            raise FlowError(f"node {node!r}: cannot read column definition {piece!r} "
                            "(expected 'name TYPE')")
        cols.append(Column(m.group(1).strip("`"), " ".join(m.group(2).split()).upper()))
    names = [c.name for c in cols]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FlowError(f"node {node!r}: column {dupes[0]!r} is defined twice")
    return tuple(cols)


@dataclass(frozen=True)
class Node:
    """One node of a flow.

    ``body`` is SQL (flink, duckdb), Python source (python) or a column list (resource).
    ``options`` hold connector settings for resources (path, partitions, format, Kafka
    properties) and engine settings for jobs (parallelism). ``params`` are user parameters,
    substituted into the body as ``${name}`` and overridable per experiment.
    """

    name: str
    kind: Kind
    body: str = ""
    mode: Mode | None = None
    inputs: tuple[str, ...] = ()  # explicit data inputs (in addition to SQL references)
    params: tuple[tuple[str, str], ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    resource_type: ResourceType | None = None
    columns: tuple[Column, ...] = ()
    time_column: str | None = None
    watermark: str | None = None  # delay, e.g. "5 s"
    key: str | None = None  # entity key (feature tables, partitioning)
    function: str | None = None  # python: the callable to run
    bounded: bool = False  # a batch node that reads a bounded slice of a stream
    triggers: tuple[ControlEdge, ...] = ()  # control edges acting on this node
    description: str = ""
    registers: tuple[str, ...] = ()  # registered models it declares it trains (--registers)

    # ----------------------------------------------------------------- derived
    @property
    def param_dict(self) -> dict[str, str]:
        return dict(self.params)

    @property
    def option_dict(self) -> dict[str, str]:
        return dict(self.options)

    @property
    def is_stream(self) -> bool:
        """Does this node's output never end?"""
        if self.kind is Kind.RESOURCE:
            return self.resource_type in _STREAM_RESOURCES
        return self.mode is Mode.STREAM

    @property
    def label(self) -> str:
        if self.kind is Kind.RESOURCE:
            return str(self.resource_type)
        if self.kind is Kind.FLINK:
            return f"flink {self.mode}"
        return str(self.kind)

    def sql_references(self) -> list[str]:
        if self.kind in (Kind.FLINK, Kind.DUCKDB):
            return table_references(self.body)
        return []

    def data_inputs(self) -> list[str]:
        """Every node this one reads: SQL references then explicit inputs, no repeats."""
        return list(self._inputs)

    @cached_property
    def _inputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.sql_references(), *self.inputs]))

    @cached_property
    def models_registered(self) -> tuple[str, ...]:
        """The registered models this node trains: declared with ``--registers NAME``, and
        found in a Python body as a call ``log_model(..., name="NAME")`` or
        ``train_online(..., name="NAME")`` with a literal name."""
        found = list(self.registers)
        if self.kind is Kind.PYTHON:
            found += registered_in(self.body)
        return tuple(dict.fromkeys(found))

    @property
    def models_watched(self) -> tuple[str, ...]:
        """The registered models whose versions or aliases trigger this node
        (``--on-model NAME``)."""
        names = [model_of_key(e.event_key) for e in self.triggers if e.event_key]
        return tuple(dict.fromkeys(n for n in names if n))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = str(self.kind)
        data["mode"] = str(self.mode) if self.mode else None
        data["resource_type"] = str(self.resource_type) if self.resource_type else None
        data["inputs"] = list(self.inputs)
        data["params"] = [list(p) for p in self.params]
        data["options"] = [list(o) for o in self.options]
        data["columns"] = [[c.name, c.type] for c in self.columns]
        data["triggers"] = [t.to_dict() for t in self.triggers]
        data["registers"] = list(self.registers)
        if not self.registers:  # as flows stored before the field existed: same spec
            del data["registers"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        return cls(
            name=data["name"],
            kind=Kind(data["kind"]),
            body=data.get("body", ""),
            mode=Mode(data["mode"]) if data.get("mode") else None,
            inputs=tuple(data.get("inputs", ())),
            params=tuple((str(k), str(v)) for k, v in data.get("params", ())),
            options=tuple((str(k), str(v)) for k, v in data.get("options", ())),
            resource_type=ResourceType(data["resource_type"])
            if data.get("resource_type")
            else None,
            columns=tuple(Column(n, t) for n, t in data.get("columns", ())),
            time_column=data.get("time_column"),
            watermark=data.get("watermark"),
            key=data.get("key"),
            function=data.get("function"),
            bounded=bool(data.get("bounded", False)),
            triggers=tuple(ControlEdge.from_dict(t) for t in data.get("triggers", ())),
            description=data.get("description", ""),
            registers=tuple(str(m) for m in data.get("registers", ())),
        )

    # ----------------------------------------------------------------- checks
    def check(self) -> None:
        """Rules that concern this node alone; raise :class:`FlowError` naming it."""
        where = f"node {self.name!r}"
        if not NAME.match(self.name):
            raise FlowError(
                f"invalid node name {self.name!r}: use letters, digits and _ "
                "(not starting with a digit, at most 63 characters)"
            )
        if self.kind is Kind.RESOURCE:
            if self.resource_type is None:
                raise FlowError(f"{where}: a resource needs a type (topic, kafka, dataset, "
                                "feature_table)")
            if not self.columns:
                raise FlowError(f"{where}: a resource needs columns (name TYPE, ...) in the "
                                "cell body")
            names = {c.name for c in self.columns}
            if self.time_column and self.time_column not in names:
                raise FlowError(f"{where}: --time {self.time_column!r} is not a column "
                                f"(columns: {', '.join(sorted(names))})")
            if self.key and self.key not in names:
                raise FlowError(f"{where}: --key {self.key!r} is not a column")
            if self.watermark and not self.time_column:
                raise FlowError(f"{where}: --watermark needs --time (the event-time column)")
            if self.resource_type is ResourceType.FEATURE_TABLE and not (
                self.key and self.time_column
            ):
                raise FlowError(f"{where}: a feature table needs --key and --time "
                                "(entity and version time)")
            if self.resource_type is ResourceType.KAFKA:
                opts = self.option_dict
                for needed in ("topic", "bootstrap.servers"):
                    if needed not in opts:
                        raise FlowError(f"{where}: a kafka resource needs --option {needed}=...")
            if self.resource_type is ResourceType.TOPIC:
                parts = self.option_dict.get("partitions", "1")
                if not parts.isdigit() or int(parts) < 1:
                    raise FlowError(f"{where}: --partitions must be a positive integer")
        elif self.kind in (Kind.FLINK, Kind.DUCKDB):
            if not self.body.strip():
                raise FlowError(f"{where}: the cell body must hold the node's SQL query")
            if self.kind is Kind.FLINK and self.mode is None:
                raise FlowError(f"{where}: a flink node needs --mode stream or --mode batch")
        elif self.kind is Kind.PYTHON:
            self._check_python(where)
        if self.watermark and not _WATERMARK.match(self.watermark):
            raise FlowError(f"{where}: invalid --watermark {self.watermark!r} "
                            "(expected e.g. '5 s', '500 ms', '2 min')")
        for edge in self.triggers:
            if edge.target != self.name:
                raise FlowError(f"{where}: a control edge targets {edge.target!r}")
            edge.check()
        if self.kind is Kind.RESOURCE and (self.inputs or self.triggers or self.registers):
            raise FlowError(f"{where}: a resource has no inputs, triggers or models")
        for model in self.registers:
            if not model.strip() or "/" in model or ":" in model:
                raise FlowError(f"{where}: --registers {model!r}: a registered model name "
                                "(no '/' or ':')")
        known = set(self.param_dict)
        for name in placeholders(self.body):
            if name not in known:
                raise FlowError(f"{where}: the body uses ${{{name}}} but no --param {name}=... "
                                "is given")

    def _check_python(self, where: str) -> None:
        if not self.body.strip():
            raise FlowError(f"{where}: a python node needs a function definition in the cell")
        try:
            tree = ast.parse(self.body)
        except SyntaxError as exc:
            raise FlowError(f"{where}: Python syntax error on line {exc.lineno}: {exc.msg}") \
                from None
        funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        if self.function is None:
            raise FlowError(f"{where}: a python node needs a callable: define one function or "
                            "name it with --fn")
        if self.function not in funcs:
            found = ", ".join(funcs) if funcs else "none"
            raise FlowError(f"{where}: --fn {self.function!r} is not defined in the cell "
                            f"(functions: {found})")


_WATERMARK = re.compile(
    r"^\s*\d+(\.\d+)?\s*(ms|millisecond|milliseconds|s|sec|second|seconds|min|minute|minutes|"
    r"h|hour|hours)\s*$",
    re.IGNORECASE,
)


def python_function_names(source: str) -> list[str]:
    """Top-level function names of ``source`` (empty when it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


#: Calls whose literal ``name=`` names a model the node registers.
REGISTERING_CALLS = frozenset({"log_model", "train_online"})


def registered_in(source: str) -> list[str]:
    """Model names registered by literal calls in Python ``source`` (see
    :attr:`Node.models_registered`)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for item in ast.walk(tree):
        if not isinstance(item, ast.Call):
            continue
        func = item.func
        called = func.attr if isinstance(func, ast.Attribute) else \
            func.id if isinstance(func, ast.Name) else None
        if called not in REGISTERING_CALLS:
            continue
        for kw in item.keywords:
            if kw.arg == "name" and isinstance(kw.value, ast.Constant) \
                    and isinstance(kw.value.value, str):
                names.append(kw.value.value)
    return names


def model_of_key(key: str) -> str | None:
    """The model of an ``--on-model`` event key (``model/NAME/version``,
    ``model/NAME/alias/ALIAS``); None for any other key. The keys are spelled in
    :mod:`ultron_nb.events.model_keys` too (the flow imports nothing above it)."""
    if not key.startswith("model/"):
        return None
    rest = key[len("model/"):]
    if rest.endswith("/version") and len(rest) > len("/version"):
        return rest[: -len("/version")]
    name, sep, alias = rest.rpartition("/alias/")
    return name if sep and name and alias and "/" not in alias else None


def make_params(pairs: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (pairs or {}).items()))
