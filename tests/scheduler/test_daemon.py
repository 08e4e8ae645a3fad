"""The real scheduler daemon with real Python nodes, killed with SIGKILL mid-flow.

Every Python node appends one line to a file per run, so "ran exactly once" is counted in
side effects, not taken from the scheduler's word.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from tests.support.waiting import wait_until
from ultron_nb import experiments
from ultron_nb.config import Settings
from ultron_nb.errors import UltronError
from ultron_nb.events import latest, send_event
from ultron_nb.events.control import request_start
from ultron_nb.events.keys import NodeState, status_key, watermark_key
from ultron_nb.flow import Flow
from ultron_nb.flow.build import define_node
from ultron_nb.processes import process_alive
from ultron_nb.runners.base import RunSpec, TriggerRef
from ultron_nb.runners.python_node import PythonRunner
from ultron_nb.scheduler import daemon_status, run_forever, start_daemon, stop_daemon
from ultron_nb.store import Database, open_database
from ultron_nb.store.schema import jobs, trigger_log
from ultron_nb.workspace import Workspace

from .test_loop import launch

pytestmark = pytest.mark.slow

BODY = '''
def run(ctx):
    import os, time
    with open(os.path.join(ctx.params["out"], ctx.node + ".txt"), "a") as f:
        f.write(f"{ctx.attempt} {ctx.trigger['occurrence']} {os.getpid()}\\n")
    time.sleep(float(ctx.params["sleep"]))
'''

FAILING = '''
def run(ctx):
    raise ValueError("the model diverged")
'''

HOURLY = '''
def run(ctx):
    import os
    start, end = ctx.window
    with open(os.path.join(ctx.params["out"], "hourly.txt"), "a") as f:
        f.write(f"{start} {end}\\n")
'''




def lines(out: Path, node: str) -> list[str]:
    path = out / f"{node}.txt"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Settings]:
    url = "" if request.param == "sqlite" else request.getfixturevalue("postgres_db")
    s = Settings(home=workdir / ".ultron", db_url=url)
    yield s
    pid = daemon_status(s)
    if pid and pid > 0:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sqlite_settings(workdir: Path) -> Iterator[Settings]:
    s = Settings(home=workdir / ".ultron")
    yield s
    pid = daemon_status(s)
    if pid and pid > 0:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def out(workdir: Path) -> Path:
    path = workdir / "effects"
    path.mkdir()
    return path


def py(name: str, out: Path, body: str = BODY, sleep: float = 0.2, **kw: Any) -> Any:
    return define_node(name, body, kind="python", params={"out": str(out), "sleep": sleep}, **kw)


def all_jobs(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(jobs).order_by(jobs.c.id)).all())


def no_runner_left(db: Database) -> bool:
    return all(j.state != "running" for j in all_jobs(db))


# ----------------------------------------------------------------------------- kill -9
def test_killed_daemon_resumes_and_every_node_runs_exactly_once(
        settings: Settings, out: Path) -> None:
    db = open_database(settings.database_url)
    flow = Flow("chain", [
        py("a", out),
        py("b", out, after=["a"]),
        py("c", out, after=["b"]),
        py("d", out, after=["c"]),
        py("e", out, after=["b"]),
        py("g", out, on_event="go"),
    ])
    launch(db, flow, "exp")
    request_start(db, "exp")
    rng = random.Random(4)
    sent = 0
    kills = 0
    deadline = time.monotonic() + 150

    def finished() -> bool:
        return (all(len(lines(out, n)) >= 1 for n in "abcde") and len(lines(out, "g")) >= 3
                and no_runner_left(db))

    # Chaos: start the daemon, let it work a random moment, SIGKILL it; six times (or
    # until everything ran), then let one daemon finish what is left.
    while kills < 6 and not finished() and time.monotonic() < deadline:
        pid = start_daemon(settings)
        time.sleep(rng.uniform(0.2, 1.2))  # not synchronisation: the moment of the kill
        if sent < 3:
            send_event(db, "go", sent)
            sent += 1
        os.kill(pid, signal.SIGKILL)
        kills += 1
        wait_until(lambda: daemon_status(settings) is None, 10, "the killed daemon's lock")
    assert kills >= 3
    while sent < 3:
        send_event(db, "go", sent)
        sent += 1
    start_daemon(settings)
    wait_until(finished, 120, "every node to run")
    assert stop_daemon(settings)

    for node in "abcde":
        assert len(lines(out, node)) == 1, (node, lines(out, node))
    runs_of_g = lines(out, "g")
    assert sorted(line.split()[1] for line in runs_of_g) == ["v1", "v2", "v3"], runs_of_g
    recorded = all_jobs(db)
    assert len(recorded) == 8
    assert {(j.state, j.error) for j in recorded} == {("finished", None)}
    with db.read() as conn:
        states = {r.state for r in conn.execute(select(trigger_log.c.state))}
    assert states == {"done"}
    for node in "abcde":
        assert (settings.home / "logs" / "exp" / f"{node}-1.log").is_file()
    final = latest(db, status_key("exp", "d"))
    assert final is not None and final.value["state"] == "finished"
    assert final.value["exit_code"] == 0


# ----------------------------------------------------------------------------- the runner
def test_a_trigger_launched_several_times_runs_once(sqlite_settings: Settings,
                                                    out: Path) -> None:
    """What a scheduler killed between launching a runner and recording it does on restart:
    launch the same trigger again. The runners race to claim it; one runs."""
    settings = sqlite_settings
    db = open_database(settings.database_url)
    flow = Flow("d", [py("once", out, sleep=0.3)])
    launch(db, flow, "exp")

    def new_trigger(occurrence: str) -> int:
        with db.write() as conn:
            return int(conn.execute(insert(trigger_log).values(
                experiment="exp", node_name="once", edge="test", occurrence=occurrence,
                action="start", state="pending", created_at=time.time(),
            ).returning(trigger_log.c.id)).scalar_one())

    def target(trigger_id: int) -> RunSpec:
        return RunSpec(experiment="exp", node=flow["once"], instance_id="once_exp",
                       flow="d", flow_version=1, params=flow["once"].param_dict,
                       trigger=TriggerRef(trigger_id, "test", str(trigger_id)))

    runner = PythonRunner(Workspace(settings, db=db))
    first = new_trigger("1")
    for _ in range(3):
        runner.start(target(first))
    cancelled = new_trigger("2")
    with db.write() as conn:  # a stop came between the launch and the claim
        conn.execute(update(trigger_log).where(trigger_log.c.id == cancelled)
                     .values(state="cancelled"))
    runner.start(target(cancelled))
    children = list(runner._children)
    wait_until(lambda: all(c.poll() is not None for c in children), 60, "the runners to end")
    assert [c.returncode for c in children] == [0, 0, 0, 0]
    assert len(lines(out, "once")) == 1
    assert [(j.state, j.attempt) for j in all_jobs(db)] == [("finished", 1)]
    runner_log = (settings.home / "logs" / "exp" / "runner.log").read_text()
    assert runner_log.count("is done: not running it") == 2
    assert runner_log.count("is cancelled: not running it") == 1
    assert runner.state(target(first)) is NodeState.FINISHED


# ----------------------------------------------------------------------------- failures
def test_failed_node_records_exit_code_and_triggers_on_failure_edges(
        sqlite_settings: Settings, out: Path) -> None:
    settings = sqlite_settings
    db = open_database(settings.database_url)
    flow = Flow("f", [
        py("train", out, body=FAILING),
        py("alert", out, after=["train"], on_failure=True),
        py("deploy", out, after=["train"]),
    ])
    launch(db, flow, "exp")
    start_daemon(settings)
    request_start(db, "exp")
    wait_until(lambda: lines(out, "alert"), 60, "the on-failure node")
    wait_until(lambda: no_runner_left(db), 30, "runs to end")
    assert lines(out, "deploy") == []
    failed = latest(db, status_key("exp", "train"))
    assert failed is not None
    assert failed.value["state"] == "failed" and failed.value["exit_code"] == 1
    train_job = next(j for j in all_jobs(db) if j.instance_id == "train_exp")
    assert train_job.state == "failed"
    assert "exit code 1" in train_job.error and "the model diverged" in train_job.error
    log_text = (settings.home / "logs" / "exp" / "train-1.log").read_text()
    assert "Traceback" in log_text and "ValueError: the model diverged" in log_text
    stop_daemon(settings)


# ----------------------------------------------------------------------------- stop
def test_stop_kills_running_runs_cancels_pending_starts_and_keeps_finished(
        sqlite_settings: Settings, out: Path) -> None:
    settings = sqlite_settings
    db = open_database(settings.database_url)
    flow = Flow("s", [
        py("quick", out, sleep=0),
        # One run at a time: the second start must wait, so that the stop finds it pending.
        py("slow", out, sleep=120, on_event="more", options={"max_concurrent_runs": "1"}),
        py("after_slow", out, after=["slow"]),
    ])
    launch(db, flow, "exp")
    start_daemon(settings)
    request_start(db, "exp")  # starts quick; slow waits for "more"
    send_event(db, "more", 1)
    wait_until(lambda: lines(out, "slow"), 60, "slow to start")
    wait_until(lambda: lines(out, "quick") and no_runner_left_but(db, "slow_exp"), 60,
               "quick to finish")
    send_event(db, "more", 2)  # slow still runs: this start waits
    wait_until(lambda: pending(db, "slow"), 30, "the second start of slow to be pending")
    slow_pid = int(lines(out, "slow")[0].split()[2])
    experiments.stop(Workspace(settings), "exp")  # the stop's owner stops the runs itself
    assert not process_alive(f"{slow_pid}:")
    assert no_runner_left(db)
    assert experiment_state(db) == "canceled"
    send_event(db, "more", 3)  # after the stop: nothing starts
    by_node = {j.instance_id: j for j in all_jobs(db)}
    assert by_node["slow_exp"].state == "stopped"
    assert by_node["quick_exp"].state == "finished"  # never marked killed
    assert latest(db, status_key("exp", "quick")).value["state"] == "finished"  # type: ignore[union-attr]
    assert latest(db, status_key("exp", "slow")).value["state"] == "stopped"  # type: ignore[union-attr]
    with db.read() as conn:
        slow_starts = conn.execute(select(trigger_log.c.occurrence, trigger_log.c.state)
                                   .where(trigger_log.c.node_name == "slow",
                                          trigger_log.c.action == "start")
                                   .order_by(trigger_log.c.id)).all()
    assert [tuple(r) for r in slow_starts] == [("v1", "done"), ("v2", "cancelled")]
    stop_daemon(settings)  # the daemon processed "more" v3 before stopping, or will never
    assert len(lines(out, "slow")) == 1 and lines(out, "after_slow") == []


def no_runner_left_but(db: Database, instance: str) -> bool:
    return all(j.state != "running" or j.instance_id == instance for j in all_jobs(db))


def pending(db: Database, node: str) -> bool:
    with db.read() as conn:
        return bool(conn.execute(select(trigger_log.c.id).where(
            trigger_log.c.node_name == node, trigger_log.c.state == "pending")).first())


def experiment_state(db: Database) -> str:
    from ultron_nb.store.schema import experiments

    with db.read() as conn:
        return str(conn.execute(select(experiments.c.state)).scalar())


# ----------------------------------------------------------------------------- watermarks
def test_daemon_runs_a_batch_node_once_per_watermark_hour(
        sqlite_settings: Settings, out: Path) -> None:
    settings = sqlite_settings
    db = open_database(settings.database_url)
    flow = Flow("w", [
        define_node("src", "k STRING, ts TIMESTAMP(3)", kind="topic", time="ts"),
        define_node("join", "SELECT k, ts FROM src", mode="stream"),
        py("hourly", out, body=HOURLY, after=["join"], boundary="1h"),
    ])
    launch(db, flow, "exp")
    start_daemon(settings)
    hour = 3_600_000
    base = 1_700_000_000_000 // hour * hour
    for ms in (base + 5, base + hour + 5, base + hour + 9, base + 3 * hour, base + hour):
        send_event(db, watermark_key("exp", "join"), ms, sender="flink")
    wait_until(lambda: len(lines(out, "hourly")) >= 3 and no_runner_left(db), 60,
               "three hourly runs")
    stop_daemon(settings)
    windows = [tuple(map(int, line.split())) for line in lines(out, "hourly")]
    assert windows == [(base + (h - 1) * hour, base + h * hour) for h in (1, 2, 3)]


# ----------------------------------------------------------------------------- the daemon
def test_one_scheduler_per_store_and_graceful_sigterm(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    pid = start_daemon(settings)
    assert daemon_status(settings) == pid
    assert start_daemon(settings) == pid  # already running: reused
    with pytest.raises(UltronError, match="a scheduler already runs"):
        run_forever(settings)
    assert (settings.home / "scheduler.pid").read_text() == str(pid)
    assert stop_daemon(settings)
    assert daemon_status(settings) is None
    with pytest.raises(ChildProcessError):  # reaped by stop_daemon: no zombie left behind
        os.waitpid(pid, os.WNOHANG)
    assert not (settings.home / "scheduler.pid").exists()
    assert f"scheduler {pid} stopped" in (settings.home / "logs" / "scheduler.log").read_text()
    assert not stop_daemon(settings)


# ----------------------------------------------------------------------------- warm workers
PARENTS = '''
def run(ctx):
    import os, time
    with open(os.path.join(ctx.params["out"], ctx.node + ".txt"), "a") as f:
        f.write(f"{ctx.attempt} {ctx.trigger['occurrence']} {os.getpid()} {os.getppid()}\\n")
    time.sleep(float(ctx.params["sleep"]))
'''

SPANS = '''
def run(ctx):
    import os, time
    started = time.time()
    time.sleep(float(ctx.params["sleep"]))
    with open(os.path.join(ctx.params["out"], ctx.node + ".txt"), "a") as f:
        f.write(f"{ctx.trigger['occurrence']} {started} {time.time()}\\n")
'''


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def warm_worker(daemon: int, kind: str) -> int | None:
    """The pid of the daemon's warm worker of ``kind`` (a child of the daemon)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or parent_of(int(entry.name)) != daemon:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ultron_nb.runners.warm" in cmd and kind.encode() in cmd:
            return int(entry.name)
    return None


def test_a_warm_worker_killed_mid_run_loses_no_run_and_is_replaced(
        sqlite_settings: Settings, out: Path) -> None:
    settings = sqlite_settings
    db = open_database(settings.database_url)
    flow = Flow("k", [py("step", out, body=PARENTS, sleep=3.0, on_event="go",
                         options={"max_concurrent_runs": "1"})])
    launch(db, flow, "exp")
    daemon = start_daemon(settings)
    worker = wait_until(lambda: warm_worker(daemon, "python"), 60, "the warm worker")
    send_event(db, "go", 1)
    first = wait_until(lambda: lines(out, "step"), 60, "the first run")[0].split()
    runner = int(first[3])  # the node's parent: the runner, forked by the warm worker
    assert parent_of(runner) == worker
    os.kill(worker, signal.SIGKILL)  # mid-run: the runner leads its own session and goes on
    send_event(db, "go", 2)  # waits for the first run (one at a time), then needs a worker
    wait_until(lambda: len(lines(out, "step")) == 2 and no_runner_left(db), 90, "both runs")
    replacement = warm_worker(daemon, "python")
    assert replacement is not None and replacement != worker
    second_runner = int(lines(out, "step")[1].split()[3])
    assert second_runner != runner
    stop_daemon(settings)
    assert sorted(line.split()[1] for line in lines(out, "step")) == ["v1", "v2"]
    assert [(j.state, j.attempt, j.error) for j in all_jobs(db)] == [
        ("finished", 1, None), ("finished", 2, None)]
    with db.read() as conn:
        assert {r.state for r in conn.execute(select(trigger_log.c.state))} == {"done"}
    assert not process_alive(f"{runner}:")


def test_runs_of_one_node_overlap_up_to_its_bound(sqlite_settings: Settings,
                                                  out: Path) -> None:
    settings = sqlite_settings
    db = open_database(settings.database_url)
    flow = Flow("c", [py("burst", out, body=SPANS, sleep=2.0, on_event="go",
                         options={"max_concurrent_runs": "3"})])
    launch(db, flow, "exp")
    start_daemon(settings)
    for k in range(7):
        send_event(db, "go", k)
    wait_until(lambda: len(lines(out, "burst")) == 7 and no_runner_left(db), 120, "7 runs")
    stop_daemon(settings)
    runs = [line.split() for line in lines(out, "burst")]
    assert sorted(r[0] for r in runs) == [f"v{k}" for k in range(1, 8)]  # each event once
    spans = [(float(r[1]), float(r[2])) for r in runs]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 3, spans  # three at once, never more
    assert sorted(j.attempt for j in all_jobs(db)) == list(range(1, 8))


def test_a_bound_that_is_no_number_is_refused_at_launch(workdir: Path) -> None:
    ws = Workspace(Settings(home=workdir / ".ultron"))
    ws.define("bad", define_node("step", BODY, kind="python", on_event="go",
                                 options={"max_concurrent_runs": "many"}))
    with pytest.raises(UltronError, match=r"python node 'step': --option "
                                          r"max_concurrent_runs=many is not a whole number"):
        experiments.launch(ws, "bad", wait=False)
    assert experiments.list_experiments(ws) == []
