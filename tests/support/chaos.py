"""Killing a local cluster's task manager and waiting for Flink to recover (tests, bench)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from typing import Any

from ultron_nb.processes import pid_alive


def taskmanager_pid(cluster: Any) -> int | None:
    pids = cluster.pids().get("taskexecutor", [])
    return pids[0] if pids else None


def kill_taskmanager(cluster: Any, timeout: float = 10.0) -> int:
    """``kill -9`` the cluster's task manager; its pid once it is gone."""
    pid = taskmanager_pid(cluster)
    assert pid is not None, "no task manager to kill"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pid_alive(pid), f"task manager {pid} survived kill -9"
    return pid


def restarts(rest: Any, job_id: str) -> int:
    """How many times Flink restarted the job (its ``numRestarts`` metric)."""
    for metric in rest.get(f"/jobs/{job_id}/metrics", params={"get": "numRestarts"}) or []:
        if metric.get("id") == "numRestarts":
            return int(float(metric.get("value", 0)))
    return 0


def checkpoint_in_progress(rest: Any, job_ids: Iterable[str], timeout: float) -> str | None:
    """The first job seen with a checkpoint under way (polled every 5 ms), or None."""
    deadline = time.monotonic() + timeout
    ids = list(job_ids)
    while time.monotonic() < deadline:
        for job_id in ids:
            stats = rest.get_object(f"/jobs/{job_id}/checkpoints")
            if int(stats.get("counts", {}).get("in_progress", 0)) > 0:
                return job_id
        time.sleep(0.005)
    return None


def await_recovered(cluster: Any, rest: Any, before: dict[str, int], killed: int,
                    timeout: float) -> float:
    """Seconds until a new task manager runs and every job of ``before`` (job id → its
    restarts before the kill) restarted and runs again."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        pid = taskmanager_pid(cluster)
        if pid is not None and pid != killed and all(
                rest.job_state(j) == "running" and restarts(rest, j) > n
                for j, n in before.items()):
            return time.monotonic() - started
        time.sleep(0.2)
    states = {j: (rest.job_state(j), restarts(rest, j)) for j in before}
    raise AssertionError(f"not recovered in {timeout:.0f} s: task manager "
                         f"{taskmanager_pid(cluster)}, jobs {states}")
