"""A run forked by a warm worker behaves as one in a fresh interpreter did.

The real scheduler daemon runs the nodes; every fact is read from the side effects of the
node's code and from the store.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from ultron_nb.config import Settings
from ultron_nb.events import send_event
from ultron_nb.flow import Flow
from ultron_nb.flow.build import define_node
from ultron_nb.scheduler import daemon_status, start_daemon, stop_daemon
from ultron_nb.store import Database, open_database
from ultron_nb.store.schema import jobs

from ..scheduler.test_daemon import lines, no_runner_left, wait_until, warm_worker
from ..scheduler.test_loop import launch

pytestmark = pytest.mark.slow

LIKE_A_PROCESS = '''
def run(ctx):
    import atexit, os, sys, threading, time
    import numpy
    out = ctx.params["out"]
    attempt = ctx.attempt

    def late():
        time.sleep(0.5)
        with open(os.path.join(out, f"thread-{attempt}"), "w") as f:
            f.write("joined")

    def at_exit():
        with open(os.path.join(out, f"atexit-{attempt}"), "w") as f:
            f.write("ran")

    threading.Thread(target=late).start()  # not a daemon: the run waits for it
    atexit.register(at_exit)
    with open(os.path.join(out, "node.txt"), "a") as f:
        f.write(f"{attempt} {numpy.random.randint(1 << 62)} {'pandas' in sys.modules}\\n")
    print("hello from", ctx.node)
    if ctx.trigger["occurrence"] == "v2":
        sys.exit(3)
    if ctx.trigger["occurrence"] == "v3":
        raise RuntimeError("the model diverged")
'''


@pytest.fixture
def settings(workdir: Path) -> Iterator[Settings]:
    s = Settings(home=workdir / ".ultron")
    yield s
    pid = daemon_status(s)
    if pid and pid > 0:
        os.kill(pid, signal.SIGKILL)


def on_go(settings: Settings, workdir: Path, body: str) -> tuple[Database, Path, int, int]:
    """Python node ``node`` (``body``) of experiment ``exp``, one run per event ``go`` at a
    time, launched under a real daemon: (store, folder of its effects, daemon pid, warm
    worker pid)."""
    out = workdir / "effects"
    out.mkdir()
    db = open_database(settings.database_url)
    flow = Flow("w", [define_node("node", body, kind="python", params={"out": str(out)},
                                  on_event="go", options={"max_concurrent_runs": "1"})])
    launch(db, flow, "exp")
    daemon = start_daemon(settings)
    worker = wait_until(lambda: warm_worker(daemon, "python"), 60, "the warm worker")
    return db, out, daemon, worker


def test_forked_runs_exit_join_threads_run_atexit_and_draw_their_own_random(
        settings: Settings, workdir: Path) -> None:
    db, out, daemon, worker = on_go(settings, workdir, LIKE_A_PROCESS)
    for k in range(4):
        send_event(db, "go", k)
    wait_until(lambda: len(lines(out, "node")) == 4 and no_runner_left(db), 120, "4 runs")
    assert warm_worker(daemon, "python") == worker  # every run came from the same worker
    stop_daemon(settings)

    runs = [line.split() for line in lines(out, "node")]
    assert [r[2] for r in runs] == ["True"] * 4  # pandas was preloaded by the worker
    assert len({r[1] for r in runs}) == 4  # each forked run drew its own random numbers
    for attempt in range(1, 5):
        assert (out / f"thread-{attempt}").read_text() == "joined"
        assert (out / f"atexit-{attempt}").read_text() == "ran"
    with db.read() as conn:
        ended = [(r.attempt, r.state, r.error) for r in
                 conn.execute(select(jobs).order_by(jobs.c.attempt))]
    assert [e[:2] for e in ended] == [(1, "finished"), (2, "failed"), (3, "failed"),
                                      (4, "finished")]
    assert ended[1][2] == "exit code 3: hello from node"  # the log's last line, as before
    assert ended[2][2].startswith("exit code 1: RuntimeError: the model diverged")
    log_1 = (settings.home / "logs" / "exp" / "node-1.log").read_text()
    assert "hello from node" in log_1 and "# exit code 0" in log_1
    log_3 = (settings.home / "logs" / "exp" / "node-3.log").read_text()
    assert "Traceback" in log_3


MODEL_LIBRARIES = '''
def run(ctx):
    import sys
    found = [name in sys.modules for name in ("mlflow", "sklearn.linear_model")]
    with open(ctx.params["out"] + "/node.txt", "a") as f:
        f.write(f"{ctx.attempt} {found[0]} {found[1]}\\n")
'''


def test_runs_after_the_first_find_the_model_libraries_imported(
        settings: Settings, workdir: Path) -> None:
    """MLflow and scikit-learn take seconds to import: the worker imports them after its
    first run, so the runs of a training or validation node that follow do not pay again."""
    db, out, _daemon, worker = on_go(settings, workdir, MODEL_LIBRARIES)
    send_event(db, "go", 0)
    wait_until(lambda: len(lines(out, "node")) == 1 and no_runner_left(db), 120, "a run")
    assert lines(out, "node")[0].split()[1:] == ["False", "False"]  # not before a run

    def imported() -> bool:  # scikit-learn's compiled modules, mapped into the worker
        return "/sklearn/" in Path(f"/proc/{worker}/maps").read_text()

    wait_until(imported, 120, "the worker to import the model libraries")
    send_event(db, "go", 1)
    wait_until(lambda: len(lines(out, "node")) == 2 and no_runner_left(db), 120, "two runs")
    stop_daemon(settings)
    assert lines(out, "node")[1].split()[1:] == ["True", "True"]
