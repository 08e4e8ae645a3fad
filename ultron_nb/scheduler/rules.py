"""The scheduler's rules, pure: which events fire which triggers, and the tick arithmetic.

Each control edge of a node is its own rule; several edges fire independently:

- ``after A`` with A batch (batch→batch, batch→stream): when a run of A finishes — or fails,
  if the edge says ``on_failure`` — once per run of A.
- ``after A`` with A stream and no boundary (stream→stream): when a run of A is running.
- ``after A --boundary 1h`` (stream→batch): once for every boundary A's watermark passes
  (every completed event-time hour), from where A's output starts in event time (the first
  watermark event says it, ``{"watermark": ms, "since": ms}``; without it, the first
  watermark seen is the baseline); a jump over several boundaries fires once for each; the
  trigger carries the window (start, end).
- ``stop_after A``: when a run of A ends.
- ``every SCHEDULE``: interval (``5m``) or cron expression (croniter, local time); missed
  ticks while the scheduler was down coalesce into one.
- ``on_event KEY [--when COND]``: each new version of KEY sent after the experiment was
  created, if the condition holds.
- ``control/<experiment>``: ``start`` starts the nodes no start edge waits for and that never
  ran; ``start``/``restart``/``stop`` with ``node`` act on that node.

A node's runs are known from ``status/<experiment>/<node>`` events. With an attempt number,
duplicates and stale or out-of-order events are recognised exactly; with a run identity (a
Flink job id) likewise; a bare state starts a run at ``running`` after an ended run.

Everything here is deterministic given the rule state and the model, so replaying events
after a crash plans the same triggers, which the trigger log's unique key then ignores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ultron_nb.events import Event
from ultron_nb.events.keys import (
    NodeState,
    normalize,
    status_key,
    watermark_key,
    watermark_ms,
)
from ultron_nb.events.model_keys import in_scope, parse_occurrence, subscribed_keys
from ultron_nb.events.model_keys import occurrence as event_occurrence
from ultron_nb.flow import Action, ControlEdge, Flow, Kind, Node, Trigger, condition_holds
from ultron_nb.flow.edges import parse_interval

log = logging.getLogger(__name__)

MAX_BOUNDARIES = 10_000  # per watermark event; beyond, the oldest are skipped (logged)

# Trigger-log edges that are not control edges of the flow.
CONTROL_START_EXPERIMENT = "control:start-experiment"

#: Experiment states that get no new triggers.
INACTIVE = frozenset({"stopping", "stopped", "canceled", "cancelled", "deleted"})


def edge_id(edge: ControlEdge) -> str:
    """A stable, readable identity of a control edge (``trigger_log.edge``)."""
    what = edge.source or edge.event_key or edge.schedule or ""
    digest = hashlib.sha1(json.dumps(edge.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return f"{edge.trigger}:{what[:150]}:{edge.action}:{digest}"


def parse_status(value: Any) -> tuple[NodeState | None, int | None, str | None]:
    """``(state, attempt, run)`` of a status event value; state None if it is not a state.
    ``run`` is an opaque run identity (a Flink job id, say)."""
    attempt: int | None = None
    run: str | None = None
    if isinstance(value, dict):
        raw = value.get("state", value.get("status"))
        if isinstance(value.get("attempt"), int) and not isinstance(value["attempt"], bool):
            attempt = int(value["attempt"])
        for name in ("run", "job_id", "job"):
            if value.get(name) is not None:
                run = str(value[name])
                break
    else:
        raw = value
    state = normalize(raw)
    if state in (NodeState.SUBMITTING, NodeState.WAITING, NodeState.READY, NodeState.UNKNOWN,
                 NodeState.STOPPING):
        return None, attempt, run  # not a run's start or end
    if state is NodeState.RESTARTING:
        state = NodeState.RUNNING
    return state, attempt, run


def is_end(state: NodeState | None) -> bool:
    return state in (NodeState.FINISHED, NodeState.FAILED, NodeState.STOPPED,
                     NodeState.CANCELED, NodeState.LOST)


# ---------------------------------------------------------------- the model
@dataclass
class Member:
    name: str
    instance_id: str
    shared_from: str | None
    params: dict[str, str]
    upstream: dict[str, str]
    output: Any


@dataclass
class ExperimentModel:
    name: str
    id: int
    state: str
    created_at: float
    flow: Flow
    members: dict[str, Member]
    target: str = ""
    chain: tuple[str, ...] = ()  # itself, its parent, ..., its root (model alias scopes)

    @property
    def active(self) -> bool:
        return self.state not in INACTIVE

    def trigger_state(self, cause: str) -> str | None:
        """How a trigger caused by ``cause`` (``status``, ``watermark``, ``event``, ``tick``,
        ``control``) is recorded for this experiment: ``pending`` while it is active;
        ``suspended`` while it is stopped with savepoints, for data it must not miss (a
        boundary its upstream passed, an event) — resume re-arms those; None: not at all."""
        if self.active:
            return "pending"
        if self.state == "stopped" and cause in ("watermark", "event"):
            return "suspended"
        return None

    def owner(self, node: str) -> str:
        """The experiment whose status/watermark events speak for ``node`` (shared nodes
        are reported by the experiment that launched them)."""
        member = self.members.get(node)
        return (member.shared_from or self.name) if member else self.name

    def runs_here(self, node: str) -> bool:
        member = self.members.get(node)
        return (node in self.flow and self.flow[node].kind is not Kind.RESOURCE
                and (member is None or member.shared_from is None))


@dataclass
class Model:
    experiments: dict[str, ExperimentModel]
    by_status: dict[str, list[tuple[str, ControlEdge]]] = field(default_factory=dict)
    by_watermark: dict[str, list[tuple[str, ControlEdge]]] = field(default_factory=dict)
    by_event: dict[str, list[tuple[str, ControlEdge]]] = field(default_factory=dict)
    periodic: list[tuple[str, ControlEdge]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)  # instance id → output

    def index(self) -> Model:
        """Fill the edge indexes from the experiments' flows."""
        for exp in self.experiments.values():
            for node in exp.flow:
                if not exp.runs_here(node.name):
                    continue
                for edge in node.triggers:
                    self._add(exp, edge)
        return self

    def _add(self, exp: ExperimentModel, edge: ControlEdge) -> None:
        if edge.trigger is Trigger.PERIODIC:
            self.periodic.append((exp.name, edge))
        elif edge.trigger is Trigger.EVENT and edge.event_key:
            for key in subscribed_keys(edge.event_key, exp.chain or (exp.name,)):
                self.by_event.setdefault(key, []).append((exp.name, edge))
        elif edge.source and edge.source in exp.flow:
            owner = exp.owner(edge.source)
            if edge.trigger is Trigger.AFTER and edge.schedule and \
                    exp.flow[edge.source].is_stream:
                self.by_watermark.setdefault(watermark_key(owner, edge.source), []).append(
                    (exp.name, edge))
            else:
                self.by_status.setdefault(status_key(owner, edge.source), []).append(
                    (exp.name, edge))


def starts_on_launch(node: Node) -> bool:
    """Does the launch start ``node`` (no start edge waits for it)?"""
    return node.kind is not Kind.RESOURCE and not any(
        e.action is Action.START and e.trigger is not Trigger.STOP_AFTER for e in node.triggers)


@dataclass(frozen=True)
class Planned:
    experiment: str
    node: str
    edge: str
    occurrence: str
    action: str
    state: str = "pending"


def payload(flow: Flow, node: str, edge: str, occurrence: str,
            event_value: Callable[[str, int], Any]) -> dict[str, Any]:
    """What fired a trigger, from its edge and occurrence (so a re-driven trigger gets the
    same payload). ``event_value(key, version)`` reads an event's value."""
    control = next((e for e in flow[node].triggers if edge_id(e) == edge), None)
    if control is None:
        return {}
    if occurrence.startswith("wm") and control.schedule:
        end = int(occurrence[2:])
        size = int((parse_interval(control.schedule) or 0) * 1000)
        return {"window_start": end - size, "window_end": end, "source": control.source}
    parsed = parse_occurrence(occurrence, control.event_key) if control.event_key else None
    if parsed is not None:
        key, version = parsed
        return {"event": {"key": key, "version": version, "value": event_value(key, version)}}
    if occurrence.startswith("run"):
        return {"source": control.source, "run": int(occurrence[3:])}
    if occurrence.startswith("t"):
        return {"tick": float(occurrence[1:])}
    return {}


# ---------------------------------------------------------------- events → triggers
def on_status(event: Event, state: dict[str, Any], model: Model) -> list[Planned]:
    kind, attempt, run = parse_status(event.value)
    if kind is None:
        return []
    runs = state["runs"]
    current = runs.get(event.key) or {"n": None, "run": None, "terminal": True, "seen": []}
    n = current["n"]  # None: no run seen yet
    seen = list(current.get("seen", []))
    if attempt is not None:  # exact: attempts grow
        if n is not None and attempt < n:
            return []  # a stale event of an older run
        new_run = n is None or attempt > n
        number = attempt
    elif run is not None:  # an opaque run identity (a Flink job id)
        if run != current["run"] and run in seen:
            return []
        new_run = n is None or run != current["run"]
        number = (n or 0) + 1 if new_run else n
    else:  # a bare state: a run begins at "running" after an ended run
        new_run = n is None or (kind is NodeState.RUNNING and bool(current["terminal"]))
        number = (n or 0) + 1 if new_run else n
    if not new_run:
        if current["terminal"] or kind is NodeState.RUNNING:
            return []  # duplicate, or late news of a run that already ended
        current = {**current, "terminal": True}
    else:
        if run is not None:
            seen = [*seen, run][-20:]
        current = {"n": number, "run": run, "terminal": is_end(kind), "seen": seen}
    runs[event.key] = current
    planned = []
    for exp_name, edge in model.by_status.get(event.key, ()):
        exp = model.experiments.get(exp_name)
        if exp is None or exp.trigger_state("status") is None or edge.source is None:
            continue
        source = exp.flow[edge.source]
        if edge.trigger is Trigger.STOP_AFTER:
            fires = is_end(kind)
        elif source.is_stream:
            fires = kind is NodeState.RUNNING
        else:
            fires = kind is NodeState.FINISHED or (kind is NodeState.FAILED and edge.on_failure)
        if fires:
            planned.append(Planned(exp_name, edge.target, edge_id(edge), f"run{number}",
                                   str(edge.action)))
    return planned


def _since(value: Any) -> int | None:
    if isinstance(value, dict) and value.get("since") is not None:
        try:
            return int(value["since"])
        except (TypeError, ValueError):
            return None
    return None


def on_watermark(event: Event, state: dict[str, Any], model: Model) -> list[Planned]:
    ms = watermark_ms(event.value)
    if ms is None:
        return []
    marks = state["watermarks"]
    previous = marks.get(event.key)
    if previous is not None and ms <= int(previous):
        return []  # not an advance (duplicate or out of order)
    marks[event.key] = ms
    if previous is None:
        since = _since(event.value)
        if since is None:
            return []  # the baseline
        # The output starts at ``since``: the first boundary to fire closes the window that
        # holds it (for data starting exactly on a boundary, the window it opens — not the
        # empty one it closes).
        previous = since
    planned = []
    for exp_name, edge in model.by_watermark.get(event.key, ()):
        exp = model.experiments.get(exp_name)
        recorded = exp.trigger_state("watermark") if exp is not None else None
        if exp is None or recorded is None or not edge.schedule:
            continue
        size = int((parse_interval(edge.schedule) or 0) * 1000)
        if size <= 0:
            continue
        first = (int(previous) // size + 1) * size
        last = (ms // size) * size
        count = (last - first) // size + 1
        if count <= 0:
            continue
        if count > MAX_BOUNDARIES:
            log.warning("%s: the watermark jumped over %d boundaries of %s; firing the "
                        "last %d", event.key, count, edge.schedule, MAX_BOUNDARIES)
            first = last - (MAX_BOUNDARIES - 1) * size
        for boundary in range(first, last + 1, size):
            planned.append(Planned(exp_name, edge.target, edge_id(edge), f"wm{boundary}",
                                   str(edge.action), recorded))
    return planned


def on_user_event(event: Event, model: Model,
                  previous_value: Callable[[str, int], Any]) -> list[Planned]:
    watchers = model.by_event.get(event.key)
    if not watchers:
        return []
    planned = []
    previous: Any = None
    loaded = False
    for exp_name, edge in watchers:
        exp = model.experiments.get(exp_name)
        recorded = exp.trigger_state("event") if exp is not None else None
        if exp is None or recorded is None or event.created_at < exp.created_at:
            continue
        if not in_scope(event.key, event.value, exp.chain or (exp.name,)):
            continue  # a model version of another experiment's line
        if edge.condition == "changed" and not loaded and event.version > 1:
            previous, loaded = previous_value(event.key, event.version - 1), True
        try:
            holds = condition_holds(edge.condition, value=event.value, version=event.version,
                                    previous=previous, key=event.key)
        except Exception as exc:  # a broken condition must not stop the scheduler
            log.warning("experiment %s node %s: condition %r failed on %s v%d: %s",
                        exp_name, edge.target, edge.condition, event.key, event.version, exc)
            holds = False
        if holds:
            planned.append(Planned(exp_name, edge.target, edge_id(edge),
                                   event_occurrence(edge.event_key or event.key, event.key,
                                                    event.version),
                                   str(edge.action), recorded))
    return planned


def on_control(event: Event, model: Model) -> list[Planned]:
    exp = model.experiments.get(event.key[len("control/"):])
    if exp is None or not exp.active:
        log.info("%s: no such active experiment; ignored", event.key)
        return []
    value = event.value if isinstance(event.value, dict) else {"action": event.value}
    action = str(value.get("action", "")).lower()
    node = value.get("node")
    occurrence = f"v{event.version}"
    if node is not None:
        if node not in exp.flow or not exp.runs_here(str(node)):
            log.warning("%s: cannot %s node %r", event.key, action, node)
            return []
        if action in ("start", "restart", "stop"):
            return [Planned(exp.name, str(node), f"control:{action}", occurrence, action)]
        return []
    if action == "start":
        return [Planned(exp.name, name, CONTROL_START_EXPERIMENT, occurrence, "start")
                for name in exp.flow.topological()
                if exp.runs_here(name) and starts_on_launch(exp.flow[name])]
    log.warning("%s: unknown request %r", event.key, event.value)
    return []


# ---------------------------------------------------------------- ticks
def _interval(schedule: str) -> float | None:
    seconds = parse_interval(schedule)
    return seconds if seconds and seconds > 0 else None


def next_tick(schedule: str, after: float) -> float:
    interval = _interval(schedule)
    if interval is not None:
        return after + interval
    from croniter import croniter  # lazy: only periodic edges need it

    start = datetime.fromtimestamp(after).astimezone()
    return float(croniter(schedule, start).get_next(float))


def last_due_tick(schedule: str, last: float, now: float) -> float | None:
    """The latest tick after ``last`` and at or before ``now`` (missed ticks coalesce)."""
    interval = _interval(schedule)
    if interval is not None:
        periods = math.floor((now - last) / interval)
        return last + periods * interval if periods >= 1 else None
    tick = next_tick(schedule, last)
    if tick > now:
        return None
    from croniter import croniter

    # get_prev is strictly before its start: start just after now to include now itself.
    start = datetime.fromtimestamp(math.floor(now) + 1).astimezone()
    previous = float(croniter(schedule, start).get_prev(float))
    return max(tick, previous)


def tick_key(experiment: str, edge: ControlEdge) -> str:
    return f"{experiment}|{edge.target}|{edge_id(edge)}"


def on_ticks(now: float, state: dict[str, Any], model: Model) -> tuple[list[Planned], bool]:
    """Periodic triggers that are due; and whether the tick state changed."""
    ticks = state["ticks"]
    changed = False
    planned = []
    for exp_name, edge in model.periodic:
        exp = model.experiments.get(exp_name)
        if exp is None or not exp.active or not edge.schedule:
            continue
        key = tick_key(exp_name, edge)
        last = ticks.get(key)
        if last is None:
            ticks[key] = now  # the anchor: the first tick is one period from now
            changed = True
            continue
        due = last_due_tick(edge.schedule, float(last), now)
        if due is not None:
            ticks[key] = due
            changed = True
            planned.append(Planned(exp_name, edge.target, edge_id(edge), f"t{due:.3f}",
                                   str(edge.action)))
    return planned, changed


def next_tick_in(now: float, state: dict[str, Any], model: Model | None) -> float:
    """Seconds until the next periodic tick (inf when there is none)."""
    if model is None:
        return math.inf
    best = math.inf
    for exp_name, edge in model.periodic:
        exp = model.experiments.get(exp_name)
        if exp is None or not exp.active or not edge.schedule:
            continue
        last = state["ticks"].get(tick_key(exp_name, edge))
        if last is None:
            return 0.0
        best = min(best, next_tick(edge.schedule, float(last)) - now)
    return max(0.0, best)


def prune(state: dict[str, Any], keep: set[str]) -> None:
    """Forget the rule state of experiments not in ``keep`` (gone, or ended for good)."""
    for part in ("runs", "watermarks"):
        for key in list(state[part]):
            if key.split("/", 2)[1] not in keep:
                del state[part][key]
    for key in list(state["ticks"]):
        if key.split("|", 1)[0] not in keep:
            del state["ticks"][key]
