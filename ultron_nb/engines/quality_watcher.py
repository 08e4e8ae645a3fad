"""Data-quality rules evaluated beside the jobs: a reader of each node's output (the seeds'
"bypass"), polled by the scheduler daemon (:data:`ultron_nb.scheduler.loop.WATCHERS`).

For every active experiment whose flow version has rules:

- a stream node's rules are measured on each event-time window of its output once its
  watermark (the ``watermark/<owner>/<node>`` events) has passed the window's end, from the
  window that holds the output's first row on; a freshness rule compares the watermark with
  the wall clock at every look;
- a batch, DuckDB or Python node's rules are measured once per finished run, on its output.

The node's job is never touched. Every measurement is kept (the last per rule in the
``scheduler_state`` row ``quality``, with where each node's evaluation has got to); a
violation is an event ``quality/<experiment>/<node>/<rule>`` whose value holds the window,
the rule, the measured value, the bound and sample offending rows. The events and the state
commit in one transaction: after a crash the windows not yet committed are measured again,
none twice. A freshness violation is sent once per stall (again when the watermark moved
and stalled anew).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ultron_nb.config import Settings
from ultron_nb.engines.duckdb.quality import Measurement, evaluate, freshness_lag
from ultron_nb.engines.outputs import first_event_ms, readable, table_files
from ultron_nb.errors import NotFoundError, UltronError
from ultron_nb.events import append_event, latest
from ultron_nb.events.keys import NodeState, quality_key, watermark_key, watermark_ms
from ultron_nb.flow import Flow
from ultron_nb.flow.quality import Rule, RuleKind
from ultron_nb.store import experiments as repo
from ultron_nb.store import triggers
from ultron_nb.store.flows import load_flow
from ultron_nb.store.schema import experiments

if TYPE_CHECKING:
    from ultron_nb.store import Database

log = logging.getLogger(__name__)

STATE_ROW = "quality"
SENDER = "ultron.quality"
#: Experiment states whose nodes are looked at.
LOOKED_AT = ("running", "starting", "partial", "failed")
MAX_WINDOWS = 20  # per node and look: a long backlog is caught up over several looks


@dataclass
class _Target:
    """One node of one experiment with rules: what to evaluate and where."""

    experiment: str
    node: str
    rules: tuple[Rule, ...]
    stream: bool
    output: dict[str, Any]
    owner: str
    job_id: int | None
    job_state: str | None


class QualityWatcher:
    """Measures the rules of active experiments' nodes (see the module docstring).

    ``poll()`` looks at most every ``interval`` seconds and returns the violations sent."""

    def __init__(self, db: Database, settings: Settings | None = None, *,
                 interval: float = 1.0, clock: Any = time.time):
        self.db = db
        self.interval = interval
        self.clock = clock
        self._looked = 0.0
        self._flows: dict[tuple[str, int], Flow] = {}
        self._failing: dict[str, str] = {}  # target → the last error logged

    # ------------------------------------------------------------------ one look
    def poll(self) -> int:
        if time.monotonic() - self._looked < self.interval:
            return 0
        self._looked = time.monotonic()
        sent = 0
        for target in self._targets():
            try:
                sent += self._look(target)
            except UltronError as exc:  # a bad rule: logged once, the others go on
                where = f"{target.experiment}/{target.node}"
                if self._failing.get(where) != str(exc):
                    self._failing[where] = str(exc)
                    log.warning("data quality of %s: %s", where, exc)
        return sent

    def _targets(self) -> list[_Target]:
        found = []
        with self.db.read() as conn:
            rows = conn.execute(select(experiments).where(
                experiments.c.state.in_(LOOKED_AT))).all()
            for row in rows:
                key = (row.flow_name, int(row.flow_version))
                try:
                    flow = self._flows.get(key) or load_flow(conn, *key)
                except NotFoundError:
                    continue
                self._flows[key] = flow
                if not flow.rules:
                    continue
                views = {v.member.node_name: v for v in repo.node_views(conn, int(row.id))}
                for node, rules in flow.rules.items():
                    view = views.get(node)
                    if view is None or node not in flow or not view.instance.output.get("path"):
                        continue
                    found.append(_Target(
                        row.name, node, rules, flow[node].is_stream, dict(view.instance.output),
                        view.member.shared_from or row.name,
                        view.job.id if view.job else None,
                        view.job.state if view.job else None))
        return found

    def _look(self, target: _Target) -> int:
        where = f"{target.experiment}/{target.node}"
        with self.db.read() as conn:
            state = triggers.load_state(conn, STATE_ROW)
        before = state.get("nodes", {}).get(where, {})
        here = json.loads(json.dumps(before))
        violations: list[tuple[Rule, dict[str, Any]]] = []
        if target.stream:
            self._stream(target, here, violations)
        else:
            self._batch(target, here, violations)
        if here == before and not violations:
            return 0
        with self.db.write() as conn:
            for rule, value in violations:
                append_event(conn, quality_key(target.experiment, target.node, rule.name),
                             value, sender=SENDER)
            current = triggers.load_state(conn, STATE_ROW)
            current.setdefault("nodes", {})[where] = here
            triggers.save_state(conn, STATE_ROW, current)
        for rule, value in violations:
            log.info("data quality: %s.%s rule %s failed in %s: %s (%s)", target.experiment,
                     target.node, rule.name, value.get("window_start") or "its output",
                     value["value"], rule.bound)
        return len(violations)

    # ------------------------------------------------------------------ streams
    def _stream(self, target: _Target, here: dict[str, Any],
                violations: list[tuple[Rule, dict[str, Any]]]) -> None:
        event = latest(self.db, watermark_key(target.owner, target.node))
        mark = watermark_ms(event.value) if event else None
        if mark is None:
            return
        self._freshness(target, here, mark, violations)
        column = target.output.get("time_column")
        windowed = [r for r in target.rules if r.kind is not RuleKind.FRESHNESS]
        if not windowed or not column:
            return
        by_size: dict[int, list[Rule]] = {}
        for rule in windowed:
            by_size.setdefault(rule.window_ms, []).append(rule)
        for size, rules in by_size.items():
            nxt = here.get(f"next_{size}")
            if nxt is None:
                first = first_event_ms(target.output)
                if first is None:
                    continue
                nxt = first // size * size
            done = 0
            while nxt + size <= mark and done < MAX_WINDOWS:
                measured = self._measure(target, rules, here, column, nxt, nxt + size)
                self._record(target, rules, measured, here, violations, nxt, nxt + size)
                nxt += size
                done += 1
            here[f"next_{size}"] = nxt

    def _freshness(self, target: _Target, here: dict[str, Any], mark: int,
                   violations: list[tuple[Rule, dict[str, Any]]]) -> None:
        now = float(self.clock())
        lag = freshness_lag(mark, now)
        for rule in (r for r in target.rules if r.kind is RuleKind.FRESHNESS):
            if lag is None:
                continue
            ok = rule.holds(lag)
            last = here.setdefault("last", {})
            last[rule.name] = {"value": lag, "ok": ok, "rows": None, "at": now,
                               "window_start": _iso(mark), "window_end": None}
            stalls = here.setdefault("stalls", {})
            if ok:
                stalls.pop(rule.name, None)
            elif stalls.get(rule.name) != mark:
                stalls[rule.name] = mark
                violations.append((rule, _violation(
                    target, rule, lag, None, _iso(mark), None, now,
                    f"watermark {_iso(mark)} trails the wall clock by {lag:.0f} s")))

    # ------------------------------------------------------------------ batch
    def _batch(self, target: _Target, here: dict[str, Any],
               violations: list[tuple[Rule, dict[str, Any]]]) -> None:
        if target.job_id is None or target.job_state != NodeState.FINISHED:
            return
        if here.get("job") == target.job_id:
            return
        rules = [r for r in target.rules if r.kind is not RuleKind.FRESHNESS]
        if rules:
            measured = self._measure(target, rules, here, None, None, None)
            self._record(target, rules, measured, here, violations, None, None,
                         run=target.job_id)
        here["job"] = target.job_id

    # ------------------------------------------------------------------ shared
    def _measure(self, target: _Target, rules: list[Rule], here: dict[str, Any],
                 column: str | None, start: int | None, end: int | None) -> list[Measurement]:
        refs = here.setdefault("refs", {})
        what = f"quality of {target.experiment}.{target.node}"
        with readable([table_files(target.node, target.output, what=what)]) as ready:
            measured = evaluate(rules, ready[0], time_column=column, start_ms=start,
                                end_ms=end, references=refs)
        for m in measured:
            if m.reference is not None:
                refs[m.rule] = m.reference
        return measured

    def _record(self, target: _Target, rules: list[Rule], measured: list[Measurement],
                here: dict[str, Any], violations: list[tuple[Rule, dict[str, Any]]],
                start: int | None, end: int | None, *, run: int | None = None) -> None:
        now = float(self.clock())
        by_name = {r.name: r for r in rules}
        last = here.setdefault("last", {})
        counts = here.setdefault("counts", {})
        for m in measured:
            rule = by_name[m.rule]
            last[m.rule] = {"value": m.value, "ok": m.ok, "rows": m.rows, "at": now,
                            "window_start": _iso(start), "window_end": _iso(end), "run": run}
            tally = counts.setdefault(m.rule, [0, 0])  # windows measured, failed
            tally[0] += 1
            if not m.ok:
                tally[1] += 1
                violations.append((rule, _violation(target, rule, m.value, m.rows,
                                                    _iso(start), _iso(end), now, "",
                                                    m.samples, run)))


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _violation(target: _Target, rule: Rule, value: float, rows: int | None,
               start: str | None, end: str | None, now: float, note: str,
               samples: list[dict[str, Any]] | None = None,
               run: int | None = None) -> dict[str, Any]:
    return {"experiment": target.experiment, "node": target.node, "rule": rule.name,
            "kind": str(rule.kind), "text": rule.text, "bound": rule.bound, "value": value,
            "rows": rows, "window_start": start, "window_end": end, "run": run, "at": now,
            "note": note, "samples": samples or []}
