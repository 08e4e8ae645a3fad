"""Warm workers: one pre-imported process per node kind that forks the runner of each run.

A Python or DuckDB run used to cost two fresh interpreters (the runner that claims the
trigger and records the run, and the child that runs the node), each paying for importing
the package. A warm worker has imported what runs need (the store, the events, the node
context, pandas; DuckDB for DuckDB nodes) once, and after its first run, while it waits,
the libraries model nodes use (MLflow, scikit-learn: :data:`LATER`); for each run it forks
the runner (:func:`ultron_nb.runners.process.run_node`), which forks the child that runs the
user's code
— so the user's code still runs in a process of its own, and a runner still leads a session
of its own (a stop signals its process group; it outlives the worker and the scheduler).

``python -m ultron_nb.runners.warm KIND`` reads one request per line on its standard input
(``{"spec": PATH, "log": PATH}``) and answers on its standard output ``{"pid": N}`` once the
runner is forked; it reports ended runners as ``{"exit": PID, "code": C}`` (dropped when
nobody reads). It exits when its standard input closes (its parent — the scheduler — is
gone); runners it forked keep running. :class:`WarmWorker` is the parent's side; it starts
the worker again when it died, and its caller falls back to a fresh interpreter when even
that fails.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The runner's module, loaded by path (the runners' modules import this one).
RUNNER_MODULE = "ultron_nb.runners.process"
#: What a worker of each kind imports before its first run (missing ones are skipped).
PRELOAD: dict[str, tuple[str, ...]] = {
    "python": (RUNNER_MODULE, "pandas"),
    "duckdb": (RUNNER_MODULE, "ultron_nb.runners.duckdb_node", "pandas"),
}
#: What it imports after its first run, one module at a time while no request waits: the
#: libraries model nodes use (MLflow, scikit-learn) take seconds to import, which each
#: training, validation or serving run would pay again. Not before the first run: a worker
#: starts with the scheduler, next to a cluster's JVMs starting, and a scheduler that runs
#: no Python node should not pay for them. A request that comes meanwhile waits for one
#: module's import at most.
LATER: dict[str, tuple[str, ...]] = {
    "python": ("mlflow", "mlflow.pyfunc", "mlflow.sklearn", "mlflow.artifacts",
               "sklearn.linear_model", "sklearn.feature_extraction",
               "ultron_nb.engines.mlflow.center", "ultron_nb.engines.mlflow.flavors"),
}
ACK_TIMEOUT = 60.0  # a new worker may still be importing


class WorkerGone(Exception):
    """The worker could not take a run (it died, or could not fork)."""


# ---------------------------------------------------------------- the worker process
def _write(fd: int, message: Mapping[str, Any], *, must: bool) -> None:
    """One line on the parent pipe; a report (``must`` False) is dropped when it is full."""
    data = (json.dumps(dict(message)) + "\n").encode()
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            if not must:
                return
            select.select([], [fd], [], 1.0)


def _reap(fd: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _write(fd, {"exit": pid, "code": os.waitstatus_to_exitcode(status)}, must=False)


def _fork_runner(request: Mapping[str, Any]) -> int:
    """Fork the runner of one run; in the child run it and never return."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()  # the runner leads its own session and process group, as before
        for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signo, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        out = os.open(str(request["log"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(devnull)
        os.close(out)
        if request.get("cwd"):
            os.chdir(str(request["cwd"]))
        process = importlib.import_module(RUNNER_MODULE)
        code = process.run_node(str(request["spec"]))
    except BaseException:  # the runner's last word goes to its log
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _preload(kind: str, name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception as exc:  # not installed, or broken: the run that needs it says so
        log.info("warm %s worker: %s not preloaded (%s: %s)", kind, name, type(exc).__name__,
                 exc)


def _open_store() -> None:
    """Open the store once, its schema checked, so that a forked runner does not pay for
    that check on each run (its connections are never shared: see
    :mod:`ultron_nb.store`)."""
    url = os.environ.get("ULTRON_DB_URL")
    if not url:
        return
    try:
        from ultron_nb.store import open_database

        open_database(url)
    except Exception as exc:  # the runner opens it again and says why
        log.info("warm worker: the store is not opened ahead (%s)", exc)


def serve(kind: str) -> int:
    """The worker's loop (see the module docstring)."""
    for name in PRELOAD.get(kind, ()):
        _preload(kind, name)
    _open_store()
    out = sys.stdout.fileno()
    os.set_blocking(out, False)
    stdin = sys.stdin.fileno()
    buffer = b""
    log.info("warm %s worker %d ready", kind, os.getpid())
    later: list[str] | None = None  # what LATER leaves to import, once a run was served
    while True:
        readable, _, _ = select.select([stdin], [], [], 0.0 if later else 0.2)
        _reap(out)
        if not readable:
            if later:
                _preload(kind, later.pop(0))
            continue
        chunk = os.read(stdin, 65536)
        if not chunk:
            break  # the parent is gone: runners keep running
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                _write(out, {"pid": _fork_runner(request)}, must=True)
                if later is None:
                    later = list(LATER.get(kind, ()))
            except (OSError, ValueError, KeyError) as exc:
                _write(out, {"error": f"{type(exc).__name__}: {exc}"}, must=True)
    log.info("warm %s worker %d: its parent is gone, exiting", kind, os.getpid())
    return 0


# ---------------------------------------------------------------- the parent's side
class RunnerHandle:
    """A runner forked by a worker, seen from the worker's parent (as much of
    :class:`subprocess.Popen` as the runners use: ``pid``, ``poll()``, ``returncode``)."""

    def __init__(self, pid: int, worker: WarmWorker):
        self.pid = pid
        self._worker = worker

    @property
    def returncode(self) -> int | None:
        return self._worker.exit_codes.get(self.pid)

    def poll(self) -> int | None:
        if self.pid not in self._worker.exit_codes:
            self._worker.drain()
            if self.pid not in self._worker.exit_codes and not self._worker.alive():
                # The worker died: nobody reports this runner's end; ask the kernel.
                from ultron_nb.processes import pid_alive

                if not pid_alive(self.pid):
                    self._worker.exit_codes[self.pid] = -1
        return self.returncode


class WarmWorker:
    """The parent's side of one warm worker of ``kind`` (started on first use)."""

    def __init__(self, kind: str, *, python: str, env: Mapping[str, str], cwd: Path,
                 log_file: Path):
        self.kind = kind
        self.python = python
        self.env = dict(env)
        self.cwd = cwd
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_codes: dict[int, int] = {}
        self._buffer = b""
        self._acks: list[dict[str, Any]] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the worker now (it imports while nothing waits for it)."""
        if self.alive():
            return
        self._discard()
        self.log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.log_file, "ab") as err:
            self.proc = subprocess.Popen(
                [self.python, "-m", "ultron_nb.runners.warm", self.kind],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                cwd=str(self.cwd), env=self.env, start_new_session=True)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        log.info("warm %s worker started (pid %d)", self.kind, self.proc.pid)

    def launch(self, spec_path: Path, runner_log: Path, cwd: str) -> RunnerHandle:
        """Have the worker fork the runner of ``spec_path``; its handle. WorkerGone when
        neither the worker nor a new one could (the caller starts a fresh interpreter)."""
        for attempt in (1, 2):
            self.start()
            try:
                return RunnerHandle(self._request({"spec": str(spec_path), "cwd": cwd,
                                                   "log": str(runner_log)}), self)
            except WorkerGone as exc:
                log.warning("warm %s worker (pid %s) failed a launch (%s)%s", self.kind,
                            self.pid, exc, ": starting another" if attempt == 1 else "")
                self._discard()
        raise WorkerGone(f"no warm {self.kind} worker could take the run")

    def _request(self, request: Mapping[str, Any]) -> int:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(dict(request)) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            raise WorkerGone(f"cannot write to it: {exc}") from None
        deadline = time.monotonic() + ACK_TIMEOUT
        while not self._acks:
            self.drain()
            if self._acks:
                break
            if not self.alive():
                raise WorkerGone("it exited")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerGone(f"no answer within {ACK_TIMEOUT:.0f} s")
            assert self.proc.stdout is not None
            select.select([self.proc.stdout.fileno()], [], [], min(remaining, 0.5))
        ack = self._acks.pop(0)
        if "pid" not in ack:
            raise WorkerGone(str(ack.get("error", ack)))
        return int(ack["pid"])

    def drain(self) -> None:
        """Read what the worker wrote (acknowledgements, ended runners) without waiting."""
        if self.proc is None or self.proc.stdout is None:
            return
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    break
                raise
            if not chunk:
                break
            self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "exit" in message:
                self.exit_codes[int(message["exit"])] = int(message["code"])
            else:
                self._acks.append(message)

    def _discard(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        self._buffer, self._acks = b"", []
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # only the worker: its runners lead sessions of their own
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()

    def close(self, timeout: float = 5.0) -> None:
        """Let the worker go (its standard input closes); its runners keep running."""
        if self.proc is None:
            return
        proc = self.proc
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        self._discard()


def main(argv: list[str] | None = None) -> int:
    from ultron_nb.logs import configure_process_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    configure_process_logging()
    if len(argv) != 1 or argv[0] not in PRELOAD:
        sys.stderr.write(f"usage: python -m ultron_nb.runners.warm {{{','.join(PRELOAD)}}}\n")
        return 2
    return serve(argv[0])


if __name__ == "__main__":
    sys.exit(main())
