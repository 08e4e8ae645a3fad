"""The scheduler: runs the control edges of every running experiment, as a daemon.

One process per store (``ultron scheduler``, started by ``ultron up``) follows the event
stream of the notification service and turns events into *triggers* — start, restart or stop
one node of one experiment — which it then carries out through a :class:`NodeActions`
implementation (Python nodes: :class:`PythonRunner`; Flink nodes: plugged in by the engine).

Rules (each control edge of a node is its own rule; several edges fire independently):

- ``after A`` with A batch (batch→batch, batch→stream): when a run of A finishes — or fails,
  if the edge says ``on_failure`` — once per run of A.
- ``after A`` with A stream and no boundary (stream→stream): when a run of A is running.
- ``after A --boundary 1h`` (stream→batch): once for every boundary A's watermark passes
  (every completed event-time hour); events ``watermark/<experiment>/<A>`` carry epoch
  milliseconds. The first watermark seen is the baseline; a jump over several boundaries
  fires once for each. The trigger carries the window (start, end).
- ``stop_after A``: when a run of A ends (finished, failed or stopped).
- ``every SCHEDULE``: interval (``5m``) or cron expression (croniter, local time). Missed ticks
  while the scheduler was down are coalesced into one.
- ``on_event KEY [--when COND]``: each new version of KEY (namespace ``default``) sent after
  the experiment was created, if the condition holds.
- ``control/<experiment>`` events (:func:`request_start`, :func:`request_stop`): ``start``
  starts the nodes that no start edge waits for and that never ran; ``stop`` cancels pending
  starts and stops running nodes in reverse dependency order (downstream first), each before
  the next; a node that finished stays finished. With ``node``, one node only.

A node's runs are known from ``status/<experiment>/<node>`` events whose value is a state
(``running``, ``finished``, ``failed``, ``stopped``) or an object ``{"state": ..., "attempt":
N, ...}``. With an attempt number, duplicates and stale or out-of-order events are
recognised exactly; without one, a run starts at ``running`` after an ended run.

Guarantees:

- Exactly one trigger per qualifying event: every trigger has an idempotency key
  ``(experiment, node, edge, occurrence)`` — unique in ``trigger_log`` — and is inserted in
  the same transaction that advances the persisted cursor (``scheduler_state``).
- No lost trigger after ``kill -9``: the cursor and the rule state (runs, watermarks, ticks)
  are persisted with the triggers; on restart the scheduler resumes from the cursor and
  re-drives pending triggers. A runner that *claims* triggers (:func:`claim_trigger`, in the
  transaction that records the run, as :class:`PythonRunner` does) makes each trigger run
  exactly once even if the scheduler dies between launching and recording.
- Stop means stop: a stop cancels the experiment's pending starts in the same transaction,
  and a cancelled trigger can no longer be claimed; a node that finished is never stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import importlib
import inspect
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from ultron_nb.config import Settings, load_settings
from ultron_nb.errors import EngineError, NotFoundError, UltronError
from ultron_nb.events import DEFAULT_NAMESPACE, Event, Listener, append_event, get_event
from ultron_nb.events import send_event as _send_event
from ultron_nb.events.model_keys import in_scope, parse_occurrence, scope_chain, subscribed_keys
from ultron_nb.events.model_keys import occurrence as event_occurrence
from ultron_nb.flow import Action, ControlEdge, Flow, Kind, Node, Trigger, condition_holds
from ultron_nb.flow.edges import parse_interval
from ultron_nb.processes import process_alive, process_identity
from ultron_nb.store import Database, open_database
from ultron_nb.store.flows import load_flow
from ultron_nb.store.schema import (
    experiment_nodes,
    experiments,
    jobs,
    node_instances,
    scheduler_state,
    trigger_log,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- vocabulary
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
STOPPED = "stopped"
TERMINAL = frozenset({FINISHED, FAILED, STOPPED})
_STATE_ALIASES = {
    "running": RUNNING,
    "finished": FINISHED, "succeeded": FINISHED, "success": FINISHED, "done": FINISHED,
    "failed": FAILED, "error": FAILED, "lost": FAILED,
    "stopped": STOPPED, "canceled": STOPPED, "cancelled": STOPPED, "killed": STOPPED,
    "suspended": STOPPED,
}

#: Experiments in these states get no new triggers (``stopping``: only its stops run).
INACTIVE_EXPERIMENT_STATES = frozenset({"stopping", "stopped", "canceled", "cancelled",
                                        "deleted"})
SENDER = "ultron.scheduler"
RUNNER_SENDER = "ultron.python"
STATE_ROW = "scheduler"  # scheduler_state.name of the persisted cursor and rule state
SCHEDULER_LOCK_ID = 0x756C7473  # PostgreSQL session lock: one scheduler per store
MAX_BOUNDARIES = 10_000  # per watermark event; beyond, the oldest are skipped (logged)

# Trigger-log edges that are not control edges of the flow.
CONTROL_START_EXPERIMENT = "control:start-experiment"
CONTROL_STOP_EXPERIMENT = "control:stop-experiment"


def status_key(experiment: str, node: str) -> str:
    """The event key of a node's state: ``status/<experiment>/<node>``."""
    return f"status/{experiment}/{node}"


def watermark_key(experiment: str, node: str) -> str:
    """The event key of a stream node's watermark (epoch ms): ``watermark/<exp>/<node>``."""
    return f"watermark/{experiment}/{node}"


def control_key(experiment: str) -> str:
    """The event key of requests to the scheduler about an experiment."""
    return f"control/{experiment}"


def edge_id(edge: ControlEdge) -> str:
    """A stable, readable identity of a control edge (``trigger_log.edge``)."""
    what = edge.source or edge.event_key or edge.schedule or ""
    digest = hashlib.sha1(
        json.dumps(edge.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return f"{edge.trigger}:{what[:150]}:{edge.action}:{digest}"


def parse_status(value: Any) -> tuple[str | None, int | None, str | None]:
    """``(state, attempt, run)`` of a status event value; state None if it is not one of
    ours (e.g. ``created``). ``run`` is an opaque run identity (a Flink job id, say)."""
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
    state = _STATE_ALIASES.get(str(raw).strip().lower()) if raw is not None else None
    return state, attempt, run


def parse_watermark(value: Any) -> int | None:
    """Epoch milliseconds of a watermark event value (a number, numeric text, or an object
    with ``watermark``); None when absent or before 1970 (Flink's "no watermark yet")."""
    if isinstance(value, dict):
        value = value.get("watermark", value.get("ms"))
    if isinstance(value, bool) or value is None:
        return None
    try:
        ms = int(float(value))
    except (TypeError, ValueError):
        return None
    return ms if ms >= 0 else None


# ----------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class NodeTarget:
    """A node of an experiment, as the scheduler hands it to :class:`NodeActions`.

    ``spec`` is the node's definition (flow version of the experiment), ``params`` its
    effective parameters, ``inputs`` the outputs of its upstream instances (node → what
    ``node_instances.output`` records, e.g. ``{"path": ...}``), ``output`` its own.
    ``trigger_id``/``edge``/``occurrence``/``payload`` say what fired (None for stop and
    state queries); ``payload`` holds the window of a boundary trigger
    (``window_start``/``window_end``, ms), the event of an event trigger, the tick of a
    periodic one.
    """

    experiment: str
    name: str
    spec: Node
    instance_id: str
    params: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    flow: str = ""
    flow_version: int = 0
    trigger_id: int | None = None
    edge: str = ""
    occurrence: str = ""
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.spec.kind)


@runtime_checkable
class NodeActions(Protocol):
    """What the scheduler needs from an engine. ``state`` returns ``running``,
    ``finished``, ``failed``, ``stopped`` or None (never ran).

    An implementation that sets ``claims_triggers = True`` calls :func:`claim_trigger` in
    the transaction that records the run it starts; a trigger it cannot claim (already
    claimed, or cancelled by a stop) must not run. Then each trigger runs exactly once even
    if the scheduler is killed mid-launch. Otherwise the scheduler marks the trigger done
    after ``start`` returns (at least once). The run must report its states as
    ``status/<experiment>/<node>`` events (see :func:`status_key`).
    """

    def start(self, experiment: str, node: NodeTarget) -> None: ...

    def restart(self, experiment: str, node: NodeTarget) -> None: ...

    def stop(self, experiment: str, node: NodeTarget) -> None: ...

    def state(self, experiment: str, node: NodeTarget) -> str | None: ...


def claims_triggers(actions: Any, node: NodeTarget) -> bool:
    """Does ``actions`` claim ``node``'s triggers itself?"""
    claims_for = getattr(actions, "claims_for", None)
    if callable(claims_for):
        return bool(claims_for(node))
    return bool(getattr(actions, "claims_triggers", False))


class KindRouter:
    """Routes each node to the actions of its kind (``python``, ``flink``, ``duckdb``)."""

    def __init__(self, handlers: Mapping[str, NodeActions]):
        self.handlers = dict(handlers)

    def _for(self, node: NodeTarget) -> NodeActions:
        handler = self.handlers.get(node.kind)
        if handler is None:
            raise EngineError(
                f"node {node.name!r} of experiment {node.experiment!r}: the scheduler has no "
                f"runner for {node.kind} nodes (runners: {', '.join(sorted(self.handlers))})"
            )
        return handler

    def claims_for(self, node: NodeTarget) -> bool:
        handler = self.handlers.get(node.kind)
        return handler is not None and claims_triggers(handler, node)

    def start(self, experiment: str, node: NodeTarget) -> None:
        self._for(node).start(experiment, node)

    def restart(self, experiment: str, node: NodeTarget) -> None:
        self._for(node).restart(experiment, node)

    def stop(self, experiment: str, node: NodeTarget) -> None:
        handler = self.handlers.get(node.kind)
        if handler is not None:
            handler.stop(experiment, node)

    def state(self, experiment: str, node: NodeTarget) -> str | None:
        handler = self.handlers.get(node.kind)
        return handler.state(experiment, node) if handler is not None else None

    def maintain(self) -> None:
        for handler in self.handlers.values():
            maintain = getattr(handler, "maintain", None)
            if callable(maintain):
                maintain()

    def close(self) -> None:
        for handler in self.handlers.values():
            close = getattr(handler, "close", None)
            if callable(close):
                close()


#: Engines whose actions are loaded when their module exists: kind → "module:factory",
#: the factory called as ``factory(db, settings)``.
ACTION_FACTORIES: dict[str, str] = {
    "python": "ultron_nb.services.scheduler:PythonRunner",
    "flink": "ultron_nb.services.flink_actions:make_actions",
    "duckdb": "ultron_nb.services.duckdb_nodes:DuckDBRunner",
}


#: Watchers the daemon polls every tick (``poll() -> events sent``): name → "module:class",
#: called as ``factory(db, settings)``.
WATCHER_FACTORIES: dict[str, str] = {
    "models": "ultron_nb.services.model_events:RegistryWatcher",
}
WATCH_TICK = 0.1  # the loop's longest wait while watchers run (seconds)


def default_watchers(db: Database, settings: Settings) -> list[Any]:
    """Every watcher of :data:`WATCHER_FACTORIES` that loads."""
    out = []
    for name, spec in WATCHER_FACTORIES.items():
        try:
            out.append(load_factory(spec)(db, settings))
        except Exception as exc:
            log.error("no %s watcher: %s: %s", name, spec, exc)
    return out


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``module:attribute``."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)  # type: ignore[no-any-return]


def default_actions(db: Database, settings: Settings) -> KindRouter:
    """Actions for every engine available: see :data:`ACTION_FACTORIES`."""
    handlers: dict[str, NodeActions] = {}
    for kind, spec in ACTION_FACTORIES.items():
        try:
            factory = load_factory(spec)
        except ModuleNotFoundError as exc:
            if exc.name and spec.split(":")[0].startswith(exc.name):
                log.info("no runner for %s nodes (%s is not there)", kind, spec)
            else:
                log.error("no runner for %s nodes: %s cannot be imported: %s", kind, spec, exc)
            continue
        except (ImportError, AttributeError) as exc:
            log.error("no runner for %s nodes: %s: %s", kind, spec, exc)
            continue
        handlers[kind] = factory(db, settings)
    return KindRouter(handlers)


# ----------------------------------------------------------------------------- trigger log
def claim_trigger(conn: Connection, trigger_id: int) -> bool:
    """Mark a pending trigger done inside the caller's write transaction; False when it was
    already claimed or was cancelled (then the run must not happen)."""
    result = conn.execute(
        update(trigger_log)
        .where(trigger_log.c.id == trigger_id, trigger_log.c.state == "pending")
        .values(state="done")
    )
    return result.rowcount == 1


def _set_trigger(conn: Connection, trigger_id: int, state: str) -> None:
    conn.execute(update(trigger_log)
                 .where(trigger_log.c.id == trigger_id, trigger_log.c.state == "pending")
                 .values(state=state))


def request_start(db: Database, experiment: str, node: str | None = None) -> Event:
    """Ask the scheduler to start ``experiment`` (its nodes that no start edge waits for and
    that never ran), or one ``node`` of it."""
    value: dict[str, Any] = {"action": "start"}
    if node:
        value["node"] = node
    return _send_event(db, control_key(experiment), value, sender=SENDER)


def request_stop(db: Database, experiment: str, node: str | None = None) -> Event:
    """Ask the scheduler to stop ``experiment`` (or one ``node``): pending starts are
    cancelled, running nodes stopped downstream first."""
    value: dict[str, Any] = {"action": "stop"}
    if node:
        value["node"] = node
    return _send_event(db, control_key(experiment), value, sender=SENDER)


def request_restart(db: Database, experiment: str, node: str) -> Event:
    """Ask the scheduler to restart one node of ``experiment``."""
    return _send_event(db, control_key(experiment), {"action": "restart", "node": node},
                       sender=SENDER)


# ----------------------------------------------------------------------------- the model
@dataclass
class _Member:
    name: str
    instance_id: str
    shared_from: str | None
    params: dict[str, str]
    upstream: dict[str, str]
    output: Any


@dataclass
class _Experiment:
    name: str
    id: int
    state: str
    created_at: float
    flow: Flow
    members: dict[str, _Member]
    chain: tuple[str, ...] = ()  # itself, its parent, ..., its root (model scopes)

    @property
    def active(self) -> bool:
        return self.state not in INACTIVE_EXPERIMENT_STATES

    def owner(self, node: str) -> str:
        """The experiment whose status/watermark events speak for ``node`` (shared nodes
        are run by the experiment that launched them)."""
        member = self.members.get(node)
        return (member.shared_from or self.name) if member else self.name

    def runs_here(self, node: str) -> bool:
        member = self.members.get(node)
        return (node in self.flow and self.flow[node].kind is not Kind.RESOURCE
                and (member is None or member.shared_from is None))


@dataclass
class _Model:
    experiments: dict[str, _Experiment]
    by_status: dict[str, list[tuple[str, ControlEdge]]]
    by_watermark: dict[str, list[tuple[str, ControlEdge]]]
    by_event: dict[str, list[tuple[str, ControlEdge]]]
    periodic: list[tuple[str, ControlEdge]]
    outputs: dict[str, Any]  # instance id → output


def _starts_on_launch(node: Node) -> bool:
    """Does the launch start ``node`` (no start edge waits for it)?"""
    return node.kind is not Kind.RESOURCE and not any(
        e.action is Action.START and e.trigger is not Trigger.STOP_AFTER for e in node.triggers)


@dataclass
class _Planned:
    experiment: str
    node: str
    edge: str
    occurrence: str
    action: str


# ----------------------------------------------------------------------------- scheduler
class Scheduler:
    """Turns events into triggers and carries them out; see the module docstring.

    Drive it with :meth:`run` (until ``stop`` is set) or step by step with :meth:`step`.
    ``clock`` (epoch seconds) is for periodic edges.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        actions: NodeActions,
        *,
        poll: float = 0.02,
        stop_timeout: float = 30.0,
        claim_grace: float = 60.0,
        clock: Callable[[], float] = time.time,
        watchers: Sequence[Any] | None = None,
    ):
        self.db = db
        self.settings = settings
        self.actions = actions
        self.poll = poll
        self.stop_timeout = stop_timeout
        self.claim_grace = claim_grace
        self.clock = clock
        self._flows: dict[tuple[str, int], Flow] = {}
        self._model: _Model | None = None
        self._model_at = 0.0
        self._inflight: dict[int, float] = {}  # claimed-by-runner triggers launched: when
        self._drive_due = True
        self._waiting = False  # some pending trigger waits for its node
        self._driven_at = 0.0
        self._maintained = 0.0
        self._persisted_at = time.monotonic()
        self._state, self._persisted_cursor = self._load_state()
        self._saved_state = copy.deepcopy(self._state)  # as persisted with the cursor
        self._listener = Listener(db, None, namespace=DEFAULT_NAMESPACE,
                                  since_id=self._persisted_cursor, poll=poll)
        self._watchers = list(default_watchers(db, settings) if watchers is None else watchers)
        log.info("scheduler on %s resumes after event %d", db.safe_url, self._persisted_cursor)

    # ------------------------------------------------------------------ persisted state
    def _load_state(self) -> tuple[dict[str, Any], int]:
        with self.db.read() as conn:
            row = conn.execute(select(scheduler_state.c.value)
                               .where(scheduler_state.c.name == STATE_ROW)).first()
        state = dict(row[0]) if row else {}
        for part in ("runs", "watermarks", "ticks"):
            state.setdefault(part, {})
        cursor = int(state.get("cursor", 0))
        return state, cursor

    def _save_state(self, conn: Connection, state: dict[str, Any], cursor: int) -> None:
        state["cursor"] = cursor
        value = json.loads(json.dumps(state))
        now = time.time()
        changed = conn.execute(update(scheduler_state)
                               .where(scheduler_state.c.name == STATE_ROW)
                               .values(value=value, updated_at=now)).rowcount
        if not changed:
            conn.execute(insert(scheduler_state).values(name=STATE_ROW, value=value,
                                                        updated_at=now))

    @property
    def cursor(self) -> int:
        """The id of the last event whose consequences are committed."""
        return self._persisted_cursor

    # ------------------------------------------------------------------ the model
    def _flow(self, conn: Connection, name: str, version: int) -> Flow:
        flow = self._flows.get((name, version))
        if flow is None:
            flow = self._flows[(name, version)] = load_flow(conn, name, version)
        return flow

    def refresh(self) -> _Model:
        """Reload experiments, their nodes and control edges from the store."""
        exps: dict[str, _Experiment] = {}
        outputs: dict[str, Any] = {}
        with self.db.read() as conn:
            rows = conn.execute(select(experiments).where(
                experiments.c.state.not_in(sorted(INACTIVE_EXPERIMENT_STATES - {"stopping"}))
            )).all()
            by_id = {}
            for row in rows:
                try:
                    flow = self._flow(conn, row.flow_name, int(row.flow_version))
                except NotFoundError as exc:
                    log.warning("experiment %s: %s", row.name, exc)
                    continue
                exp = _Experiment(row.name, int(row.id), row.state, float(row.created_at),
                                  flow, {})
                exps[row.name] = exp
                by_id[int(row.id)] = exp
            if exps:
                parents = {r.name: r.parent for r in conn.execute(
                    select(experiments.c.name, experiments.c.parent))}
                for exp in exps.values():
                    exp.chain = scope_chain(exp.name, parents)
            if by_id:
                members = conn.execute(
                    select(experiment_nodes.c.experiment_id, experiment_nodes.c.node_name,
                           experiment_nodes.c.instance_id, experiment_nodes.c.shared_from,
                           node_instances.c.params, node_instances.c.upstream,
                           node_instances.c.output)
                    .join(node_instances,
                          node_instances.c.id == experiment_nodes.c.instance_id)
                    .where(experiment_nodes.c.experiment_id.in_(list(by_id)))
                ).all()
                for m in members:
                    exp = by_id[int(m.experiment_id)]
                    exp.members[m.node_name] = _Member(
                        m.node_name, m.instance_id, m.shared_from,
                        {str(k): str(v) for k, v in dict(m.params or {}).items()},
                        dict(m.upstream or {}), m.output)
                    outputs[m.instance_id] = m.output
        model = _Model(exps, {}, {}, {}, [], outputs)
        for exp in exps.values():
            for node in exp.flow:
                if not exp.runs_here(node.name):
                    continue
                for edge in node.triggers:
                    if edge.trigger is Trigger.PERIODIC:
                        model.periodic.append((exp.name, edge))
                    elif edge.trigger is Trigger.EVENT and edge.event_key:
                        for key in subscribed_keys(edge.event_key, exp.chain):
                            model.by_event.setdefault(key, []).append((exp.name, edge))
                    elif edge.source and edge.source in exp.flow:
                        owner = exp.owner(edge.source)
                        if edge.trigger is Trigger.AFTER and edge.schedule and \
                                exp.flow[edge.source].is_stream:
                            model.by_watermark.setdefault(
                                watermark_key(owner, edge.source), []).append((exp.name, edge))
                        else:
                            model.by_status.setdefault(
                                status_key(owner, edge.source), []).append((exp.name, edge))
        self._model = model
        self._model_at = time.monotonic()
        return model

    def _target(self, exp: _Experiment, node: str, *, trigger_id: int | None = None,
                edge: str = "", occurrence: str = "", conn: Connection | None = None
                ) -> NodeTarget:
        member = exp.members.get(node)
        spec = exp.flow[node]
        outputs = self._model.outputs if self._model else {}
        upstream = member.upstream if member else {}
        return NodeTarget(
            experiment=exp.name,
            name=node,
            spec=spec,
            instance_id=member.instance_id if member else f"{exp.name}.{node}",
            params=member.params if member and member.params else spec.param_dict,
            inputs={name: outputs.get(inst) for name, inst in upstream.items()},
            output=member.output if member else None,
            flow=exp.flow.name,
            flow_version=int(exp.flow.version or 0),
            trigger_id=trigger_id,
            edge=edge,
            occurrence=occurrence,
            payload=self._payload(exp, node, edge, occurrence, conn) if edge else {},
        )

    def _payload(self, exp: _Experiment, node: str, edge: str, occurrence: str,
                 conn: Connection | None) -> dict[str, Any]:
        """What fired a trigger, from its edge and occurrence (so a re-driven trigger gets
        the same payload)."""
        control = next((e for e in exp.flow[node].triggers if edge_id(e) == edge), None)
        if occurrence.startswith("wm") and control is not None and control.schedule:
            end = int(occurrence[2:])
            size = int((parse_interval(control.schedule) or 0) * 1000)
            return {"window_start": end - size, "window_end": end, "source": control.source}
        parsed = parse_occurrence(occurrence, control.event_key) \
            if control is not None and control.event_key else None
        if parsed is not None:
            key, version = parsed
            event = get_event(conn, key, version) if conn is not None else \
                get_event(self.db, key, version)
            return {"event": {"key": key, "version": version,
                              "value": event.value if event else None}}
        if occurrence.startswith("run") and control is not None:
            return {"source": control.source, "run": int(occurrence[3:])}
        if occurrence.startswith("t") and control is not None:
            return {"tick": float(occurrence[1:])}
        return {}

    # ------------------------------------------------------------------ events → triggers
    def _on_status(self, event: Event, state: dict[str, Any],
                   planned: list[_Planned], model: _Model) -> None:
        kind, attempt, run = parse_status(event.value)
        if kind is None:
            return
        runs = state["runs"]
        current = runs.get(event.key) or {"n": None, "run": None, "terminal": True, "seen": []}
        n = current["n"]  # None: no run seen yet
        seen = list(current.get("seen", []))
        if attempt is not None:  # exact: attempts grow
            if n is not None and attempt < n:
                return  # a stale event of an older run
            new_run = n is None or attempt > n
            number = attempt
        elif run is not None:  # an opaque run identity (a Flink job id)
            if run != current["run"] and run in seen:
                return  # a stale event of an older run
            new_run = n is None or run != current["run"]
            number = (n or 0) + 1 if new_run else n
        else:  # a bare state: a run begins at "running" after an ended run
            new_run = n is None or (kind == RUNNING and bool(current["terminal"]))
            number = (n or 0) + 1 if new_run else n
        if not new_run:
            if current["terminal"] or kind == RUNNING:
                return  # duplicate, or late news of a run that already ended
            current = {**current, "terminal": True}
        else:
            if run is not None:
                seen = [*seen, run][-20:]
            current = {"n": number, "run": run, "terminal": kind in TERMINAL, "seen": seen}
        runs[event.key] = current
        for exp_name, edge in model.by_status.get(event.key, ()):
            exp = model.experiments.get(exp_name)
            if exp is None or not exp.active or edge.source is None:
                continue
            source = exp.flow[edge.source]
            if edge.trigger is Trigger.STOP_AFTER:
                fires = kind in TERMINAL
            elif source.is_stream:
                fires = kind == RUNNING
            else:
                fires = kind == FINISHED or (kind == FAILED and edge.on_failure)
            if fires:
                planned.append(_Planned(exp_name, edge.target, edge_id(edge),
                                        f"run{number}", str(edge.action)))

    def _on_watermark(self, event: Event, state: dict[str, Any],
                      planned: list[_Planned], model: _Model) -> None:
        ms = parse_watermark(event.value)
        if ms is None:
            return
        marks = state["watermarks"]
        previous = marks.get(event.key)
        if previous is not None and ms <= int(previous):
            return  # not an advance (duplicate or out of order)
        marks[event.key] = ms
        if previous is None:
            return  # the baseline
        for exp_name, edge in model.by_watermark.get(event.key, ()):
            exp = model.experiments.get(exp_name)
            if exp is None or not exp.active or not edge.schedule:
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
                planned.append(_Planned(exp_name, edge.target, edge_id(edge),
                                        f"wm{boundary}", str(edge.action)))

    def _on_user_event(self, event: Event, conn: Connection, planned: list[_Planned],
                       model: _Model) -> None:
        watchers = model.by_event.get(event.key)
        if not watchers:
            return
        previous: Any = None
        previous_loaded = False
        for exp_name, edge in watchers:
            exp = model.experiments.get(exp_name)
            if exp is None or not exp.active or event.created_at < exp.created_at:
                continue
            if not in_scope(event.key, event.value, exp.chain):
                continue  # a model version of another experiment's line
            if edge.condition == "changed" and not previous_loaded and event.version > 1:
                before = get_event(conn, event.key, event.version - 1)
                previous, previous_loaded = (before.value if before else None), True
            try:
                holds = condition_holds(edge.condition, value=event.value,
                                        version=event.version, previous=previous, key=event.key)
            except Exception as exc:  # a broken condition must not stop the scheduler
                log.warning("experiment %s node %s: condition %r failed on %s v%d: %s",
                            exp_name, edge.target, edge.condition, event.key, event.version, exc)
                holds = False
            if holds:
                planned.append(_Planned(exp_name, edge.target, edge_id(edge),
                                        event_occurrence(edge.event_key or event.key,
                                                         event.key, event.version),
                                        str(edge.action)))

    def _on_control(self, event: Event, planned: list[_Planned], stops: list[str],
                    model: _Model) -> None:
        exp = model.experiments.get(event.key[len("control/"):])
        if exp is None:
            log.info("%s: no such active experiment; ignored", event.key)
            return
        value = event.value if isinstance(event.value, dict) else {"action": event.value}
        action = str(value.get("action", "")).lower()
        node = value.get("node")
        occurrence = f"v{event.version}"
        if node is not None:
            if not exp.active or node not in exp.flow or not exp.runs_here(str(node)):
                log.warning("%s: cannot %s node %r", event.key, action, node)
                return
            if action in ("start", "restart", "stop"):
                planned.append(_Planned(exp.name, str(node), f"control:{action}", occurrence,
                                        action))
            return
        if action == "start" and exp.active:
            for name in exp.flow.topological():
                if exp.runs_here(name) and _starts_on_launch(exp.flow[name]):
                    planned.append(_Planned(exp.name, name, CONTROL_START_EXPERIMENT,
                                            occurrence, "start"))
        elif action == "stop" and exp.state != "stopped":
            for name in reversed(exp.flow.topological()):
                if exp.runs_here(name):
                    planned.append(_Planned(exp.name, name, CONTROL_STOP_EXPERIMENT,
                                            occurrence, "stop"))
            exp.state = "stopping"  # no new triggers for it from here on
            stops.append(exp.name)
        else:
            log.warning("%s: unknown request %r", event.key, event.value)

    def _on_ticks(self, now: float, state: dict[str, Any], planned: list[_Planned],
                  model: _Model) -> bool:
        """Plan periodic triggers that are due; True when the tick state changed."""
        ticks = state["ticks"]
        changed = False
        for exp_name, edge in model.periodic:
            exp = model.experiments.get(exp_name)
            if exp is None or not exp.active or not edge.schedule:
                continue
            key = f"{exp_name}|{edge.target}|{edge_id(edge)}"
            last = ticks.get(key)
            if last is None:
                ticks[key] = now  # the anchor: the first tick is one period from now
                changed = True
                continue
            due = _last_due_tick(edge.schedule, float(last), now)
            if due is not None:
                ticks[key] = due
                changed = True
                planned.append(_Planned(exp_name, edge.target, edge_id(edge),
                                        f"t{due:.3f}", str(edge.action)))
        return changed

    def next_tick_in(self, now: float) -> float:
        """Seconds until the next periodic tick (inf when there is none)."""
        model = self._model
        if model is None:
            return math.inf
        best = math.inf
        for exp_name, edge in model.periodic:
            exp = model.experiments.get(exp_name)
            if exp is None or not exp.active or not edge.schedule:
                continue
            key = f"{exp_name}|{edge.target}|{edge_id(edge)}"
            last = self._state["ticks"].get(key)
            if last is None:
                return 0.0
            best = min(best, _next_tick(edge.schedule, float(last)) - now)
        return max(0.0, best)

    # ------------------------------------------------------------------ one step
    def step(self, wait: float = 0.0) -> int:
        """Read new events (waiting up to ``wait`` seconds for one), commit the triggers
        they and the clock cause with the cursor, then carry out pending triggers.
        Returns the number of events read."""
        for watcher in self._watchers:  # e.g. registry changes → model events, read below
            try:
                watcher.poll()
            except Exception as exc:
                log.warning("%s failed: %s", type(watcher).__name__, exc)
        batch = self._listener.poll(timeout=wait)
        model = self._model
        if batch or model is None or time.monotonic() - self._model_at > 1.0:
            model = self.refresh()
        state = copy.deepcopy(self._state)
        planned: list[_Planned] = []
        stops: list[str] = []
        urgent = False
        if batch:
            with self.db.read() as conn:
                for event in batch:
                    self._apply(event, conn, state, planned, stops, model)
        urgent |= self._on_ticks(self.clock(), state, planned, model)
        cursor = self._listener.last_id
        if planned or stops or urgent or (
                cursor != self._persisted_cursor
                and time.monotonic() - self._persisted_at > 1.0):
            try:
                self._commit(planned, stops, state, cursor, model)
            except Exception:
                # Back to what is persisted: the events are read and applied again.
                self._state = copy.deepcopy(self._saved_state)
                self._listener.seek(self._persisted_cursor)
                self._model = None
                raise
            self._state = state
            self._saved_state = copy.deepcopy(state)
            self._persisted_cursor = cursor
            self._persisted_at = time.monotonic()
            self._drive_due |= bool(planned or stops)
        else:
            self._state = state  # only cursor/derived state; replaying it is harmless
        if self._drive_due or self._inflight or (self._waiting and (
                batch or time.monotonic() - self._driven_at > 1.0)):
            self._drive()
        if time.monotonic() - self._maintained > 2.0:
            self._maintain()
        return len(batch)

    def _apply(self, event: Event, conn: Connection, state: dict[str, Any],
               planned: list[_Planned], stops: list[str], model: _Model) -> None:
        """Apply one event to the rule state, planning the triggers it causes.

        Deterministic given the state and the model, so replaying events after a crash
        (from the persisted cursor and state) plans the same triggers, which the trigger
        log's unique key then ignores."""
        key = event.key
        if key.startswith("status/"):
            self._on_status(event, state, planned, model)
        elif key.startswith("watermark/"):
            self._on_watermark(event, state, planned, model)
        elif key.startswith("control/"):
            self._on_control(event, planned, stops, model)
        self._on_user_event(event, conn, planned, model)

    def _commit(self, planned: list[_Planned], stops: list[str], state: dict[str, Any],
                cursor: int, model: _Model) -> None:
        """One transaction: the new triggers, the stops' cancellations, the cursor."""
        self._prune(state, model)
        now = time.time()
        seen: set[tuple[str, str, str, str]] = set()
        with self.db.write() as conn:
            if conn.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as dialect_insert
            else:
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            for p in planned:
                ident = (p.experiment, p.node, p.edge, p.occurrence)
                if ident in seen:
                    continue
                seen.add(ident)
                stmt = dialect_insert(trigger_log).values(
                    experiment=p.experiment, node_name=p.node, edge=p.edge[:255],
                    occurrence=p.occurrence, action=p.action, state="pending",
                    created_at=now,
                ).on_conflict_do_nothing(index_elements=[
                    trigger_log.c.experiment, trigger_log.c.node_name, trigger_log.c.edge,
                    trigger_log.c.occurrence])
                if conn.execute(stmt).rowcount:
                    log.info("trigger: %s %s.%s (%s @ %s)", p.action, p.experiment, p.node,
                             p.edge, p.occurrence)
            for name in stops:
                cancelled = conn.execute(
                    update(trigger_log)
                    .where(trigger_log.c.experiment == name, trigger_log.c.state == "pending",
                           trigger_log.c.action.in_(["start", "restart"]))
                    .values(state="cancelled")).rowcount
                has_stops = conn.execute(
                    select(func.count()).select_from(trigger_log)
                    .where(trigger_log.c.experiment == name, trigger_log.c.state == "pending",
                           trigger_log.c.edge == CONTROL_STOP_EXPERIMENT)).scalar_one()
                conn.execute(update(experiments).where(experiments.c.name == name)
                             .values(state="stopping" if has_stops else "stopped",
                                     updated_at=now))
                log.info("experiment %s: stopping (%d pending starts cancelled)", name,
                         cancelled)
            self._save_state(conn, state, cursor)

    def _prune(self, state: dict[str, Any], model: _Model) -> None:
        """Forget rule state of experiments that are gone."""
        names = set(model.experiments)
        for exp in model.experiments.values():
            names.update(m.shared_from for m in exp.members.values() if m.shared_from)
        for part in ("runs", "watermarks"):
            for key in list(state[part]):
                if key.split("/", 2)[1] not in names:
                    del state[part][key]
        for key in list(state["ticks"]):
            if key.split("|", 1)[0] not in names:
                del state["ticks"][key]

    # ------------------------------------------------------------------ carrying out
    def _drive(self) -> None:
        """Carry out pending triggers, oldest first, one at a time per node."""
        self._drive_due = False
        self._waiting = False
        self._driven_at = time.monotonic()
        with self.db.read() as conn:
            pending = conn.execute(select(trigger_log)
                                   .where(trigger_log.c.state == "pending")
                                   .order_by(trigger_log.c.id)).all()
        pending_ids = {int(r.id) for r in pending}
        for tid in list(self._inflight):
            if tid not in pending_ids:
                del self._inflight[tid]
        model = self._model or self.refresh()
        busy: set[tuple[str, str]] = set()
        for row in pending:
            here = (row.experiment, row.node_name)
            if here in busy and row.action != "stop":
                continue
            launched = self._inflight.get(int(row.id))
            if launched is not None and time.monotonic() - launched < self.claim_grace:
                busy.add(here)  # its runner has not claimed it yet
                continue
            if launched is not None:
                log.warning("trigger %d was not claimed within %.0f s; launching it again",
                            row.id, self.claim_grace)
            exp = model.experiments.get(row.experiment)
            if exp is None or row.node_name not in exp.flow:
                self._finish(int(row.id), "cancelled",
                             f"experiment {row.experiment} is not active")
                continue
            if row.action != "stop" and not exp.active:
                self._finish(int(row.id), "cancelled", f"experiment {exp.name} is {exp.state}")
                continue
            try:
                with self.db.read() as conn:
                    target = self._target(exp, row.node_name, trigger_id=int(row.id),
                                          edge=row.edge, occurrence=row.occurrence, conn=conn)
                if not self._carry_out(row, exp, target):
                    busy.add(here)
                    self._waiting = True
            except (SQLAlchemyError, OSError) as exc:  # transient: the trigger stays pending
                log.warning("trigger %d (%s %s.%s) will be retried: %s", row.id, row.action,
                            row.experiment, row.node_name, exc)
                busy.add(here)
                self._waiting = True
            except Exception as exc:
                log.error("trigger %d (%s %s.%s) failed: %s", row.id, row.action,
                          row.experiment, row.node_name, exc,
                          exc_info=not isinstance(exc, UltronError))
                # Recorded on the trigger only: status events belong to the node's runs, and
                # a made-up one would confuse their accounting.
                self._finish(int(row.id), "failed", str(exc))
            if row.edge == CONTROL_STOP_EXPERIMENT:
                self._maybe_stopped(exp.name)

    def _carry_out(self, row: Any, exp: _Experiment, target: NodeTarget) -> bool:
        """Carry out one trigger; False when it must wait (its node is busy)."""
        name = f"{exp.name}.{target.name}"
        if row.action == "stop":
            current = self.actions.state(exp.name, target)
            if current == RUNNING:
                log.info("stopping %s (%s)", name, row.edge)
                self.actions.stop(exp.name, target)
                self._await_not_running(exp.name, target)
            else:
                log.info("%s is %s: nothing to stop", name, current or "not started")
            self._finish(int(row.id), "done")
            return True
        current = self.actions.state(exp.name, target)
        if row.action == "start":
            if row.edge == CONTROL_START_EXPERIMENT and current is not None:
                log.info("%s already started (%s); launch leaves it", name, current)
                self._finish(int(row.id), "done")
                return True
            if current == RUNNING:
                if target.spec.is_stream:
                    log.info("%s is already running", name)
                    self._finish(int(row.id), "done")
                    return True
                return False  # a batch run is under way: start again when it ends
        claims = claims_triggers(self.actions, target)
        log.info("%s %s (%s @ %s)", row.action, name, row.edge, row.occurrence)
        if row.action == "restart":
            self.actions.restart(exp.name, target)
        else:
            self.actions.start(exp.name, target)
        if claims:
            self._inflight[int(row.id)] = time.monotonic()
            return False
        self._finish(int(row.id), "done")
        return True

    def _await_not_running(self, experiment: str, target: NodeTarget) -> None:
        deadline = time.monotonic() + self.stop_timeout
        while self.actions.state(experiment, target) == RUNNING:
            if time.monotonic() > deadline:
                log.warning("%s.%s still runs %.0f s after stop", experiment, target.name,
                            self.stop_timeout)
                return
            time.sleep(0.05)

    def _finish(self, trigger_id: int, state: str, reason: str = "") -> None:
        if reason:
            log.info("trigger %d %s: %s", trigger_id, state, reason)
        with self.db.write() as conn:
            _set_trigger(conn, trigger_id, state)

    def _maybe_stopped(self, experiment: str) -> None:
        with self.db.write() as conn:
            left = conn.execute(
                select(func.count()).select_from(trigger_log)
                .where(trigger_log.c.experiment == experiment, trigger_log.c.state == "pending",
                       trigger_log.c.edge == CONTROL_STOP_EXPERIMENT)).scalar_one()
            if not left:
                conn.execute(update(experiments)
                             .where(experiments.c.name == experiment,
                                    experiments.c.state == "stopping")
                             .values(state="stopped", updated_at=time.time()))
        if not left:
            log.info("experiment %s: stopped", experiment)
            self._model = None

    def _maintain(self) -> None:
        self._maintained = time.monotonic()
        maintain = getattr(self.actions, "maintain", None)
        if callable(maintain):
            try:
                maintain()
            except Exception:
                log.exception("runner maintenance failed")

    # ------------------------------------------------------------------ loop
    def run(self, stop: threading.Event | None = None) -> None:
        """Step until ``stop`` is set; store errors are logged and retried."""
        stop = stop or threading.Event()
        while not stop.is_set():
            wait = min(0.5, self.next_tick_in(self.clock()))
            if self._inflight:
                wait = min(wait, 0.2)
            if self._watchers:
                wait = min(wait, WATCH_TICK)
            try:
                self.step(wait=wait)
            except Exception:
                log.exception("scheduler step failed; retrying")
                stop.wait(1.0)

    def close(self) -> None:
        """Free the scheduler's connections (running nodes keep running)."""
        self._listener.close()
        for watcher in self._watchers:
            close = getattr(watcher, "close", None)
            if callable(close):
                close()


def _is_interval(schedule: str) -> float | None:
    seconds = parse_interval(schedule)
    return seconds if seconds and seconds > 0 else None


def _next_tick(schedule: str, after: float) -> float:
    interval = _is_interval(schedule)
    if interval is not None:
        return after + interval
    from croniter import croniter  # lazy: only periodic edges need it

    start = datetime.fromtimestamp(after).astimezone()
    return float(croniter(schedule, start).get_next(float))


def _last_due_tick(schedule: str, last: float, now: float) -> float | None:
    """The latest tick after ``last`` and at or before ``now`` (missed ticks coalesce)."""
    interval = _is_interval(schedule)
    if interval is not None:
        periods = math.floor((now - last) / interval)
        return last + periods * interval if periods >= 1 else None
    tick = _next_tick(schedule, last)
    if tick > now:
        return None
    from croniter import croniter

    # get_prev is strictly before its start: start just after now to include now itself.
    start = datetime.fromtimestamp(math.floor(now) + 1).astimezone()
    previous = float(croniter(schedule, start).get_prev(float))
    return max(tick, previous)


# ----------------------------------------------------------------------------- Python nodes
class PythonRunner:
    """Runs Python nodes as subprocesses: :class:`NodeActions` for ``python`` nodes.

    Each run is a small *runner* process (``python -m ultron_nb.services.scheduler
    run-node SPEC``, in its own session, so it outlives the scheduler) that claims the
    trigger, records a ``jobs`` row (engine ``python``, attempt, pid) and the ``running``
    status event in one transaction, runs the node's code in a child process with the log
    ``<home>/logs/<experiment>/<node>-<attempt>.log``, then records the exit code and the end
    state (``finished``, ``failed``, or ``stopped`` when stopped and not finished) with its
    status event, again in one transaction.
    """

    claims_triggers = True
    #: The ``jobs.engine`` of its runs; :func:`_exec_node` runs the node by it.
    engine = "python"

    def __init__(self, db: Database, settings: Settings, *, python: str | None = None,
                 stop_grace: float = 10.0):
        self.db = db
        self.settings = settings
        self.python = python or sys.executable
        self.stop_grace = stop_grace
        self._children: list[subprocess.Popen[bytes]] = []

    # -- NodeActions
    def start(self, experiment: str, node: NodeTarget) -> None:
        if node.trigger_id is None:
            raise EngineError(f"{self.engine} node {node.name!r}: a start needs a trigger")
        self.check(node)
        home = self.settings.home
        spec = {  # the store URL (maybe with a password) goes by environment, not on disk
            "engine": self.engine,
            "home": str(home),
            "cwd": str(home.parent),
            "python": self.python,
            "experiment": experiment,
            "node": node.name,
            "instance_id": node.instance_id,
            "flow": node.flow,
            "flow_version": node.flow_version,
            "source": node.spec.body,
            "function": node.spec.function,
            "params": node.params,
            "inputs": node.inputs,
            "output": node.output,
            "trigger": {"id": node.trigger_id, "edge": node.edge,
                        "occurrence": node.occurrence, **node.payload},
            "stop_grace": self.stop_grace,
        }
        runs = home / "runs" / experiment
        runs.mkdir(parents=True, exist_ok=True)
        path = runs / f"{node.name}-{node.trigger_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec, default=str))
        tmp.replace(path)
        logs = home / "logs" / experiment
        logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, ULTRON_HOME=str(home), ULTRON_DB_URL=self.db.url,
                   PYTHONUNBUFFERED="1")
        with open(logs / "runner.log", "ab") as err:
            try:
                child = subprocess.Popen(
                    [self.python, "-m", "ultron_nb.services.scheduler", "run-node", str(path)],
                    cwd=str(home.parent), env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                )
            except OSError as exc:
                raise EngineError(f"{self.engine} node {experiment}.{node.name}: cannot "
                                  f"start {self.python}: {exc}") from None
        self._children.append(child)
        log.info("%s node %s.%s: runner pid %d (trigger %d)", self.engine, experiment,
                 node.name, child.pid, node.trigger_id)

    def check(self, node: NodeTarget) -> None:
        """Refuse a node this runner cannot run (before anything is started)."""
        if not node.spec.function:
            raise EngineError(f"python node {node.name!r} names no function to call")

    def restart(self, experiment: str, node: NodeTarget) -> None:
        if self.state(experiment, node) == RUNNING:
            self.stop(experiment, node)
            deadline = time.monotonic() + self.stop_grace + 10
            while self.state(experiment, node) == RUNNING and time.monotonic() < deadline:
                time.sleep(0.05)
        self.start(experiment, node)

    def stop(self, experiment: str, node: NodeTarget) -> None:
        for row in self._running_jobs(node.instance_id):
            pid = int(str(row.external_id).split(":")[0])
            if not process_alive(row.external_id):
                continue
            try:
                os.killpg(pid, signal.SIGTERM)  # the runner leads its own process group
                log.info("%s node %s.%s: SIGTERM to runner %d", self.engine, experiment,
                         node.name, pid)
            except ProcessLookupError:
                pass

    def state(self, experiment: str, node: NodeTarget) -> str | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(jobs.c.state, jobs.c.external_id)
                .where(jobs.c.instance_id == node.instance_id, jobs.c.engine == self.engine)
                .order_by(jobs.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        if row.state == RUNNING and not process_alive(row.external_id):
            return FAILED  # the runner vanished; maintain() records it
        return str(row.state)

    # -- housekeeping
    def _running_jobs(self, instance_id: str | None = None) -> list[Any]:
        query = select(jobs.c.id, jobs.c.instance_id, jobs.c.external_id, jobs.c.attempt,
                       jobs.c.target).where(jobs.c.engine == self.engine,
                                            jobs.c.state == RUNNING)
        if instance_id is not None:
            query = query.where(jobs.c.instance_id == instance_id)
        with self.db.read() as conn:
            return list(conn.execute(query).all())

    def maintain(self) -> None:
        """Reap finished runner processes; record runs whose runner vanished as failed."""
        self._children = [c for c in self._children if c.poll() is None]
        for row in self._running_jobs():
            if process_alive(row.external_id):
                continue
            with self.db.write() as conn:
                changed = conn.execute(
                    update(jobs).where(jobs.c.id == row.id, jobs.c.state == RUNNING)
                    .values(state=FAILED, ended_at=time.time(),
                            error="the runner process vanished")).rowcount
                if not changed:
                    continue
                node = conn.execute(select(node_instances.c.node_name)
                                    .where(node_instances.c.id == row.instance_id)).scalar()
                experiment = str(row.target).removeprefix(f"{self.engine}:")
                if node:
                    append_event(conn, status_key(experiment, node),
                                 {"state": FAILED, "attempt": int(row.attempt),
                                  "error": "the runner process vanished"}, sender=SENDER)
            log.warning("%s job %d (%s) lost its runner: recorded as failed", self.engine,
                        row.id, row.instance_id)

    def close(self) -> None:
        self.maintain()


def _run_node(spec_path: str) -> int:
    """The runner process of one node run (see :class:`PythonRunner`)."""
    spec = json.loads(Path(spec_path).read_text())
    db = open_database(os.environ["ULTRON_DB_URL"])
    experiment, node = spec["experiment"], spec["node"]
    engine = str(spec.get("engine", "python"))
    trigger_id = int(spec["trigger"]["id"])
    key = status_key(experiment, node)
    stop_requested = threading.Event()
    stop_at: list[float] = []

    def on_term(_signo: int, _frame: Any) -> None:
        if not stop_requested.is_set():
            stop_at.append(time.monotonic())
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    me = process_identity(os.getpid())
    with db.write() as conn:
        if not claim_trigger(conn, trigger_id):
            state = conn.execute(select(trigger_log.c.state)
                                 .where(trigger_log.c.id == trigger_id)).scalar()
            logging.getLogger(__name__).info(
                "trigger %d of %s.%s is %s: not running it", trigger_id, experiment, node, state)
            return 0
        attempt = 1 + int(conn.execute(
            select(func.coalesce(func.max(jobs.c.attempt), 0))
            .where(jobs.c.instance_id == spec["instance_id"])).scalar_one())
        log_path = Path(spec["home"]) / "logs" / experiment / f"{node}-{attempt}.log"
        job_id = conn.execute(insert(jobs).values(
            instance_id=spec["instance_id"], engine=engine, external_id=me,
            target=f"{engine}:{experiment}", state=RUNNING, attempt=attempt,
            started_at=time.time(),
        ).returning(jobs.c.id)).scalar_one()
        append_event(conn, key, {"state": RUNNING, "attempt": attempt, "trigger": trigger_id,
                                 "pid": os.getpid(), "log": str(log_path)},
                     sender=RUNNER_SENDER)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    code: int | None = None
    with open(log_path, "ab") as out:
        out.write(f"# {experiment}.{node} attempt {attempt} (trigger {trigger_id}: "
                  f"{spec['trigger'].get('edge')} @ {spec['trigger'].get('occurrence')})\n"
                  .encode())
        out.flush()
        if not stop_requested.is_set():
            child = subprocess.Popen(
                [spec["python"], "-m", "ultron_nb.services.scheduler", "exec-node", spec_path,
                 str(attempt), str(log_path)],
                cwd=spec["cwd"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
            grace = float(spec.get("stop_grace", 10.0))
            while True:
                try:
                    code = child.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if stop_requested.is_set() and child.poll() is None:
                        if stop_at and time.monotonic() - stop_at[0] > grace:
                            child.kill()
                        else:
                            with contextlib.suppress(ProcessLookupError):
                                child.send_signal(signal.SIGTERM)
        out.write(f"# exit code {code}\n".encode())
    if code == 0:
        state, error = FINISHED, None
    elif stop_requested.is_set():
        state, error = STOPPED, f"stopped (exit code {code})"
    else:
        state, error = FAILED, f"exit code {code}: {_last_error_line(log_path)}"
    ended = time.time()
    for retry in range(60):  # the run happened: its end must be recorded, store outage or not
        try:
            with db.write() as conn:
                conn.execute(update(jobs).where(jobs.c.id == job_id)
                             .values(state=state, ended_at=ended, error=error))
                append_event(conn, key, {"state": state, "attempt": attempt,
                                         "trigger": trigger_id, "exit_code": code,
                                         "log": str(log_path)}, sender=RUNNER_SENDER)
            return 0
        except SQLAlchemyError as exc:
            logging.getLogger(__name__).warning(
                "cannot record the end of %s.%s yet (%s); retrying", experiment, node, exc)
            time.sleep(min(2.0**retry, 10.0))
    return 1


def _last_error_line(log_path: Path) -> str:
    try:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith("# ")]
    except OSError:
        return ""
    return lines[-1][:500] if lines else ""


@dataclass
class NodeContext:
    """What a Python node's function receives (when it takes an argument).

    ``params``: the node's parameters; ``inputs``: upstream node → its output as recorded
    (``input_paths`` has the ``path`` of each when there is one); ``output_path``: where this
    node may write (created); ``trigger``: what fired the run (``edge``, ``occurrence`` and,
    for a watermark boundary, ``window_start``/``window_end`` in ms; for an event, ``event``).
    """

    experiment: str
    node: str
    instance_id: str
    attempt: int
    params: dict[str, str]
    inputs: dict[str, Any]
    output: Any
    trigger: dict[str, Any]
    home: Path
    log_path: Path
    db_url: str
    flow: str = ""
    flow_version: int = 0

    @property
    def input_paths(self) -> dict[str, str]:
        return {name: str(out["path"]) for name, out in self.inputs.items()
                if isinstance(out, dict) and out.get("path")}

    @property
    def output_path(self) -> Path:
        recorded = self.output.get("path") if isinstance(self.output, dict) else None
        path = Path(recorded) if recorded else self.home / "data" / self.instance_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def input_frame(self, name: str) -> pd.DataFrame:
        """Upstream ``name``'s rows as a pandas DataFrame, typed by its declared columns. A
        Flink node's output includes the rows of files still being written, so a run fired
        by a watermark sees every row up to it."""
        from ultron_nb.services.duckdb_nodes import input_frame

        if name not in self.inputs:
            raise NotFoundError(f"node {self.node!r} has no input {name!r} (inputs: "
                                f"{', '.join(sorted(self.inputs)) or 'none'})")
        return input_frame(name, self.inputs[name], what=f"node {self.node!r}")

    @property
    def window(self) -> tuple[int, int] | None:
        """(start, end) epoch ms of the event-time window of a boundary trigger."""
        if "window_start" in self.trigger:
            return int(self.trigger["window_start"]), int(self.trigger["window_end"])
        return None

    def send_event(self, key: str, value: Any, *, namespace: str = DEFAULT_NAMESPACE) -> Event:
        """Send an event from this node (sender ``<experiment>/<node>``)."""
        return _send_event(open_database(self.db_url), key, value, namespace=namespace,
                           sender=f"{self.experiment}/{self.node}"[:128])

    def log_model(self, model: Any = None, *, name: str, **kwargs: Any) -> Any:
        """Record an MLflow run and register ``model`` as a new version of ``name`` with
        this run's lineage; see :func:`ultron_nb.services.models.log_model`."""
        from ultron_nb.services.models import log_model

        return log_model(self, model, name=name, **kwargs)

    @property
    def models(self) -> Any:
        """The model center in this experiment's alias scope (promote, resolve, load)."""
        from ultron_nb.services.models import node_center

        return node_center(self)


def _exec_node(spec_path: str, attempt: int, log_path: str) -> int:
    """The child process that runs the node: a Python node's own code, or a DuckDB query."""
    from ultron_nb.flow.sqltext import substitute

    spec = json.loads(Path(spec_path).read_text())
    ctx = NodeContext(
        experiment=spec["experiment"], node=spec["node"], instance_id=spec["instance_id"],
        attempt=attempt, params=dict(spec["params"]), inputs=dict(spec["inputs"] or {}),
        output=spec["output"], trigger=dict(spec["trigger"]), home=Path(spec["home"]),
        log_path=Path(log_path), db_url=os.environ.get("ULTRON_DB_URL", ""),
        flow=str(spec.get("flow", "")), flow_version=int(spec.get("flow_version") or 0),
    )
    if spec.get("engine") == "duckdb":
        from ultron_nb.services.duckdb_nodes import execute

        execute(ctx, spec["source"])
        return 0
    source = substitute(spec["source"], ctx.params)
    namespace: dict[str, Any] = {"__name__": f"ultron_node_{spec['node']}"}
    code = compile(source, f"<ultron node {spec['experiment']}.{spec['node']}>", "exec")
    exec(code, namespace)  # the node's own code, as the user wrote it
    fn = namespace[spec["function"]]
    takes_context = bool(inspect.signature(fn).parameters)
    result = fn(ctx) if takes_context else fn()
    if inspect.iscoroutine(result):
        import asyncio

        result = asyncio.run(result)
    if result is not None:
        logging.getLogger(__name__).info("result: %r", result)
    return 0


# ----------------------------------------------------------------------------- the daemon
def _paths(settings: Settings) -> tuple[Path, Path, Path]:
    home = settings.home
    return home / "scheduler.pid", home / "scheduler.lock", home / "logs" / "scheduler.log"


def daemon_status(settings: Settings) -> int | None:
    """The pid of the scheduler running for ``settings.home``, or None."""
    import fcntl

    pid_file, lock_file, _ = _paths(settings)
    if not lock_file.exists():
        return None
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(pid_file.read_text().strip())
            except (OSError, ValueError):
                return -1  # running, pid file not written yet
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def start_daemon(settings: Settings, *, timeout: float = 30.0,
                 env: Mapping[str, str] | None = None,
                 args: Sequence[str] = ()) -> int:
    """Start the scheduler daemon for ``settings`` (if none runs); its pid.

    The daemon logs to ``<home>/logs/scheduler.log`` and outlives the caller."""
    running = daemon_status(settings)
    if running and running > 0:
        return running
    _, _, log_file = _paths(settings)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ultron_nb.services.scheduler",
               "--home", str(settings.home), *args]
    environment = dict(os.environ if env is None else env)
    environment["ULTRON_DB_URL"] = settings.database_url  # not on the command line: ps shows it
    if settings.mlflow_uri:  # the registry it watches, and its Python nodes use
        environment["ULTRON_MLFLOW_URI"] = settings.mlflow_uri
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, cwd=str(settings.home.parent),
                                env=environment)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace").splitlines()[-5:]
            raise UltronError("the scheduler did not start: " + " | ".join(tail))
        if daemon_status(settings) == proc.pid:
            return proc.pid
        time.sleep(0.05)
    raise UltronError(f"the scheduler did not start within {timeout:.0f} s (see {log_file})")


def stop_daemon(settings: Settings, *, timeout: float = 30.0) -> bool:
    """Stop the scheduler of ``settings`` (SIGTERM, then wait); False if none ran."""
    pid = daemon_status(settings)
    if not pid or pid < 0:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while daemon_status(settings) is not None:
        if time.monotonic() > deadline:
            raise UltronError(f"the scheduler (pid {pid}) did not stop within {timeout:.0f} s")
        time.sleep(0.05)
    return True


def run_forever(settings: Settings, actions: NodeActions | None = None, *,
                stop: threading.Event | None = None) -> None:
    """Run the scheduler daemon in this process until SIGTERM/SIGINT (or ``stop``).

    Holds ``<home>/scheduler.lock`` (and on PostgreSQL a session advisory lock), so one
    scheduler runs per store; writes ``<home>/scheduler.pid``."""
    import fcntl

    settings.home.mkdir(parents=True, exist_ok=True)
    pid_file, lock_file, _ = _paths(settings)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UltronError(f"a scheduler already runs for {settings.home} "
                          f"(pid {daemon_status(settings)})") from None
    db = open_database(settings.database_url)
    store_lock = None
    scheduler = None
    try:
        if not db.is_sqlite:
            store_lock = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            got = store_lock.exec_driver_sql(
                f"SELECT pg_try_advisory_lock({SCHEDULER_LOCK_ID})").scalar()
            if not got:
                raise UltronError(f"a scheduler already runs for the store {db.safe_url}")
        tmp = pid_file.with_suffix(".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.replace(pid_file)
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            def on_signal(signo: int, _frame: Any) -> None:
                log.info("signal %d: stopping the scheduler", signo)
                stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        scheduler = Scheduler(db, settings, actions or default_actions(db, settings))
        log.info("scheduler %d running for %s", os.getpid(), settings.home)
        scheduler.run(stop)
    finally:
        if scheduler is not None:
            scheduler.close()
            close = getattr(scheduler.actions, "close", None)
            if callable(close):
                close()
        if store_lock is not None:
            store_lock.invalidate()  # closes the session, releasing its advisory lock
            store_lock.close()
        with contextlib.suppress(OSError, ValueError):
            if int(pid_file.read_text().strip()) == os.getpid():
                pid_file.unlink()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        log.info("scheduler %d stopped", os.getpid())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ultron_nb.services.scheduler [--home H] [--db-url U] [--actions M:F]``;
    ``run-node SPEC`` and ``exec-node SPEC ATTEMPT LOG`` are the Python node runner's own."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["run-node"]:
        return _run_node(argv[1])
    if argv[:1] == ["exec-node"]:
        try:
            return _exec_node(argv[1], int(argv[2]), argv[3])
        except Exception:
            traceback.print_exc()
            return 1
    parser = argparse.ArgumentParser(prog="ultron scheduler",
                                     description="Run the control edges of every experiment.")
    parser.add_argument("--home", help="the .ultron directory (default: from the settings)")
    parser.add_argument("--db-url", help="the metadata store URL (default: from the settings)")
    parser.add_argument("--actions", help="module:factory building the node actions, "
                        "called as factory(db, settings) (default: every available engine)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    settings = load_settings(home=args.home, db_url=args.db_url)
    actions = None
    if args.actions:
        db = open_database(settings.database_url)
        actions = load_factory(args.actions)(db, settings)
    try:
        run_forever(settings, actions)
    except UltronError as exc:
        log.error("%s", exc)
        return 1
    return 0


__all__ = [
    "ACTION_FACTORIES",
    "FAILED",
    "FINISHED",
    "INACTIVE_EXPERIMENT_STATES",
    "RUNNING",
    "STOPPED",
    "KindRouter",
    "NodeActions",
    "NodeContext",
    "NodeTarget",
    "PythonRunner",
    "Scheduler",
    "claim_trigger",
    "control_key",
    "daemon_status",
    "default_actions",
    "edge_id",
    "main",
    "request_restart",
    "request_start",
    "request_stop",
    "run_forever",
    "start_daemon",
    "status_key",
    "stop_daemon",
    "watermark_key",
]


if __name__ == "__main__":
    from ultron_nb.services.scheduler import main as _main  # the importable module's main

    sys.exit(_main())
