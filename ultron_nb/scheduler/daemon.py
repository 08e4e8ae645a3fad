"""The scheduler daemon: one process per store, started by ``ultron up`` / ``cluster up``.

It holds ``<home>/scheduler.lock`` (and on PostgreSQL a session advisory lock), so one
scheduler runs per store; writes ``<home>/scheduler.pid``; logs to
``<home>/logs/scheduler.log`` (rotated; what the interpreter itself prints on a crash goes to
``scheduler.out``). It outlives the process that started it; :func:`stop_daemon` stops it by
its PID and reaps it when it is our child (no zombie left behind).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ultron_nb.config import Settings, load_settings
from ultron_nb.errors import UltronError
from ultron_nb.files import private_dir
from ultron_nb.logs import configure_process_logging
from ultron_nb.runners.registry import RUNNERS, Runners
from ultron_nb.scheduler.loop import Scheduler
from ultron_nb.store import open_database

log = logging.getLogger(__name__)

SCHEDULER_LOCK_ID = 0x756C7473  # PostgreSQL session lock: one scheduler per store
#: Daemons this process started, by pid: reaped when stopped.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def paths(settings: Settings) -> tuple[Path, Path, Path]:
    """(pid file, lock file, log file) of the scheduler of ``settings.home``."""
    home = settings.home
    return home / "scheduler.pid", home / "scheduler.lock", home / "logs" / "scheduler.log"


def daemon_status(settings: Settings) -> int | None:
    """The pid of the scheduler running for ``settings.home`` (-1: starting), or None."""
    pid_file, lock_file, _ = paths(settings)
    if not lock_file.exists():
        return None
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
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


def spawn_daemon(settings: Settings, *, env: Mapping[str, str] | None = None,
                 args: Sequence[str] = ()) -> subprocess.Popen[bytes] | int:
    """Start the scheduler daemon for ``settings`` unless one runs (then its pid); see
    :func:`await_daemon`."""
    running = daemon_status(settings)
    if running and running > 0:
        return running
    _, _, log_file = paths(settings)
    private_dir(settings.home)
    private_dir(log_file.parent)
    out_file = log_file.with_suffix(".out")
    command = [sys.executable, "-m", "ultron_nb.scheduler.daemon",
               "--home", str(settings.home), *args]
    environment = dict(os.environ if env is None else env)
    environment["ULTRON_DB_URL"] = settings.database_url  # not on the command line: ps shows it
    if settings.flink_url:  # with its credentials, if any: the daemon talks to that cluster
        environment["ULTRON_FLINK_URL"] = settings.flink_url
    if settings.mlflow_uri:  # the registry it watches, and its Python nodes use
        environment["ULTRON_MLFLOW_URI"] = settings.mlflow_uri
    with open(out_file, "ab") as out:
        os.chmod(out_file, 0o600)
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, cwd=str(settings.home.parent),
                                env=environment)
    _CHILDREN[proc.pid] = proc
    return proc


def await_daemon(settings: Settings, started: subprocess.Popen[bytes] | int, *,
                 timeout: float = 30.0) -> int:
    """Wait until the daemon :func:`spawn_daemon` started holds the store's lock; its pid."""
    if isinstance(started, int):
        return started
    proc = started
    _, _, log_file = paths(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
            tail = _tail(log_file) or _tail(log_file.with_suffix(".out"))
            raise UltronError("the scheduler did not start: " + " | ".join(tail))
        if daemon_status(settings) == proc.pid:
            return proc.pid
        time.sleep(0.02)
    raise UltronError(f"the scheduler did not start within {timeout:.0f} s (see {log_file})")


def start_daemon(settings: Settings, *, timeout: float = 30.0,
                 env: Mapping[str, str] | None = None, args: Sequence[str] = ()) -> int:
    """Start the scheduler daemon for ``settings`` (if none runs); its pid."""
    return await_daemon(settings, spawn_daemon(settings, env=env, args=args), timeout=timeout)


def _tail(path: Path, lines: int = 3) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def stop_daemon(settings: Settings, *, timeout: float = 30.0) -> bool:
    """Stop the scheduler of ``settings`` (SIGTERM, then wait, then reap); False if none."""
    pid = daemon_status(settings)
    if not pid or pid < 0:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while daemon_status(settings) is not None:
        if time.monotonic() > deadline:
            raise UltronError(f"the scheduler (pid {pid}) did not stop within {timeout:.0f} s")
        time.sleep(0.02)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
    return True


def _store_lock(db: Any) -> Any:
    """PostgreSQL: the session advisory lock that makes this the store's one scheduler."""
    if db.is_sqlite:
        return None
    conn = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    if not conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({SCHEDULER_LOCK_ID})").scalar():
        conn.close()
        raise UltronError(f"a scheduler already runs for the store {db.safe_url}")
    return conn


def run_forever(settings: Settings, runners: Mapping[str, str] | None = None, *,
                stop: threading.Event | None = None) -> None:
    """Run the scheduler daemon in this process until SIGTERM/SIGINT (or ``stop``).

    ``runners`` maps node kinds to runner classes (``module:Class``; default: every kind's)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    pid_file, lock_file, _ = paths(settings)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
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
        store_lock = _store_lock(db)
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
        scheduler = Scheduler(db, settings, Runners.for_store(
            settings, db, dict(runners) if runners else None))
        scheduler.warm_up()
        log.info("scheduler %d running for %s", os.getpid(), settings.home)
        scheduler.run(stop)
    finally:
        if scheduler is not None:
            scheduler.close()
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
    """``python -m ultron_nb.scheduler.daemon [--home H] [--db-url U] [--runner K=M:C]``."""
    parser = argparse.ArgumentParser(prog="ultron scheduler",
                                     description="Run the control edges of every experiment.")
    parser.add_argument("--home", help="the .ultron directory (default: from the settings)")
    parser.add_argument("--db-url", help="the metadata store URL (default: from the settings)")
    parser.add_argument("--runner", action="append", default=[], metavar="KIND=MODULE:CLASS",
                        help="the runner of a node kind (default: "
                             f"{', '.join(f'{k}={v}' for k, v in RUNNERS.items())})")
    parser.add_argument("--foreground", action="store_true", help="log to standard error")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    settings = load_settings(home=args.home, db_url=args.db_url)
    _, _, log_file = paths(settings)
    configure_process_logging(level=logging.DEBUG if args.verbose else logging.INFO,
                              file=None if args.foreground else log_file)
    runners = dict(RUNNERS)
    for item in args.runner:
        kind, _, spec = item.partition("=")
        runners[kind] = spec
    try:
        run_forever(settings, runners)
    except UltronError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
