"""Data-quality rules of a node: what a ``%%ultron rule NODE`` cell says, as values.

One rule per line, optionally named (``name: rule``), ``--`` or ``#`` starting a comment::

    rows between 100 and 5000          -- rows per window within bounds
    null_rate(user_id) <= 0.01         -- share of NULLs of a column
    amount between 0 and 1000          -- every value in range (NULLs aside)
    unique(order_id)                   -- no key twice in a window (several columns: a key)
    freshness <= 2 min                 -- wall clock minus the node's watermark
    drift(amount) <= 0.2               -- population stability index against a reference
    check amount >= 0 OR refunded      -- any DuckDB SQL predicate every row must hold

A stream node's rules hold per event-time window (``--window``, default one minute); a
batch, DuckDB or Python node's once per run over its whole output. Rules belong to the flow
version, not to the node's content identity: adding one neither restarts nor unshares the
node. This module is pure (no I/O); :mod:`ultron_nb.engines.duckdb.quality` evaluates.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from ultron_nb.errors import FlowError
from ultron_nb.flow.edges import parse_interval
from ultron_nb.flow.nodes import NAME


class RuleKind(StrEnum):
    ROWS = "rows"
    NULLS = "nulls"
    RANGE = "range"
    UNIQUE = "unique"
    FRESHNESS = "freshness"
    DRIFT = "drift"
    CHECK = "check"


DEFAULT_WINDOW = "1 min"


@dataclass(frozen=True)
class Rule:
    """One rule of node ``node``. ``low``/``high`` bound the measured value (either may be
    None); ``columns`` are the columns it looks at; ``predicate`` is a ``check`` rule's SQL;
    ``window`` the event-time window of a stream node's evaluation."""

    node: str
    name: str
    kind: RuleKind
    columns: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    predicate: str = ""
    window: str = DEFAULT_WINDOW
    text: str = ""  # the line as written

    @property
    def window_ms(self) -> int:
        return int((parse_interval(self.window) or 60) * 1000)

    @property
    def bound(self) -> str:
        """The bound in words (``<= 0.01``, ``between 0 and 10``)."""
        if self.kind is RuleKind.CHECK:
            return "every row"
        if self.kind is RuleKind.UNIQUE:
            return "no duplicates"
        if self.kind is RuleKind.RANGE:
            return f"between {_num(self.low)} and {_num(self.high)}"
        if self.low is not None and self.high is not None:
            return f"between {_num(self.low)} and {_num(self.high)}"
        if self.high is not None:
            return f"<= {_num(self.high)}"
        return f">= {_num(self.low)}"

    def holds(self, value: float) -> bool:
        """Whether a measured ``value`` is within the bound (for range, unique and check
        rules the value is the number of offending rows)."""
        if self.kind in (RuleKind.RANGE, RuleKind.UNIQUE, RuleKind.CHECK):
            return value == 0
        return not ((self.low is not None and value < self.low)
                    or (self.high is not None and value > self.high))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = str(self.kind)
        data["columns"] = list(self.columns)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        return cls(node=str(data["node"]), name=str(data["name"]), kind=RuleKind(data["kind"]),
                   columns=tuple(str(c) for c in data.get("columns", ())),
                   low=data.get("low"), high=data.get("high"),
                   predicate=str(data.get("predicate", "")),
                   window=str(data.get("window", DEFAULT_WINDOW)),
                   text=str(data.get("text", "")))


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else str(value)


_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?"
_BETWEEN = re.compile(rf"^({_IDENT})\s+between\s+({_NUMBER})\s+and\s+({_NUMBER})$", re.I)
_COMPARE = re.compile(rf"^({_IDENT})(?:\(\s*({_IDENT})\s*\))?\s*(<=|>=)\s*(.+)$", re.I)
_UNIQUE = re.compile(rf"^unique\(\s*({_IDENT}(?:\s*,\s*{_IDENT})*)\s*\)$", re.I)
_NAMED = re.compile(rf"^({_IDENT})\s*:\s*(.+)$")
_WORDS = ("rows", "null_rate", "freshness", "drift", "unique", "check")


def _strip_comment(line: str) -> str:
    for mark in ("--", "#"):
        quote = False
        for i, ch in enumerate(line):
            if ch == "'":
                quote = not quote
            elif not quote and line.startswith(mark, i):
                line = line[:i]
                break
    return line.strip()


def parse_rule(node: str, text: str, *, window: str = DEFAULT_WINDOW,
               line: int | None = None) -> Rule:
    """One rule of ``node`` from its text (see the module docstring)."""
    where = f"node {node!r}: rule {text.strip()!r}" + (f" (line {line})" if line else "")
    body = text.strip()
    name = None
    named = _NAMED.match(body)
    if named and named.group(1).lower() not in _WORDS:
        name, body = named.group(1), named.group(2).strip()
    if parse_interval(window) is None:
        raise FlowError(f"node {node!r}: --window {window!r} is not an interval (e.g. 1 min)")
    rule = _parse_body(node, body, where)
    rule = Rule(node=node, name=name or rule.name, kind=rule.kind, columns=rule.columns,
                low=rule.low, high=rule.high, predicate=rule.predicate, window=window,
                text=text.strip())
    if not NAME.match(rule.name):
        raise FlowError(f"{where}: the rule's name {rule.name!r} is not a name (letters, "
                        "digits, _)")
    return rule


def _parse_body(node: str, body: str, where: str) -> Rule:
    lowered = body.lower()
    if lowered.startswith("check ") or lowered.startswith("check\t"):
        predicate = body[5:].strip()
        if not predicate:
            raise FlowError(f"{where}: check needs an SQL predicate")
        return Rule(node, "check", RuleKind.CHECK, predicate=predicate)
    if m := _UNIQUE.match(body):
        cols = tuple(c.strip() for c in m.group(1).split(","))
        return Rule(node, "unique_" + "_".join(cols), RuleKind.UNIQUE, columns=cols)
    if m := _BETWEEN.match(body):
        subject, low, high = m.group(1), float(m.group(2)), float(m.group(3))
        if low > high:
            raise FlowError(f"{where}: the lower bound is above the upper one")
        if subject.lower() == "rows":
            return Rule(node, "rows", RuleKind.ROWS, low=low, high=high)
        return Rule(node, "range_" + subject, RuleKind.RANGE, columns=(subject,), low=low,
                    high=high)
    if m := _COMPARE.match(body):
        func, column, op, value = m.group(1).lower(), m.group(2), m.group(3), m.group(4)
        if func == "freshness" and column is None:
            seconds = parse_interval(value.strip())
            if seconds is None or op != "<=":
                raise FlowError(f"{where}: freshness <= INTERVAL (e.g. freshness <= 2 min)")
            return Rule(node, "freshness", RuleKind.FRESHNESS, high=seconds)
        try:
            number = float(value)
        except ValueError:
            raise FlowError(f"{where}: {value.strip()!r} is not a number") from None
        bounds = {"high": number} if op == "<=" else {"low": number}
        if func == "rows" and column is None:
            return Rule(node, "rows", RuleKind.ROWS, **bounds)
        if func == "null_rate" and column:
            return Rule(node, "nulls_" + column, RuleKind.NULLS, columns=(column,), **bounds)
        if func == "drift" and column and op == "<=":
            return Rule(node, "drift_" + column, RuleKind.DRIFT, columns=(column,), **bounds)
    raise FlowError(f"{where}: not a rule (rows between A and B, null_rate(COL) <= X, COL "
                    "between A and B, unique(COL), freshness <= 2 min, drift(COL) <= X, "
                    "check PREDICATE)")


def parse_rules(node: str, text: str, *, window: str = DEFAULT_WINDOW) -> tuple[Rule, ...]:
    """Every rule of a ``%%ultron rule NODE`` cell (one per line); names must differ."""
    rules: list[Rule] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if line:
            rules.append(parse_rule(node, line, window=window, line=number))
    if not rules:
        raise FlowError(f"node {node!r}: the rule cell holds no rule (one per line, e.g. "
                        "null_rate(user_id) <= 0.01)")
    names = [r.name for r in rules]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise FlowError(f"node {node!r}: two rules are named {twice[0]!r} (name one "
                        f"'{twice[0]}_2: ...')")
    return tuple(rules)
