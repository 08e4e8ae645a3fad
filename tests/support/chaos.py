"""Killing a local cluster's task manager and waiting for Flink to recover (tests, bench)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from typing import Any

from ultron_nb.errors import UltronError
from ultron_nb.processes import pid_alive


def taskmanager_pid(cluster: Any) -> int | None:
    pids = cluster.pids().get("taskexecutor", [])
    return pids[0] if pids else None


#: When each killed task manager was killed (pid → epoch ms).
_KILLED_AT: dict[int, int] = {}


def kill_taskmanager(cluster: Any, timeout: float = 10.0) -> int:
    """``kill -9`` the cluster's task manager; its pid once it is gone."""
    pid = taskmanager_pid(cluster)
    assert pid is not None, "no task manager to kill"
    _KILLED_AT[pid] = int(time.time() * 1000)
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


def trigger_checkpoints(rest: Any, job_ids: Iterable[str]) -> dict[str, str]:
    """Ask Flink for a checkpoint of every job now (REST ``POST /jobs/ID/checkpoints``);
    job id → the trigger's id, to learn later how the checkpoint ended. (The statistics of
    ``GET /jobs/ID/checkpoints`` come from a cache refreshed every few seconds: polling them
    rarely sees a checkpoint under way.)"""
    return {j: str(rest.request("POST", f"/jobs/{j}/checkpoints", json={})["request-id"])
            for j in job_ids}


def _trigger_status(rest: Any, job_id: str, trigger_id: str) -> dict[str, Any]:
    return rest.get_object(f"/jobs/{job_id}/checkpoints/{trigger_id}")


def checkpoint_outcome(rest: Any, job_id: str, trigger_id: str, timeout: float = 60.0) -> str:
    """``completed`` or ``failed``: how the checkpoint of ``trigger_id`` ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = _trigger_status(rest, job_id, trigger_id)
        if body.get("status", {}).get("id") == "COMPLETED":
            operation = body.get("operation") or {}
            return "failed" if operation.get("failure-cause") else "completed"
        time.sleep(0.1)
    raise AssertionError(f"the checkpoint {trigger_id} of job {job_id} did not end")


def tasks_running(rest: Any, job_id: str, since_ms: int | None = None) -> bool:
    """Whether the job and every task of it run (a job restarted by Flink is ``RUNNING``
    while its tasks are still being deployed, and a checkpoint asked for then fails); with
    ``since_ms``, every task started since then (the REST API serves a job's view from a
    cache for a few seconds: right after a kill it still shows the dead tasks running)."""
    body = rest.get_object(f"/jobs/{job_id}")
    return body.get("state") == "RUNNING" and all(
        v.get("status") in ("RUNNING", "FINISHED")
        and (since_ms is None or int(v.get("start-time") or 0) >= since_ms)
        for v in body.get("vertices", []))


def _not_running_yet(rest: Any, job_id: str, trigger_id: str) -> bool:
    """Whether the checkpoint of ``trigger_id`` failed at once because a task of the job is
    not running (the job's view was stale, or Flink is restarting it)."""
    cause = str((_trigger_status(rest, job_id, trigger_id).get("operation") or {})
                .get("failure-cause") or "")
    return "not being executed" in cause or "not all required tasks" in cause.lower()


def _answers(ask: Any) -> Any:
    """``ask()``, or False while Flink's REST API fails to answer it (a job manager busy
    restarting jobs may answer an error for a moment)."""
    try:
        return ask()
    except UltronError:
        return False


def _await_tasks_running(rest: Any, job_ids: Iterable[str], timeout: float = 120.0) -> None:
    ids = list(job_ids)
    deadline = time.monotonic() + timeout
    while not _answers(lambda: all(tasks_running(rest, j) for j in ids)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the tasks of {ids} are not all running after {timeout:.0f} s")
        time.sleep(0.1)


def kill_during_checkpoints(cluster: Any, rest: Any, job_ids: Iterable[str],
                            attempts: int = 10) -> tuple[int, dict[str, str]]:
    """``kill -9`` the task manager while checkpoints are under way; the killed pid and the
    triggers of the checkpoints it cut short.

    Once every task runs, a checkpoint of every job is asked for, the task manager frozen at
    once (SIGSTOP) and killed if one of them has not completed yet: caught while the task
    manager writes its snapshot. When none is caught in ``attempts`` tries (small state is
    written in a few milliseconds), the task manager is frozen first and the checkpoints
    asked for then: they are pending at the job manager, their barriers sent to a task
    manager that never acknowledges them, when it is killed."""
    pid = taskmanager_pid(cluster)
    assert pid is not None, "no task manager to kill"
    ids = list(job_ids)
    tries = 0
    deadline = time.monotonic() + 120.0
    while tries < attempts:
        _await_tasks_running(rest, ids)
        triggers = trigger_checkpoints(rest, ids)
        os.kill(pid, signal.SIGSTOP)
        pending = {j: t for j, t in triggers.items()
                   if _trigger_status(rest, j, t).get("status", {}).get("id") != "COMPLETED"}
        if pending:
            kill_taskmanager(cluster)
            return pid, pending
        os.kill(pid, signal.SIGCONT)
        for j, t in triggers.items():  # the next try starts once these are done
            checkpoint_outcome(rest, j, t)
        if any(_not_running_yet(rest, j, t) for j, t in triggers.items()) and \
                time.monotonic() < deadline:
            time.sleep(0.5)  # not a try: the tasks were not all running
            continue
        tries += 1
    _await_tasks_running(rest, ids)
    os.kill(pid, signal.SIGSTOP)
    triggers = trigger_checkpoints(rest, ids)
    pending = {j: t for j, t in triggers.items()
               if _trigger_status(rest, j, t).get("status", {}).get("id") != "COMPLETED"}
    kill_taskmanager(cluster)
    failed = {j: (_trigger_status(rest, j, t).get("operation") or {}).get("failure-cause")
              for j, t in triggers.items() if j not in pending}
    assert pending, f"no checkpoint under way even with the task manager frozen: {failed}"
    return pid, pending


def await_recovered(cluster: Any, rest: Any, before: dict[str, int], killed: int,
                    timeout: float) -> float:
    """Seconds until a new task manager runs and every job of ``before`` (job id → its
    restarts before the kill) restarted and runs again, every task of it started since
    the kill."""
    started = time.monotonic()
    deadline = started + timeout
    since = _KILLED_AT.get(killed)
    while time.monotonic() < deadline:
        pid = taskmanager_pid(cluster)
        if pid is not None and pid != killed and _answers(lambda: all(
                restarts(rest, j) > n and tasks_running(rest, j, since)
                for j, n in before.items())):
            return time.monotonic() - started
        time.sleep(0.2)
    states = {j: (rest.job_state(j), restarts(rest, j)) for j in before}
    raise AssertionError(f"not recovered in {timeout:.0f} s: task manager "
                         f"{taskmanager_pid(cluster)}, jobs {states}")
