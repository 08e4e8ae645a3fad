"""The scheduling loop: events in, triggers committed with the cursor, triggers carried out.

Guarantees:

- Exactly one trigger per qualifying event: every trigger has an idempotency key
  ``(experiment, node, edge, occurrence)``, unique in ``trigger_log``, inserted in the same
  transaction that advances the persisted cursor (``scheduler_state``).
- No lost trigger after ``kill -9``: the cursor and the rule state (runs, watermarks, ticks)
  are persisted with the triggers; on restart the scheduler resumes from the cursor and
  re-drives pending triggers. A runner that claims triggers (Python, DuckDB runs) makes each
  trigger run exactly once even if the scheduler dies between launching and recording.
- One owner per start: for other runners (Flink) the scheduler claims a trigger, in a
  transaction that checks the experiment is still active, before it starts the node; a stop
  of the experiment (:mod:`ultron_nb.experiments.lifecycle`) marks it ``stopping`` and holds
  back its pending triggers in one transaction, then waits for claimed ones, so a start and a
  stop never race. The scheduler never stops an experiment's jobs itself.
"""

from __future__ import annotations

import copy
import importlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ultron_nb.config import Settings
from ultron_nb.errors import NotFoundError, StoreError, UltronError
from ultron_nb.events import DEFAULT_NAMESPACE, Event, Listener, get_event
from ultron_nb.events.keys import ACTIVE
from ultron_nb.events.model_keys import scope_chain
from ultron_nb.logs import Repeats
from ultron_nb.runners.base import NodeRunner, RunSpec, TriggerRef
from ultron_nb.runners.registry import Runners
from ultron_nb.scheduler import rules
from ultron_nb.scheduler.rules import CONTROL_START_EXPERIMENT, Model, Planned
from ultron_nb.store import Database
from ultron_nb.store import experiments as repo
from ultron_nb.store import triggers as tlog
from ultron_nb.store.flows import load_flow
from ultron_nb.store.schema import experiment_nodes, experiments, node_instances

log = logging.getLogger(__name__)

STATE_ROW = "scheduler"  # scheduler_state.name of the persisted cursor and rule state
#: What the daemon polls every tick besides the events (``poll() -> events sent``), loaded by
#: module path and made as ``factory(db, settings)``: the model registry's changes.
WATCHERS: dict[str, str] = {"models": "ultron_nb.engines.mlflow.watcher:RegistryWatcher",
                            "quality": "ultron_nb.engines.quality_watcher:QualityWatcher"}
WATCH_TICK = 0.1  # the loop's longest wait while watchers run (seconds)
#: Experiments in these states are forgotten (their rule state pruned).
GONE = ("canceled", "cancelled", "deleted")


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


class Scheduler:
    """Turns events into triggers and carries them out (see the module docstring).

    Drive it with :meth:`run` (until ``stop`` is set) or step by step with :meth:`step`.
    ``clock`` (epoch seconds) is for periodic edges.
    """

    def __init__(self, db: Database, settings: Settings, runners: Runners | None = None, *,
                 poll: float = 0.02, stop_timeout: float = 30.0, claim_grace: float = 60.0,
                 clock: Callable[[], float] = time.time, watchers: list[Any] | None = None):
        self.db = db
        self.settings = settings
        self.runners = runners or Runners.for_store(settings, db)
        self.poll = poll
        self.stop_timeout = stop_timeout
        self.claim_grace = claim_grace
        self.clock = clock
        self._flows: dict[tuple[str, int], Any] = {}
        self._model: Model | None = None
        self._model_at = 0.0
        #: Triggers launched whose runner claims them itself: when, and their node.
        self._inflight: dict[int, tuple[float, tuple[str, str]]] = {}
        self._drive_due = True
        self._waiting = False
        self._driven_at = 0.0
        self._maintained = 0.0
        self._persisted_at = time.monotonic()
        self._repeats = Repeats(log)  # a failure that repeats every second is logged once
        with db.write() as conn:
            released = tlog.release_claims(conn)
            state = tlog.load_state(conn, STATE_ROW)
        if released:
            log.info("%d trigger(s) claimed by a scheduler that died are pending again",
                     released)
        for part in ("runs", "watermarks", "ticks"):
            state.setdefault(part, {})
        self._state = state
        self._persisted_cursor = int(state.get("cursor", 0))
        self._saved_state = copy.deepcopy(state)
        self._listener = Listener(db, None, namespace=DEFAULT_NAMESPACE,
                                  since_id=self._persisted_cursor, poll=poll)
        self._watchers = list(default_watchers(db, settings) if watchers is None else watchers)
        log.info("scheduler on %s resumes after event %d", db.safe_url, self._persisted_cursor)

    @property
    def cursor(self) -> int:
        """The id of the last event whose consequences are committed."""
        return self._persisted_cursor

    # ------------------------------------------------------------------ the model
    def refresh(self) -> Model:
        """Reload experiments (active and stopped), their nodes and edges from the store."""
        exps: dict[str, rules.ExperimentModel] = {}
        outputs: dict[str, Any] = {}
        with self.db.read() as conn:
            rows = conn.execute(select(experiments).where(
                experiments.c.state.not_in(GONE))).all()
            by_id = {}
            for row in rows:
                try:
                    key = (row.flow_name, int(row.flow_version))
                    flow = self._flows.get(key) or load_flow(conn, *key)
                    self._flows[key] = flow
                except NotFoundError as exc:
                    log.warning("experiment %s: %s", row.name, exc)
                    continue
                exp = rules.ExperimentModel(row.name, int(row.id), row.state,
                                            float(row.created_at), flow, {}, row.target)
                exps[row.name] = by_id[int(row.id)] = exp
            if exps:
                parents = repo.parents(conn)
                for exp in exps.values():
                    exp.chain = scope_chain(exp.name, parents)
            if by_id:
                for m in conn.execute(
                    select(experiment_nodes.c.experiment_id, experiment_nodes.c.node_name,
                           experiment_nodes.c.instance_id, experiment_nodes.c.shared_from,
                           node_instances.c.params, node_instances.c.upstream,
                           node_instances.c.output)
                    .join(node_instances, node_instances.c.id == experiment_nodes.c.instance_id)
                    .where(experiment_nodes.c.experiment_id.in_(list(by_id)))
                ):
                    by_id[int(m.experiment_id)].members[m.node_name] = rules.Member(
                        m.node_name, m.instance_id, m.shared_from,
                        {str(k): str(v) for k, v in dict(m.params or {}).items()},
                        dict(m.upstream or {}), m.output)
                    outputs[m.instance_id] = m.output
        self._model = Model(exps, outputs=outputs).index()
        self._model_at = time.monotonic()
        return self._model

    def _spec(self, exp: rules.ExperimentModel, node: str, trigger: TriggerRef | None
              ) -> RunSpec:
        member = exp.members.get(node)
        outputs = self._model.outputs if self._model else {}
        upstream = member.upstream if member else {}
        return RunSpec(
            experiment=exp.name, node=exp.flow[node],
            instance_id=member.instance_id if member else f"{exp.name}.{node}",
            flow=exp.flow.name, flow_version=int(exp.flow.version or 0),
            params=member.params if member and member.params else exp.flow[node].param_dict,
            inputs={name: outputs.get(inst) for name, inst in upstream.items()},
            upstream=dict(upstream), output=(member.output if member else None) or {},
            target=exp.target, trigger=trigger,
        )

    def _event_value(self, key: str, version: int) -> Any:
        event = get_event(self.db, key, version)
        return event.value if event else None

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
        planned: list[Planned] = []
        for event in batch:
            planned.extend(self._apply(event, state, model))
        ticked, urgent = rules.on_ticks(self.clock(), state, model)
        planned.extend(ticked)
        cursor = self._listener.last_id
        if planned or urgent or (cursor != self._persisted_cursor
                                 and time.monotonic() - self._persisted_at > 1.0):
            try:
                self._commit(planned, state, cursor, model)
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
            self._drive_due |= bool(planned)
        else:
            self._state = state  # only cursor/derived state; replaying it is harmless
        if self._drive_due or self._inflight or (self._waiting and (
                batch or time.monotonic() - self._driven_at > 1.0)):
            self._drive()
        if time.monotonic() - self._maintained > 2.0:
            self._maintain()
        return len(batch)

    def _apply(self, event: Event, state: dict[str, Any], model: Model) -> list[Planned]:
        """The triggers one event causes (deterministic given the state and the model)."""
        key = event.key
        planned: list[Planned] = []
        if key.startswith("status/"):
            planned += rules.on_status(event, state, model)
        elif key.startswith("watermark/"):
            planned += rules.on_watermark(event, state, model)
        elif key.startswith("control/"):
            planned += rules.on_control(event, model)
        planned += rules.on_user_event(event, model, self._event_value)
        return planned

    def _commit(self, planned: list[Planned], state: dict[str, Any], cursor: int,
                model: Model) -> None:
        """One transaction: the new triggers and the cursor."""
        keep = set(model.experiments)
        for exp in model.experiments.values():
            keep.update(m.shared_from for m in exp.members.values() if m.shared_from)
        rules.prune(state, keep)
        seen: set[tuple[str, str, str, str]] = set()
        with self.db.write() as conn:
            for p in planned:
                ident = (p.experiment, p.node, p.edge, p.occurrence)
                if ident in seen:
                    continue
                seen.add(ident)
                if tlog.add_trigger(conn, experiment=p.experiment, node=p.node, edge=p.edge,
                                    occurrence=p.occurrence, action=p.action, state=p.state):
                    log.info("trigger: %s %s.%s (%s @ %s)%s", p.action, p.experiment, p.node,
                             p.edge, p.occurrence,
                             " suspended until resume" if p.state != tlog.PENDING else "")
            state["cursor"] = cursor
            tlog.save_state(conn, STATE_ROW, state)

    # ------------------------------------------------------------------ carrying out
    def _drive(self) -> None:
        """Carry out pending triggers, oldest first; the runs of one node in order, at most
        as many at once as its runner allows."""
        self._drive_due = False
        self._waiting = False
        self._driven_at = time.monotonic()
        with self.db.read() as conn:
            pending = tlog.pending(conn)
        pending_ids = {r.id for r in pending}
        for tid in list(self._inflight):
            if tid not in pending_ids:
                del self._inflight[tid]
        model = self._model or self.refresh()
        busy: set[tuple[str, str]] = set()
        for row in pending:
            here = (row.experiment, row.node_name)
            if here in busy and row.action != "stop":
                continue
            launched = self._inflight.get(row.id)
            if launched is not None and time.monotonic() - launched[0] < self.claim_grace:
                continue  # its runner has not claimed it yet (it counts as under way)
            if launched is not None:
                log.warning("trigger %d was not claimed within %.0f s; launching it again",
                            row.id, self.claim_grace)
            exp = model.experiments.get(row.experiment)
            if exp is None or row.node_name not in exp.flow:
                self._finish(row.id, tlog.CANCELLED, f"experiment {row.experiment} is gone")
                continue
            if not exp.active:
                self._finish(row.id, tlog.CANCELLED, f"experiment {exp.name} is {exp.state}")
                continue
            try:
                if not self._carry_out(row, exp):
                    busy.add(here)
                    self._waiting = True
            except (SQLAlchemyError, StoreError, OSError) as exc:  # transient: stays pending
                log.warning("trigger %d (%s %s.%s) will be retried: %s", row.id, row.action,
                            row.experiment, row.node_name, exc)
                self._unclaim(row.id)
                busy.add(here)
                self._waiting = True
            except Exception as exc:
                log.error("trigger %d (%s %s.%s) failed: %s", row.id, row.action,
                          row.experiment, row.node_name, exc,
                          exc_info=not isinstance(exc, UltronError))
                # Recorded on the trigger only: status events belong to the node's runs.
                self._finish(row.id, tlog.FAILED, str(exc))

    def _launched(self, here: tuple[str, str], *, but: int) -> int:
        """Runs of node ``here`` launched whose runner has not claimed them yet (other than
        trigger ``but``'s)."""
        return sum(1 for tid, (_at, node) in self._inflight.items()
                   if node == here and tid != but)

    def _carry_out(self, row: tlog.TriggerRow, exp: rules.ExperimentModel) -> bool:
        """Carry out one trigger; False when it must wait (its node is busy)."""
        payload = rules.payload(exp.flow, row.node_name, row.edge, row.occurrence,
                                self._event_value)
        if not payload and row.edge.startswith("control:"):
            payload = self._last_window(exp, row.node_name)
        trigger = TriggerRef(row.id, row.edge, row.occurrence, payload)
        spec = self._spec(exp, row.node_name, trigger)
        runner = self.runners.get(spec.kind)
        name = spec.label
        here = (row.experiment, row.node_name)
        current = runner.state(spec)
        if row.action == "stop":
            if not self._claim(row.id, exp.name, require_active=False):
                return True
            if current in ACTIVE or runner.active_runs(spec):
                log.info("stopping %s (%s)", name, row.edge)
                runner.stop(spec, timeout=self.stop_timeout)
            else:
                log.info("%s is %s: nothing to stop", name, current or "not started")
            self._finish(row.id, tlog.DONE)
            return True
        if row.action == "start":
            if row.edge == CONTROL_START_EXPERIMENT and current is not None:
                log.info("%s already started (%s); launch leaves it", name, current)
                self._finish(row.id, tlog.DONE)
                return True
            if runner.runs_per_trigger:
                under_way = runner.active_runs(spec) + self._launched(here, but=row.id)
                if under_way >= runner.run_limit(spec):
                    return False  # as many runs as it may have: start when one ends
            elif current in ACTIVE:
                if spec.node.is_stream:
                    log.info("%s is already running", name)
                    self._finish(row.id, tlog.DONE)
                    return True
                return False  # a batch run is under way: start again when it ends
        log.info("%s %s (%s @ %s)", row.action, name, row.edge, row.occurrence)
        if runner.claims_triggers:
            if row.action == "restart" and (current in ACTIVE or runner.active_runs(spec)):
                runner.stop(spec, timeout=self.stop_timeout)
            runner.start(spec)
            self._inflight[row.id] = (time.monotonic(), here)
            return True
        if not self._claim(row.id, exp.name):
            return True  # the experiment stopped meanwhile, or the trigger was taken
        try:
            if row.action == "restart" and current in ACTIVE:
                runner.stop(spec, timeout=self.stop_timeout)
            runner.start(spec)
        except Exception:
            self._finish(row.id, tlog.FAILED)
            raise
        self._finish(row.id, tlog.DONE)
        return True

    def _last_window(self, exp: rules.ExperimentModel, node: str) -> dict[str, Any]:
        """A node restarted by hand re-runs its latest event-time window (if it has one)."""
        with self.db.read() as conn:
            last = tlog.last_window(conn, exp.name, node)
        if last is None:
            return {}
        return rules.payload(exp.flow, node, last.edge, last.occurrence, self._event_value)

    def _claim(self, trigger_id: int, experiment: str, *, require_active: bool = True
               ) -> bool:
        """Claim a trigger for the scheduler — only while its experiment is active."""
        with self.db.write() as conn:
            if require_active:
                exp = repo.get_experiment(conn, experiment)
                if exp.state in rules.INACTIVE:
                    tlog.finish(conn, trigger_id, tlog.CANCELLED)
                    return False
            return tlog.claim(conn, trigger_id, to=tlog.CLAIMED)

    def _unclaim(self, trigger_id: int) -> None:
        with self.db.write() as conn:
            conn.execute(tlog.trigger_log.update()
                         .where(tlog.trigger_log.c.id == trigger_id,
                                tlog.trigger_log.c.state == tlog.CLAIMED)
                         .values(state=tlog.PENDING))

    def _finish(self, trigger_id: int, state: str, reason: str = "") -> None:
        if reason:
            log.info("trigger %d %s: %s", trigger_id, state, reason)
        with self.db.write() as conn:
            tlog.finish(conn, trigger_id, state)

    def _maintain(self) -> None:
        self._maintained = time.monotonic()
        for kind in list(self.runners.table):
            what = f"{kind} runner maintenance"
            try:
                runner: NodeRunner = self.runners.get(kind)
                runner.maintain()
            except Exception as exc:
                self._repeats.failed(what, f"{what} failed: {_one_line(exc)}",
                                     exc_info=not isinstance(exc, UltronError))
            else:
                self._repeats.ok(what)

    # ------------------------------------------------------------------ loop
    def warm_up(self) -> None:
        """Have every runner start what makes its first start fast (warm workers)."""
        for kind in list(self.runners.table):
            try:
                self.runners.get(kind).warm_up()
            except Exception:
                log.exception("warming the %s runner up failed", kind)

    def run(self, stop: threading.Event | None = None) -> None:
        """Step until ``stop`` is set; store errors are logged and retried."""
        stop = stop or threading.Event()
        while not stop.is_set():
            wait = min(0.5, rules.next_tick_in(self.clock(), self._state, self._model))
            if self._inflight:
                wait = min(wait, 0.2)
            if self._watchers:
                wait = min(wait, WATCH_TICK)
            try:
                self.step(wait=wait)
            except Exception as exc:
                # Logged once while it repeats (a full disk fails every step until space
                # frees); an unexpected error keeps its traceback, the first time.
                self._repeats.failed("scheduler step", f"scheduler step failed: "
                                     f"{_one_line(exc)}",
                                     exc_info=not isinstance(exc, UltronError | SQLAlchemyError))
                stop.wait(1.0)
            else:
                self._repeats.ok("scheduler step")

    def close(self) -> None:
        """Free the scheduler's connections (running nodes keep running)."""
        self._listener.close()
        self.runners.close()
        for watcher in self._watchers:
            close = getattr(watcher, "close", None)
            if callable(close):
                close()


def default_watchers(db: Database, settings: Settings) -> list[Any]:
    """Every watcher of :data:`WATCHERS` that loads (one that does not is logged)."""
    out = []
    for name, spec in WATCHERS.items():
        module_name, _, attr = spec.partition(":")
        try:
            out.append(getattr(importlib.import_module(module_name), attr)(db, settings))
        except Exception as exc:
            log.error("no %s watcher: %s: %s", name, spec, exc)
    return out

