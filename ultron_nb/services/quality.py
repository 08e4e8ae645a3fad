"""Data quality per node: defining rules, and what the daemon measured and flagged.

Rules are defined with ``%%ultron rule NODE`` (:func:`define_rules`; the grammar is in
:mod:`ultron_nb.flow.quality`) and measured by the scheduler daemon
(:mod:`ultron_nb.engines.quality_watcher`). :func:`quality_report` is ``%ultron quality EXP``: each
rule with its last value and window, how many windows failed, the recent violations, and the
node to look at first — the failing node none of whose upstream nodes fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ultron_nb.engines.quality_watcher import STATE_ROW
from ultron_nb.events import recent
from ultron_nb.events.keys import quality_keys
from ultron_nb.flow import Flow
from ultron_nb.flow.quality import DEFAULT_WINDOW, parse_rules
from ultron_nb.store import experiments as repo
from ultron_nb.store import triggers
from ultron_nb.store.flows import load_flow
from ultron_nb.views import Table

if TYPE_CHECKING:
    from ultron_nb.workspace import Workspace


def define_rules(ws: Workspace, flow: str, node: str, text: str, *,
                 window: str | None = None) -> Flow:
    """Make the rules in ``text`` (one per line) the rules of ``node``; an empty ``text``
    removes them. The new flow version; bad input changes nothing."""
    current = ws.flow(flow)
    current[node]  # an unknown node: one line naming it (with a suggestion)
    rules = parse_rules(node, text, window=window or DEFAULT_WINDOW) if text.strip() else ()
    return ws.set_rules(flow, node, rules)


@dataclass
class QualityReport:
    """The rules of an experiment with their last measurement, and its violations."""

    experiment: str
    table: Table
    violations: Table
    failing: dict[str, list[str]] = field(default_factory=dict)  # node → failing rules
    look_first: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [str(self.table)]
        if self.look_first:
            lines.append(f"look first at: {', '.join(self.look_first)} (failing, with no "
                         "failing node upstream)")
        elif self.table.rows:
            lines.append("every rule holds in its last window")
        if self.violations.rows:
            lines.append(str(self.violations))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        parts = [self.table._repr_html_()]
        if self.look_first:
            parts.append(f"<p><b>look first at: {', '.join(self.look_first)}</b></p>")
        if self.violations.rows:
            parts.append(self.violations._repr_html_())
        return "".join(parts)


def _state(ws: Workspace, name: str) -> tuple[Flow, dict[str, Any]]:
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, name)
        flow = load_flow(conn, exp.flow_name, exp.flow_version)
        state = triggers.load_state(conn, STATE_ROW).get("nodes", {})
    return flow, {k.split("/", 1)[1]: v for k, v in state.items()
                  if k.split("/", 1)[0] == name}


def failing(ws: Workspace, name: str) -> dict[str, list[str]]:
    """Node → the rules failing in their last measurement (for the DAG's marks)."""
    _flow, state = _state(ws, name)
    out: dict[str, list[str]] = {}
    for node, here in state.items():
        bad = [rule for rule, last in sorted(here.get("last", {}).items())
               if not last.get("ok", True)]
        if bad:
            out[node] = bad
    return out


def first_failing(flow: Flow, failing_nodes: set[str]) -> list[str]:
    """The failing nodes none of whose upstream nodes (transitively) fails, in flow order."""
    return [n for n in flow.topological() if n in failing_nodes
            and not any(n in flow.downstream(other) for other in failing_nodes if other != n)]


def quality_report(ws: Workspace, name: str, *, violations: int = 20) -> QualityReport:
    """``%ultron quality EXP`` (see the module docstring)."""
    flow, state = _state(ws, name)
    rows = []
    for node in flow.topological():
        here = state.get(node, {})
        for rule in flow.rules.get(node, ()):
            last = here.get("last", {}).get(rule.name)
            measured, failed = here.get("counts", {}).get(rule.name, [0, 0])
            if last is None:
                rows.append([node, rule.name, rule.text, rule.bound, "", "", "not yet",
                             measured, failed])
                continue
            where = last.get("window_start") or (f"run {last['run']}" if last.get("run")
                                                 else "")
            if last.get("window_end"):
                where = f"{where} to {last['window_end'][11:]}"
            rows.append([node, rule.name, rule.text, rule.bound, where, last["value"],
                         "ok" if last["ok"] else "FAILING", measured, failed])
    bad = failing(ws, name)
    events = recent(ws.db, quality_keys(name), limit=violations)
    vrows = [[e.value.get("node"), e.value.get("rule"), e.value.get("window_start") or
              (f"run {e.value.get('run')}" if e.value.get("run") else ""),
              e.value.get("value"), e.value.get("bound"),
              "; ".join(str(s) for s in e.value.get("samples", [])[:2]) or
              e.value.get("note", "")] for e in events if isinstance(e.value, dict)]
    return QualityReport(
        name,
        Table(["node", "rule", "rule text", "bound", "last window", "value", "state",
               "windows", "failed"], rows, title=f"data quality of {name}"),
        Table(["node", "rule", "window", "value", "bound", "sample"], vrows,
              title=f"violations of {name} (newest last)"),
        bad, first_failing(flow, set(bad)))
