"""Control edges: when a node starts, restarts or stops.

A control edge belongs to the node it acts on (its *target*), so redefining a node redefines
its triggers. The model only describes them; the scheduler runs them.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ultron_nb.errors import FlowError


class Trigger(StrEnum):
    AFTER = "after"  # start when the source is running (stream) or has finished (batch)
    STOP_AFTER = "stop_after"  # stop when the source stops
    PERIODIC = "periodic"  # cron expression or interval
    EVENT = "event"  # a key of the notification service, with a value condition


class Action(StrEnum):
    START = "start"
    RESTART = "restart"
    STOP = "stop"


_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_interval(text: str) -> float | None:
    """Seconds in an interval such as ``30s``, ``5m``, ``1h``, ``2d``; None if not one."""
    m = _INTERVAL.match(text)
    if not m:
        return None
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]


def check_schedule(text: str, *, where: str) -> None:
    """Accept an interval (``5m``) or a five/six-field cron expression."""
    if parse_interval(text) is not None:
        if parse_interval(text) == 0:
            raise FlowError(f"{where}: interval {text!r} must be greater than zero")
        return
    from croniter import croniter  # lazy: keep `import ultron_nb` light

    if not croniter.is_valid(text):
        raise FlowError(
            f"{where}: invalid schedule {text!r} (use an interval such as 5m or 1h, or a cron "
            "expression such as '0 * * * *')"
        )


# ---------------------------------------------------------------- conditions
#   None / ""          any new version of the key
#   equals:VALUE       the value equals VALUE
#   changed            the value differs from the previous version's
#   version>N          the key's version is greater than N
#   json:EXPR          a predicate on the JSON value, e.g. json:value['auc'] > 0.7

_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
    ast.Name, ast.Load, ast.Constant, ast.Subscript, ast.Attribute, ast.List, ast.Tuple,
)


def _parse_predicate(expr: str, where: str) -> ast.Expression:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise FlowError(f"{where}: cannot parse condition json:{expr}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise FlowError(
                f"{where}: condition json:{expr} uses {type(node).__name__}; only comparisons, "
                "and/or/not, constants and value[...] access are allowed"
            )
        if isinstance(node, ast.Name) and node.id not in ("value", "version", "key"):
            raise FlowError(f"{where}: condition json:{expr} names {node.id!r}; use value, "
                            "version or key")
    return tree


def check_condition(cond: str | None, *, where: str) -> None:
    if not cond:
        return
    if cond == "changed" or cond.startswith("equals:"):
        return
    if cond.startswith("version>"):
        if not cond[len("version>"):].strip().isdigit():
            raise FlowError(f"{where}: condition {cond!r} needs an integer, e.g. version>3")
        return
    if cond.startswith("json:"):
        _parse_predicate(cond[5:], where)
        return
    raise FlowError(
        f"{where}: unknown condition {cond!r} (use equals:VALUE, changed, version>N or json:EXPR)"
    )


class _Missing:
    pass


def _eval(node: ast.AST, env: dict[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(e, env) for e in node.elts]
    if isinstance(node, ast.Subscript):
        base = _eval(node.value, env)
        index = _eval(node.slice, env)
        try:
            return base[index]
        except (KeyError, IndexError, TypeError):
            return _Missing()
    if isinstance(node, ast.Attribute):
        base = _eval(node.value, env)
        return base.get(node.attr, _Missing()) if isinstance(base, dict) else _Missing()
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, env)
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, env) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, env)
            if isinstance(left, _Missing) or isinstance(right, _Missing):
                return False
            ok = {
                ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
                ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
                ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
                ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
                ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b,
            }[type(op)](left, right)
            if not ok:
                return False
            left = right
        return True
    raise FlowError(f"unsupported expression {type(node).__name__}")


def condition_holds(
    cond: str | None, *, value: Any, version: int, previous: Any = None, key: str = ""
) -> bool:
    """Does an event ``(key, value, version)`` satisfy ``cond``?

    ``value`` is the decoded JSON value when it is JSON, else the raw string; ``previous``
    is the value of the key's previous version (None for the first version).
    """
    if not cond:
        return True
    if cond == "changed":
        return version == 1 or value != previous
    if cond.startswith("equals:"):
        return str(value) == cond[len("equals:"):]
    if cond.startswith("version>"):
        return version > int(cond[len("version>"):])
    if cond.startswith("json:"):
        tree = _parse_predicate(cond[5:], "condition")
        try:
            return bool(_eval(tree, {"value": value, "version": version, "key": key}))
        except TypeError:
            return False
    raise FlowError(f"unknown condition {cond!r}")


@dataclass(frozen=True)
class ControlEdge:
    """When and how the node it belongs to (``target``) is started, restarted or stopped.

    ``schedule`` is the cron expression or interval of a periodic edge, and for an ``after``
    edge from a stream to a batch node the event-time boundary (``1h``: once per completed
    hour of the stream's watermark).
    """

    target: str
    trigger: Trigger
    source: str | None = None
    action: Action = Action.START
    schedule: str | None = None
    event_key: str | None = None
    condition: str | None = None
    on_failure: bool = False

    @property
    def label(self) -> str:
        verb = "" if self.action is Action.START else f"{self.action} "
        if self.trigger is Trigger.AFTER:
            text = "after"
            if self.schedule:
                text += f" watermark/{self.schedule}"
            if self.on_failure:
                text += " (also on failure)"
        elif self.trigger is Trigger.STOP_AFTER:
            return "stop after"
        elif self.trigger is Trigger.PERIODIC:
            text = f"every {self.schedule}"
        else:
            text = f"on {self.event_key}" + (f" [{self.condition}]" if self.condition else "")
        return verb + text

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "trigger": str(self.trigger),
            "source": self.source,
            "action": str(self.action),
            "schedule": self.schedule,
            "event_key": self.event_key,
            "condition": self.condition,
            "on_failure": self.on_failure,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlEdge:
        return cls(
            target=data["target"],
            trigger=Trigger(data["trigger"]),
            source=data.get("source"),
            action=Action(data.get("action", "start")),
            schedule=data.get("schedule"),
            event_key=data.get("event_key"),
            condition=data.get("condition"),
            on_failure=bool(data.get("on_failure", False)),
        )

    def check(self) -> None:
        where = f"node {self.target!r}"
        if self.trigger in (Trigger.AFTER, Trigger.STOP_AFTER) and not self.source:
            raise FlowError(f"{where}: a {self.trigger} edge needs a source node")
        if self.trigger is Trigger.PERIODIC:
            if not self.schedule:
                raise FlowError(f"{where}: a periodic edge needs --every SCHEDULE")
            check_schedule(self.schedule, where=f"{where} --every")
        if self.trigger is Trigger.AFTER and self.schedule:
            seconds = parse_interval(self.schedule)
            if seconds is None or seconds <= 0:
                raise FlowError(f"{where}: invalid --boundary {self.schedule!r} (use an "
                                "interval such as 1h or 15m)")
        if self.trigger is Trigger.EVENT:
            if not self.event_key:
                raise FlowError(f"{where}: an event edge needs --on-event KEY")
            check_condition(self.condition, where=f"{where} --when")
        elif self.condition:
            raise FlowError(f"{where}: --when applies only to --on-event")
