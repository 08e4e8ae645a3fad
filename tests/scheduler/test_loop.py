"""The scheduler's rules and guarantees, stepped in-process against a real store.

The runners are a recording stand-in here (the real Python runner and the daemon are
exercised in ``test_daemon.py``); node states are what the test says they are, and status
events are sent by the test, duplicates and disorder included.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from ultron_nb.config import Settings
from ultron_nb.events import latest, send_event
from ultron_nb.events.control import request_start
from ultron_nb.events.keys import NodeState, normalize, status_key, watermark_key
from ultron_nb.flow import Flow
from ultron_nb.flow.build import define_node
from ultron_nb.runners.base import NodeReport, NodeRunner, RunSpec
from ultron_nb.runners.registry import Runners
from ultron_nb.scheduler import Scheduler
from ultron_nb.scheduler.rules import edge_id
from ultron_nb.store import Database, open_database
from ultron_nb.store import triggers as tlog
from ultron_nb.store.flows import save_flow
from ultron_nb.store.schema import experiment_nodes, experiments, node_instances, trigger_log
from ultron_nb.workspace import Workspace

HOUR_MS = 3_600_000


# ----------------------------------------------------------------------------- helpers
def launch(db: Database, flow: Flow, name: str, *, state: str = "running",
           created_at: float | None = None) -> None:
    """Record ``flow`` as experiment ``name`` with one instance per node (no engine)."""
    now = time.time() if created_at is None else created_at
    with db.write() as conn:
        version = save_flow(conn, flow.validate())
        exp_id = conn.execute(insert(experiments).values(
            name=name, flow_name=flow.name, flow_version=version, params={}, label=name,
            target="local", state=state, parent=None, created_at=now, updated_at=now,
        ).returning(experiments.c.id)).scalar_one()
        for node in flow:
            instance = f"{node.name}_{name}"
            conn.execute(insert(node_instances).values(
                id=instance, identity=instance, target="local", node_name=node.name,
                flow_name=flow.name, flow_version=version, params=node.param_dict,
                upstream={ref: f"{ref}_{name}" for ref in node.data_inputs()},
                output={"path": f"/data/{instance}"}, state="waiting", created_at=now,
                updated_at=now,
            ))
            conn.execute(insert(experiment_nodes).values(
                experiment_id=exp_id, node_name=node.name, instance_id=instance))


class Recorder(NodeRunner):
    """A runner that records what the scheduler asks; states are set by the test."""

    kind = "python"

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.calls: list[tuple[str, str, str, str]] = []  # (action, exp, node, occurrence)
        self.targets: list[RunSpec] = []
        self.states: dict[tuple[str, str], str] = {}

    def start(self, spec: RunSpec, *, savepoint: str | None = None) -> None:
        occurrence = spec.trigger.occurrence if spec.trigger else ""
        self.calls.append(("start", spec.experiment, spec.name, occurrence))
        self.targets.append(spec)

    def stop(self, spec: RunSpec, *, savepoint: bool = False, timeout: float = 120.0
             ) -> str | None:
        self.calls.append(("stop", spec.experiment, spec.name, ""))
        self.states[(spec.experiment, spec.name)] = "stopped"
        return None

    def report(self, spec: RunSpec) -> NodeReport | None:
        state = self.states.get((spec.experiment, spec.name))
        return NodeReport(normalize(state) or NodeState.UNKNOWN) if state else None

    def started(self, node: str) -> list[str]:
        return [occ for action, _e, n, occ in self.calls if n == node and action == "start"]


def runners_of(db: Database, home: Path, **runners: NodeRunner) -> Runners:
    return Runners.of(Workspace(Settings(home=home), db=db), dict(runners))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, workdir: Path) -> Database:
    if request.param == "sqlite":
        return open_database(f"sqlite:///{workdir / '.ultron' / 'ultron.db'}")
    return open_database(request.getfixturevalue("postgres_db"))


@pytest.fixture
def sqlite_db(workdir: Path) -> Database:
    return open_database(f"sqlite:///{workdir / '.ultron' / 'ultron.db'}")


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def make(workdir: Path, rec: Recorder) -> Iterator[Any]:
    made: list[Scheduler] = []

    def _make(db: Database, **kwargs: Any) -> Scheduler:
        home = workdir / ".ultron"
        sched = Scheduler(db, Settings(home=home),
                          runners_of(db, home, python=rec, flink=rec), poll=0.005, **kwargs)
        made.append(sched)
        return sched

    yield _make
    for sched in made:
        sched.close()


def settle(sched: Scheduler, rounds: int = 3) -> None:
    """Step until the events sent so far are all processed and triggers carried out."""
    for _ in range(rounds):
        sched.step(wait=0.0)


def trigger_rows(db: Database, node: str | None = None) -> list[Any]:
    query = select(trigger_log).order_by(trigger_log.c.id)
    if node:
        query = query.where(trigger_log.c.node_name == node)
    with db.read() as conn:
        return list(conn.execute(query).all())


PY = "def run(ctx):\n    pass\n"


def batch_chain() -> Flow:
    return Flow("chain", [
        define_node("a", PY, kind="python"),
        define_node("b", PY, kind="python", after=["a"]),
        define_node("c", PY, kind="python", after=["a"], on_failure=True),
    ])


def status(db: Database, exp: str, node: str, value: Any) -> None:
    send_event(db, status_key(exp, node), value, sender="test")


# ----------------------------------------------------------------------------- batch→batch
def test_batch_after_batch_fires_once_per_run_despite_duplicates_and_disorder(
        db: Database, rec: Recorder, make: Any) -> None:
    launch(db, batch_chain(), "e1")
    sched = make(db)
    status(db, "e1", "a", {"state": "running", "attempt": 1})
    status(db, "e1", "a", {"state": "finished", "attempt": 1})
    status(db, "e1", "a", {"state": "finished", "attempt": 1})  # duplicate
    status(db, "e1", "a", {"state": "running", "attempt": 1})  # late, out of order
    status(db, "e1", "a", {"state": "failed", "attempt": 1})  # conflicting late news
    settle(sched)
    assert rec.started("b") == ["run1"]
    assert rec.started("c") == ["run1"]
    # A second run of a: b starts again, once. A stale event of run 1 changes nothing.
    status(db, "e1", "a", {"state": "finished", "attempt": 2})
    status(db, "e1", "a", {"state": "finished", "attempt": 1})
    status(db, "e1", "a", {"state": "finished", "attempt": 2})
    settle(sched)
    assert rec.started("b") == ["run1", "run2"]
    rows = trigger_rows(db, "b")
    assert [(r.occurrence, r.state) for r in rows] == [("run1", "done"), ("run2", "done")]


def test_plain_status_strings_dedupe_by_run(sqlite_db: Database, rec: Recorder,
                                            make: Any) -> None:
    db = sqlite_db
    launch(db, batch_chain(), "e1")
    sched = make(db)
    for value in ("running", "finished", "finished", "finished"):
        status(db, "e1", "a", value)
    settle(sched)
    assert rec.started("b") == ["run1"]
    for value in ("running", "running", "finished"):  # a new run
        status(db, "e1", "a", value)
    settle(sched)
    assert rec.started("b") == ["run1", "run2"]


def test_run_identities_zero_based_attempts_and_job_ids(sqlite_db: Database, rec: Recorder,
                                                        make: Any) -> None:
    db = sqlite_db
    launch(db, batch_chain(), "e1")
    launch(db, batch_chain(), "e2")
    sched = make(db)
    for attempt in (0, 0, 1, 0, 1):  # 0-based attempts, duplicates, a stale one
        status(db, "e1", "a", {"state": "finished", "attempt": attempt})
    for job in ("j1", "j1", "j2", "j1", "j2", "j3"):  # Flink job ids: j1 comes back stale
        status(db, "e2", "a", {"state": "finished", "job_id": job})
    settle(sched)
    assert [(e, o) for a, e, n, o in rec.calls if n == "b"] == [
        ("e1", "run0"), ("e1", "run1"), ("e2", "run1"), ("e2", "run2"), ("e2", "run3")]


def test_failure_triggers_only_edges_that_ask_for_it(sqlite_db: Database, rec: Recorder,
                                                    make: Any) -> None:
    db = sqlite_db
    launch(db, batch_chain(), "e1")
    sched = make(db)
    status(db, "e1", "a", {"state": "failed", "attempt": 1, "exit_code": 1})
    settle(sched)
    assert rec.started("b") == []
    assert rec.started("c") == ["run1"]


def test_a_batch_node_still_running_makes_the_next_start_wait(
        sqlite_db: Database, rec: Recorder, make: Any) -> None:
    db = sqlite_db
    launch(db, batch_chain(), "e1")
    sched = make(db)
    rec.states[("e1", "b")] = "running"
    status(db, "e1", "a", {"state": "finished", "attempt": 1})
    settle(sched)
    assert rec.started("b") == []
    assert [r.state for r in trigger_rows(db, "b")] == ["pending"]
    rec.states[("e1", "b")] = "finished"
    status(db, "e1", "b", {"state": "finished", "attempt": 1})  # its end wakes the scheduler
    settle(sched)
    assert rec.started("b") == ["run1"]


# ----------------------------------------------------------------------------- streams
def stream_flow(action: str = "start") -> Flow:
    return Flow("s", [
        define_node("src", "k STRING, ts TIMESTAMP(3)", kind="topic", time="ts"),
        define_node("warm", PY, kind="python"),
        define_node("join", "SELECT k, ts FROM src", mode="stream", after=["warm"],
                    action=action),
        define_node("enrich", "SELECT k, ts FROM join", mode="stream", after=["join"]),
        define_node("tail", "SELECT k, ts FROM enrich", mode="stream", stop_after=["join"]),
        define_node("hourly", PY, kind="python", after=["join"], boundary="1h"),
    ])


def test_batch_to_stream_and_stream_to_stream(db: Database, rec: Recorder, make: Any) -> None:
    launch(db, stream_flow(), "e1")
    sched = make(db)
    status(db, "e1", "warm", {"state": "finished", "attempt": 1})
    settle(sched)
    assert rec.started("join") == ["run1"]  # batch→stream: the warm start is ready
    assert rec.started("enrich") == []
    rec.states[("e1", "join")] = "running"
    status(db, "e1", "join", "running")
    settle(sched)
    assert rec.started("enrich") == ["run1"]  # stream→stream: after it is running
    # A second warm-up while join runs: a stream already running is left alone.
    status(db, "e1", "warm", {"state": "finished", "attempt": 2})
    settle(sched)
    assert rec.started("join") == ["run1"]
    assert [r.state for r in trigger_rows(db, "join")] == ["done", "done"]


def test_batch_to_stream_restart(sqlite_db: Database, rec: Recorder, make: Any) -> None:
    db = sqlite_db
    launch(db, stream_flow(action="restart"), "e1")
    sched = make(db)
    rec.states[("e1", "join")] = "running"
    status(db, "e1", "warm", {"state": "finished", "attempt": 1})
    settle(sched)
    # A restart stops the running job, then starts it again.
    assert [c for c in rec.calls if c[2] == "join"] == [("stop", "e1", "join", ""),
                                                         ("start", "e1", "join", "run1")]


def test_stop_after_stops_a_running_stream(sqlite_db: Database, rec: Recorder,
                                           make: Any) -> None:
    db = sqlite_db
    launch(db, stream_flow(), "e1")
    sched = make(db)
    rec.states[("e1", "tail")] = "running"
    status(db, "e1", "join", "running")
    status(db, "e1", "join", "stopped")
    status(db, "e1", "join", "stopped")
    settle(sched)
    assert [c for c in rec.calls if c[0] == "stop"] == [("stop", "e1", "tail", "")]


def test_stream_to_batch_once_per_watermark_boundary(db: Database, rec: Recorder,
                                                     make: Any) -> None:
    launch(db, stream_flow(), "e1")
    sched = make(db)
    base = 1_700_000_000_000 // HOUR_MS * HOUR_MS  # an hour boundary
    key = watermark_key("e1", "join")
    for ms in (base + 10 * 60_000,  # baseline
               base + 50 * 60_000,  # same hour: nothing
               base + HOUR_MS + 5_000,  # passes one boundary
               base + HOUR_MS + 4_000,  # goes back: ignored
               base + HOUR_MS + 5_000,  # duplicate
               base + 4 * HOUR_MS + 1):  # jumps three boundaries
        send_event(db, key, ms, sender="flink")
    settle(sched)
    expected = [f"wm{base + h * HOUR_MS}" for h in (1, 2, 3, 4)]
    assert rec.started("hourly") == expected
    windows = [(t.trigger.payload["window_start"], t.trigger.payload["window_end"])
               for t in rec.targets if t.name == "hourly" and t.trigger]
    assert windows == [(base + (h - 1) * HOUR_MS, base + h * HOUR_MS) for h in (1, 2, 3, 4)]
    # Replaying the same watermarks (a restarted poller) fires nothing new.
    send_event(db, key, base + 4 * HOUR_MS + 1, sender="flink")
    settle(sched)
    assert len(rec.started("hourly")) == 4


def test_a_first_watermark_that_says_where_the_output_starts_fires_its_first_window(
        sqlite_db: Database, rec: Recorder, make: Any) -> None:
    """A backlog read fast: the first watermark reported is already two hours in. Windows
    from where the output starts fire (the first one included), once each."""
    db = sqlite_db
    launch(db, stream_flow(), "e1")
    sched = make(db)
    base = 1_700_000_000_000 // HOUR_MS * HOUR_MS
    key = watermark_key("e1", "join")
    send_event(db, key, {"watermark": base + 2 * HOUR_MS + 7, "since": base + 5}, sender="f")
    send_event(db, key, base + 3 * HOUR_MS + 1, sender="f")
    settle(sched)
    assert rec.started("hourly") == [f"wm{base + h * HOUR_MS}" for h in (1, 2, 3)]


def test_an_output_starting_on_a_boundary_fires_no_empty_window_before_it(
        sqlite_db: Database, rec: Recorder, make: Any) -> None:
    """Data that starts exactly on the hour (a generator's first row at 00:00:00.000): the
    first window is the hour it starts, not the empty hour before."""
    db = sqlite_db
    launch(db, stream_flow(), "e1")
    sched = make(db)
    base = 1_700_000_000_000 // HOUR_MS * HOUR_MS
    key = watermark_key("e1", "join")
    send_event(db, key, {"watermark": base + HOUR_MS + 7, "since": base}, sender="f")
    send_event(db, key, base + 2 * HOUR_MS + 1, sender="f")
    settle(sched)
    assert rec.started("hourly") == [f"wm{base + h * HOUR_MS}" for h in (1, 2)]
    windows = [(t.trigger.payload["window_start"], t.trigger.payload["window_end"])
               for t in rec.targets if t.name == "hourly" and t.trigger]
    assert windows[0] == (base, base + HOUR_MS)


# ----------------------------------------------------------------------------- events
def event_flow() -> Flow:
    return Flow("ev", [
        define_node("any", PY, kind="python", on_event="model/ctr"),
        define_node("eq", PY, kind="python", on_event="model/ctr", when="equals:ready"),
        define_node("chg", PY, kind="python", on_event="model/ctr", when="changed"),
        define_node("ver", PY, kind="python", on_event="model/ctr", when="version>2"),
        define_node("js", PY, kind="python", on_event="model/ctr",
                    when="json:value['auc'] > 0.7"),
    ])


def test_on_event_with_value_conditions(db: Database, rec: Recorder, make: Any) -> None:
    before = send_event(db, "model/ctr", "ready")  # before the experiment existed: ignored
    launch(db, event_flow(), "e1", created_at=before.created_at + 0.001)
    sched = make(db)
    send_event(db, "model/ctr", "ready")  # v2
    send_event(db, "model/ctr", "ready")  # v3
    send_event(db, "model/ctr", {"auc": 0.75})  # v4
    send_event(db, "model/ctr", {"auc": 0.6})  # v5
    send_event(db, "other", "ready")
    settle(sched)
    assert rec.started("any") == ["v2", "v3", "v4", "v5"]
    assert rec.started("eq") == ["v2", "v3"]
    assert rec.started("chg") == ["v4", "v5"]  # v2 equals v1 ("ready")
    assert rec.started("ver") == ["v3", "v4", "v5"]
    assert rec.started("js") == ["v4"]
    payload = next(t.trigger.payload for t in rec.targets if t.name == "js" and t.trigger)
    assert payload["event"] == {"key": "model/ctr", "version": 4, "value": {"auc": 0.75}}


# ----------------------------------------------------------------------------- periodic
def test_periodic_interval_and_cron(sqlite_db: Database, rec: Recorder, make: Any) -> None:
    db = sqlite_db
    flow = Flow("p", [
        define_node("every", PY, kind="python", every="10s"),
        define_node("cron", PY, kind="python", every="*/5 * * * *"),
    ])
    launch(db, flow, "e1")
    now = [1_700_000_000.0]  # 22:13:20 UTC
    sched = make(db, clock=lambda: now[0])
    settle(sched)  # anchors
    assert rec.calls == []
    now[0] += 5
    settle(sched)
    assert rec.started("every") == []
    now[0] += 5
    settle(sched)
    assert rec.started("every") == [f"t{1_700_000_010.0:.3f}"]
    now[0] += 35  # three ticks missed: one run
    settle(sched)
    assert rec.started("every") == [f"t{1_700_000_010.0:.3f}", f"t{1_700_000_040.0:.3f}"]
    assert len(rec.started("cron")) == 0
    now[0] = 1_700_000_000.0 + 400  # past 22:15 and 22:20: coalesced into 22:20
    settle(sched)
    assert rec.started("cron") == [f"t{1_700_000_400.0:.3f}"]


# ----------------------------------------------------------------------------- control
def test_launch_starts_only_nodes_nothing_waits_for(sqlite_db: Database, rec: Recorder,
                                                    make: Any) -> None:
    db = sqlite_db
    launch(db, stream_flow(), "e1")
    sched = make(db)
    rec.states[("e1", "tail")] = "running"  # started by someone else already
    request_start(db, "e1")
    settle(sched)
    started = [n for action, _e, n, _o in rec.calls if action == "start"]
    assert started == ["warm"]  # src is a resource; join/enrich/hourly wait; tail runs
    request_start(db, "e1", node="hourly")
    settle(sched)
    assert rec.started("hourly") == ["v2"]


def hold_back(db: Database, exp: str, *, suspend: bool) -> None:
    """What a stop of the experiment does first (ultron_nb.experiments.lifecycle)."""
    with db.write() as conn:
        conn.execute(update(experiments).where(experiments.c.name == exp)
                     .values(state="stopping"))
        tlog.hold_back(conn, exp, suspend=suspend)


def test_a_stop_holds_back_pending_starts_and_the_scheduler_stops_nothing_itself(
        db: Database, rec: Recorder, make: Any) -> None:
    launch(db, stream_flow(), "e1")
    sched = make(db)
    rec.states.update({("e1", "warm"): "finished", ("e1", "join"): "running",
                       ("e1", "enrich"): "running", ("e1", "hourly"): "running"})
    base = 1_700_000_000_000 // HOUR_MS * HOUR_MS
    send_event(db, watermark_key("e1", "join"), base + 1)
    send_event(db, watermark_key("e1", "join"), base + 3 * HOUR_MS)
    settle(sched)
    pending = [r for r in trigger_rows(db, "hourly") if r.state == "pending"]
    assert len(pending) == 3  # hourly is still running: its next runs wait
    hold_back(db, "e1", suspend=False)
    send_event(db, watermark_key("e1", "join"), base + 5 * HOUR_MS)  # after the stop
    status(db, "e1", "warm", {"state": "finished", "attempt": 2})
    settle(sched)
    assert rec.started("hourly") == [] and rec.started("join") == []
    assert [r.state for r in trigger_rows(db, "hourly")] == ["cancelled"] * 3
    assert [c for c in rec.calls if c[0] == "stop"] == []  # the stop's owner stops jobs


def test_a_stop_with_savepoints_suspends_what_it_must_not_miss(
        db: Database, rec: Recorder, make: Any) -> None:
    """Pending windows are suspended, and windows the upstream passes while the experiment
    is stopped are recorded suspended too: resume re-arms them, none is skipped."""
    launch(db, stream_flow(), "e1")
    sched = make(db)
    rec.states[("e1", "hourly")] = "running"
    base = 1_700_000_000_000 // HOUR_MS * HOUR_MS
    send_event(db, watermark_key("e1", "join"), base + 1)
    send_event(db, watermark_key("e1", "join"), base + 2 * HOUR_MS)
    settle(sched)
    hold_back(db, "e1", suspend=True)
    with db.write() as conn:
        conn.execute(update(experiments).where(experiments.c.name == "e1")
                     .values(state="stopped"))
    send_event(db, watermark_key("e1", "join"), base + 3 * HOUR_MS)  # drained at the stop
    status(db, "e1", "warm", {"state": "finished", "attempt": 2})  # no start while stopped
    settle(sched)
    rows = trigger_rows(db, "hourly")
    assert [(r.occurrence, r.state) for r in rows] == [
        (f"wm{base + h * HOUR_MS}", "suspended") for h in (1, 2, 3)]
    assert trigger_rows(db, "join") == []
    # Resume: re-armed, each window runs once.
    with db.write() as conn:
        conn.execute(update(experiments).where(experiments.c.name == "e1")
                     .values(state="running"))
        tlog.rearm(conn, "e1")
    request_start(db, "e1")  # as resume does
    rec.states[("e1", "hourly")] = "finished"
    for _ in range(6):
        sched.step(wait=0.0)
        rec.states[("e1", "hourly")] = "finished"
    assert rec.started("hourly") == [f"wm{base + h * HOUR_MS}" for h in (1, 2, 3)]


# ----------------------------------------------------------------------------- restarts
def test_a_new_scheduler_resumes_from_the_cursor_and_redrives_pending(
        db: Database, rec: Recorder, make: Any) -> None:
    launch(db, batch_chain(), "e1")
    first = make(db)
    status(db, "e1", "a", {"state": "finished", "attempt": 1})
    settle(first)
    assert rec.started("b") == ["run1"]
    cursor = first.cursor
    assert cursor >= 1
    first.close()  # as if killed: nothing else is saved
    # A trigger that was committed but never carried out (killed in between).
    edge = edge_id(batch_chain()["b"].triggers[0])
    with db.write() as conn:
        conn.execute(insert(trigger_log).values(
            experiment="e1", node_name="b", edge=edge, occurrence="run7", action="start",
            state="pending", created_at=time.time()))
    second = make(db)
    assert second.cursor == cursor
    status(db, "e1", "a", {"state": "finished", "attempt": 1})  # a duplicate after restart
    settle(second)
    assert rec.started("b") == ["run1", "run7"]
    assert {r.state for r in trigger_rows(db)} == {"done"}


def test_inactive_experiments_get_no_triggers(sqlite_db: Database, rec: Recorder,
                                              make: Any) -> None:
    db = sqlite_db
    launch(db, batch_chain(), "e1")
    launch(db, batch_chain(), "e2", state="stopped")
    sched = make(db)
    status(db, "e1", "a", "finished")
    status(db, "e2", "a", "finished")
    settle(sched)
    assert [(e, n) for _a, e, n, _o in rec.calls] == [("e1", "b"), ("e1", "c")]
    # Stopped by someone else (the experiments service) while a start was pending.
    rec.states[("e1", "b")] = "running"
    status(db, "e1", "a", {"state": "finished", "attempt": 9})
    settle(sched)
    with db.write() as conn:
        conn.execute(update(experiments).where(experiments.c.name == "e1")
                     .values(state="canceled"))
    sched.refresh()
    rec.states[("e1", "b")] = "finished"
    status(db, "e1", "b", "finished")
    settle(sched)
    assert rec.started("b") == ["run1"]
    assert [r.state for r in trigger_rows(db, "b")][-1] == "cancelled"
    assert latest(db, status_key("e1", "b")) is not None


class Failing(Recorder):
    kind = "flink"

    def start(self, spec: RunSpec, *, savepoint: str | None = None) -> None:
        raise RuntimeError(f"cannot start {spec.name}")


def test_a_start_that_fails_is_recorded_and_the_scheduler_goes_on(
        sqlite_db: Database, workdir: Path) -> None:
    db = sqlite_db
    flow = Flow("k", [
        define_node("src", "k STRING, ts TIMESTAMP(3)", kind="topic", time="ts"),
        define_node("job", "SELECT k, ts FROM src", mode="stream", on_event="go"),
        define_node("py", PY, kind="python", on_event="go"),
    ])
    launch(db, flow, "e1")
    rec = Recorder()
    home = workdir / ".ultron"
    sched = Scheduler(db, Settings(home=home),
                      runners_of(db, home, python=rec, flink=Failing()), poll=0.005)
    send_event(db, "go", 1)
    settle(sched)
    sched.close()
    assert rec.started("py") == ["v1"]
    assert {r.node_name: r.state for r in trigger_rows(db)} == {"job": "failed", "py": "done"}
