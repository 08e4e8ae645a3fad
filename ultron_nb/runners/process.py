"""The processes of one scheduler-run node run (Python and DuckDB nodes).

``python -m ultron_nb.runners.process run-node SPEC`` is the *runner* process (its own
session, so it outlives the scheduler) — or the same code in a process a warm worker forked
(:mod:`ultron_nb.runners.warm`), which then forks the node's child instead of starting an
interpreter. In ONE transaction it claims the run's trigger,
records a ``jobs`` row (attempt, trigger, pid) and sends the ``running`` status event; a
trigger it cannot claim (already claimed, cancelled or suspended by a stop) does not run. It
then runs the node in a child process — forked from itself when the node runs on the same
interpreter (no second interpreter start), else ``exec-node`` — with the log
``<home>/logs/<experiment>/<node>-<attempt>.log`` and records the end — ``finished``,
``failed`` (with the last error line, or the signal that killed it) or ``stopped`` — with its
status event, again in one transaction, retrying while the store is unreachable.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ultron_nb.errors import StoreError, UltronError
from ultron_nb.events import append_event
from ultron_nb.events.keys import SENDER_RUNNER, NodeState, status_key
from ultron_nb.files import open_private, private_dir
from ultron_nb.flow.sqltext import substitute
from ultron_nb.processes import process_identity
from ultron_nb.runners.context import NodeContext
from ultron_nb.store import experiments as repo
from ultron_nb.store import open_database
from ultron_nb.store import triggers as trigger_log

log = logging.getLogger(__name__)


def end_message(code: int | None, log_path: Path) -> str:
    """Why a run failed, in one line: the signal that killed it or its last error line."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} ({-code})"
    last = _last_error_line(log_path)
    return f"exit code {code}" + (f": {last}" if last else "")


def _last_error_line(log_path: Path) -> str:
    try:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith("# ")]
    except OSError:
        return ""
    return lines[-1][:500] if lines else ""


def _claim(db: Any, spec: dict[str, Any]) -> tuple[int, int, Path] | None:
    """Claim the trigger and record the run; (job id, attempt, log path) or None."""
    experiment, node = spec["experiment"], spec["node"]
    trigger_id = int(spec["trigger"]["id"])
    with db.write() as conn:
        if not trigger_log.claim(conn, trigger_id):
            row = trigger_log.get(conn, trigger_id)
            log.info("trigger %d of %s.%s is %s: not running it", trigger_id, experiment,
                     node, row.state if row else "gone")
            return None
        attempt = repo.next_attempt(conn, spec["instance_id"])
        log_path = Path(spec["home"]) / "logs" / experiment / f"{node}-{attempt}.log"
        job = repo.add_job(conn, instance_id=spec["instance_id"], engine=spec["engine"],
                           external_id=process_identity(os.getpid()),
                           target=f"{spec['engine']}:{experiment}", state=NodeState.RUNNING,
                           attempt=attempt, trigger_id=trigger_id)
        append_event(conn, status_key(experiment, node),
                     {"state": NodeState.RUNNING, "attempt": attempt, "trigger": trigger_id,
                      "pid": os.getpid(), "log": str(log_path)}, sender=SENDER_RUNNER)
    return job.id, attempt, log_path


class ForkedChild:
    """A child this process forked, waited for like a :class:`subprocess.Popen`."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._fd = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            if self._fd is not None:
                select.select([self._fd], [], [], remaining)  # readable once it exited
            else:
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.05)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signo: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signo)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.send_signal(signal.SIGKILL)


def _fork_node(spec: dict[str, Any], spec_path: str, attempt: int, log_path: Path,
               out: Any) -> ForkedChild:
    """Fork the child that runs the node: in its working directory, standard input from
    ``/dev/null``, its output to the run's log, the runner's signal handlers undone."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return ForkedChild(pid)
    code = 1
    try:
        os.chdir(spec["cwd"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = [__file__, "exec-node", spec_path, str(attempt), str(log_path)]
        code = _run_as_main(spec_path, attempt, str(log_path))
    finally:
        os._exit(code)


def _run_as_main(spec_path: str, attempt: int, log_path: str) -> int:
    """Run the node in a forked child as a fresh interpreter would: the traceback of an
    error and exit status 1, ``sys.exit`` honoured, then non-daemon threads joined and
    ``atexit`` handlers run (MLflow ends its runs there)."""
    if "numpy" in sys.modules:  # forked children must not share the parent's random state
        with contextlib.suppress(Exception):
            sys.modules["numpy"].random.seed()
    code = 1
    try:
        code = exec_node(spec_path, attempt, log_path)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = int(exc.code or 0)
        else:
            sys.stderr.write(f"{exc.code}\n")
            code = 1
    except BaseException:  # the user's error goes to the run's log
        traceback.print_exc()
        code = 1
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _start_child(spec: dict[str, Any], spec_path: str, attempt: int, log_path: Path,
                 out: Any) -> Any:
    """The node's child process. Forked from this runner when the node runs on this
    interpreter (it has the imports already: no second interpreter start, which is most
    of the runner's latency); a fresh ``python -m ... exec-node`` for another one."""
    if hasattr(os, "fork") and os.path.realpath(spec["python"]) == \
            os.path.realpath(sys.executable):
        return _fork_node(spec, spec_path, attempt, log_path, out)
    return subprocess.Popen(
        [spec["python"], "-m", "ultron_nb.runners.process", "exec-node", spec_path,
         str(attempt), str(log_path)],
        cwd=spec["cwd"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
    )


def _supervise(spec: dict[str, Any], spec_path: str, attempt: int, log_path: Path,
               stop_requested: threading.Event, stop_at: list[float]) -> int | None:
    """Run the node's child process; SIGTERM it on a stop, SIGKILL after the grace."""
    private_dir(log_path.parent)
    code: int | None = None
    with os.fdopen(open_private(log_path), "ab") as out:
        out.write(f"# {spec['experiment']}.{spec['node']} attempt {attempt} (trigger "
                  f"{spec['trigger'].get('id')}: {spec['trigger'].get('edge')} @ "
                  f"{spec['trigger'].get('occurrence')})\n".encode())
        out.flush()
        if stop_requested.is_set():
            return None
        child = _start_child(spec, spec_path, attempt, log_path, out)
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
    return code


def run_node(spec_path: str) -> int:
    """The runner process of one node run (see the module docstring)."""
    spec = json.loads(Path(spec_path).read_text())
    db = open_database(os.environ["ULTRON_DB_URL"])
    stop_requested = threading.Event()
    stop_at: list[float] = []

    def on_term(_signo: int, _frame: Any) -> None:
        if not stop_requested.is_set():
            stop_at.append(time.monotonic())
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    claimed = _claim(db, spec)
    if claimed is None:
        return 0
    job_id, attempt, log_path = claimed
    code = _supervise(spec, spec_path, attempt, log_path, stop_requested, stop_at)
    if code == 0:
        state, error = NodeState.FINISHED, None
    elif stop_requested.is_set():
        state, error = NodeState.STOPPED, f"stopped ({end_message(code, log_path)})"
    else:
        state, error = NodeState.FAILED, end_message(code, log_path)
    return _record_end(db, spec, job_id, attempt, code, state, error, log_path)


def _record_end(db: Any, spec: dict[str, Any], job_id: int, attempt: int, code: int | None,
                state: NodeState, error: str | None, log_path: Path) -> int:
    ended = time.time()
    key = status_key(spec["experiment"], spec["node"])
    for retry in range(60):  # the run happened: its end must be recorded, outage or not
        try:
            with db.write() as conn:
                repo.update_job(conn, job_id, state=state, ended_at=ended, error=error)
                append_event(conn, key, {"state": state, "attempt": attempt,
                                         "trigger": int(spec["trigger"]["id"]),
                                         "exit_code": code, "log": str(log_path)},
                             sender=SENDER_RUNNER)
            return 0
        except (SQLAlchemyError, StoreError) as exc:
            log.warning("cannot record the end of %s.%s yet (%s); retrying",
                        spec["experiment"], spec["node"], exc)
            time.sleep(min(2.0**retry, 10.0))
    return 1


def context_of(spec: dict[str, Any], attempt: int, log_path: str) -> NodeContext:
    return NodeContext(
        experiment=spec["experiment"], node=spec["node"], instance_id=spec["instance_id"],
        attempt=attempt, params=dict(spec["params"]), inputs=dict(spec["inputs"] or {}),
        output=spec["output"], trigger=dict(spec["trigger"]), home=Path(spec["home"]),
        log_path=Path(log_path), db_url=os.environ.get("ULTRON_DB_URL", ""),
        flow=str(spec.get("flow", "")), flow_version=int(spec.get("flow_version") or 0),
    )


def exec_node(spec_path: str, attempt: int, log_path: str) -> int:
    """The child process that runs the node: a Python node's own code, or a DuckDB query."""
    spec = json.loads(Path(spec_path).read_text())
    ctx = context_of(spec, attempt, log_path)
    if spec.get("engine") == "duckdb":
        from ultron_nb.runners.duckdb_node import execute

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
        log.info("result: %r", result)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from ultron_nb.logs import configure_process_logging

    configure_process_logging()
    if argv[:1] == ["run-node"]:
        return run_node(argv[1])
    if argv[:1] == ["exec-node"]:
        try:
            return exec_node(argv[1], int(argv[2]), argv[3])
        except UltronError as exc:  # ultron's own refusal (missing input ...): one line
            sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
            return 1
        except Exception:  # the node's own code: its traceback is what helps
            traceback.print_exc()
            return 1
    sys.stderr.write("usage: python -m ultron_nb.runners.process run-node SPEC | "
                     "exec-node SPEC ATTEMPT LOG\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
