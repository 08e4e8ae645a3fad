"""Flink fixtures: real local session clusters on free 127.0.0.1 ports, stopped by their PIDs.

* ``flink_cluster`` (session): the cluster most tests share (8 slots).
* ``remote_flink_cluster`` (session): a second cluster used as the "remote" one. It is started
  by a child Python process that exits right away, so every test that uses it also shows that
  a cluster outlives the process that started it.
* ``job_server`` (session): a job server (its own home) warmed against ``flink_cluster``.
* ``flink_workspace``: a fresh workspace whose local cluster is ``flink_cluster`` and which
  compiles and submits through ``job_server`` (as a user's kernels do after ``ultron up``);
  the jobs its experiments started are cancelled afterwards, so tests do not hold slots.

Register with ``pytest_plugins = ["tests.conftest_flink"]`` in the root conftest.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _settings(home: Path, port: int) -> Any:
    from ultron_nb.config import Settings

    return Settings(home=home, flink_port=port)


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The shared local cluster (REST and every other port picked free)."""
    from ultron_nb.engines.flink.cluster import LocalCluster, free_port

    home = tmp_path_factory.mktemp("flink-local") / ".ultron"
    cluster = LocalCluster(_settings(home, free_port()), slots=8, taskmanager_memory="1280m",
                           jobmanager_memory="1024m")
    cluster.up()
    try:
        yield cluster
    finally:
        _down_by_pid(cluster)


@pytest.fixture(scope="session")
def remote_flink_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second cluster, started by a child process that has exited when the test runs."""
    from ultron_nb.engines.flink.cluster import LocalCluster, free_port

    home = tmp_path_factory.mktemp("flink-remote") / ".ultron"
    port = free_port()
    script = textwrap.dedent(f"""
        from pathlib import Path
        from ultron_nb.config import Settings
        from ultron_nb.engines.flink.cluster import LocalCluster
        c = LocalCluster(Settings(home=Path({str(home)!r}), flink_port={port}), slots=4,
                         taskmanager_memory="1024m", jobmanager_memory="1024m")
        print(c.up())
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env=dict(os.environ))
    cluster = LocalCluster(_settings(home, port))
    if done.returncode != 0:
        cluster.down()
        raise RuntimeError(f"remote cluster did not start: {done.stderr[-2000:]}")
    try:
        yield cluster
    finally:
        _down_by_pid(cluster)


def _down_by_pid(cluster: Any) -> None:
    """Stop ``cluster`` and check that every daemon it had is gone, by PID."""
    from ultron_nb.processes import pid_alive

    pids = [p for ps in cluster.pids().values() for p in ps]
    cluster.down()
    alive = [p for p in pids if pid_alive(p)]
    assert not alive, f"Flink daemons still alive after down(): {alive}"


@pytest.fixture(scope="session")
def job_server(tmp_path_factory: pytest.TempPathFactory, flink_cluster: Any) -> Iterator[Path]:
    """The home of a job server that workspaces compile and submit through."""
    from ultron_nb.config import Settings
    from ultron_nb.engines.flink import jobclient
    from ultron_nb.processes import pid_alive

    home = tmp_path_factory.mktemp("jobserver") / ".ultron"
    settings = Settings(home=home)
    pid = jobclient.start_server(settings, warm_after=flink_cluster.url)
    try:
        yield home
    finally:
        jobclient.stop_server(settings)
        assert not pid_alive(pid), f"the job server {pid} is still alive"


def use_job_server(home: Path, server_home: Path) -> None:
    """Have the workspace at ``home`` find the job server of ``server_home`` (its record
    and secret linked into the home, where a job server started there would write them)."""
    home.mkdir(parents=True, exist_ok=True)
    for name in ("jobserver.json", "jobserver.key"):
        (home / name).symlink_to(server_home / name)


@pytest.fixture
def flink_workspace(tmp_path: Path, flink_cluster: Any, job_server: Path) -> Iterator[Any]:
    """A workspace under ``tmp_path`` whose (local) cluster is ``flink_cluster``, compiling
    and submitting through ``job_server``."""
    from ultron_nb.workspace import Workspace

    use_job_server(tmp_path / ".ultron", job_server)
    ws = Workspace(_settings(tmp_path / ".ultron", flink_cluster.rest_port))
    try:
        yield ws
    finally:
        cancel_workspace_jobs(ws)


@pytest.fixture
def scheduled_workspace(flink_workspace: Any) -> Iterator[Any]:
    """``flink_workspace`` with its scheduler daemon running (stopped afterwards, killed by
    its PID if it does not stop)."""
    import os
    import signal

    from ultron_nb.scheduler import daemon_status, start_daemon, stop_daemon

    start_daemon(flink_workspace.settings)
    try:
        yield flink_workspace
    finally:
        pid = daemon_status(flink_workspace.settings)
        try:
            stop_daemon(flink_workspace.settings, timeout=20)
        except Exception:
            if pid and pid > 0:
                os.kill(pid, signal.SIGKILL)


def cancel_workspace_jobs(ws: Any) -> None:
    """Cancel every still running Flink job that experiments of ``ws`` started."""
    from sqlalchemy import select

    from ultron_nb.engines.flink.rest import FlinkRest
    from ultron_nb.errors import UltronError
    from ultron_nb.store.schema import jobs

    with ws.db.read() as conn:
        rows = conn.execute(select(jobs.c.external_id, jobs.c.target)
                            .where(jobs.c.external_id.is_not(None),
                                   jobs.c.engine == "flink")).all()
    cancelled = []
    for job_id, target in rows:  # every cancel first, then the waits: they end together
        with FlinkRest(target) as rest:
            try:
                if rest.job_state(job_id) in ("created", "running", "restarting", "failing",
                                              "initializing"):
                    rest.cancel(job_id)
                    cancelled.append((job_id, target))
            except UltronError:
                pass
    for job_id, target in cancelled:
        with FlinkRest(target) as rest:
            try:
                rest.await_state(job_id, {"canceled", "failed", "finished"}, 30)
            except UltronError:
                pass


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            if v6:
                words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
                data = b"".join(words)
                addr = socket.inet_ntop(socket.AF_INET6, data)
            else:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            out.add((addr, int(port_hex, 16)))
    return out
