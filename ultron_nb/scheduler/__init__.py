"""The scheduler: runs the control edges of every experiment, as one daemon per store.

:mod:`~ultron_nb.scheduler.rules` (pure planning: events → triggers, tick arithmetic),
:mod:`~ultron_nb.scheduler.loop` (the loop: triggers committed with the cursor, carried out
by the runners), :mod:`~ultron_nb.scheduler.daemon` (the process: lock, pid file, logs).
"""

from ultron_nb.scheduler.daemon import daemon_status, main, run_forever, start_daemon, stop_daemon
from ultron_nb.scheduler.loop import Scheduler

__all__ = ["Scheduler", "daemon_status", "main", "run_forever", "start_daemon", "stop_daemon"]
