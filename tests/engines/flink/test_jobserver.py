"""The job server: kernels compile and submit through it and start no JVM of their own."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest_flink import listening as _listening
from ultron_nb import experiments as ex
from ultron_nb.config import Settings
from ultron_nb.engines.flink import jobclient, wire
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.errors import SqlError
from ultron_nb.flow.build import define_node
from ultron_nb.processes import pid_alive
from ultron_nb.services.datagen import clicklog_nodes, gen_clicklog
from ultron_nb.workspace import Workspace

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow

LABEL_JOIN = """
SELECT i.imp_id, i.user_id, i.ts, CASE WHEN c.imp_id IS NULL THEN 0 ELSE 1 END AS label
FROM impressions i LEFT JOIN clicks c
  ON i.imp_id = c.imp_id AND c.ts BETWEEN i.ts AND i.ts + INTERVAL '10' MINUTE
"""


def define_flow(ws: Workspace, name: str = "f") -> None:
    gen_clicklog(ws.settings, rate=20, duration=120, partitions=2, seed=3)
    for node in clicklog_nodes(partitions=2):
        ws.define(name, node)
    ws.define(name, define_node("label_join", LABEL_JOIN, mode="stream",
                                options={"checkpoint_interval": "2 s"}))


def test_a_fresh_process_launches_through_the_job_server_without_a_jvm(
        flink_workspace: Workspace, flink_cluster: Any) -> None:
    ws = flink_workspace
    define_flow(ws)
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from ultron_nb import experiments
        from ultron_nb.config import Settings
        from ultron_nb.workspace import Workspace
        ws = Workspace(Settings(home=Path({str(ws.settings.home)!r}),
                                flink_port={flink_cluster.rest_port}))
        status = experiments.launch(ws, "f", name="fresh")
        gateway = sys.modules.get("pyflink.java_gateway")
        print(json.dumps({{"job": status["label_join"].job_id,
                           "state": status["label_join"].state,
                           "pyflink": "pyflink" in sys.modules,
                           "jvm": bool(gateway and gateway._gateway)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"] == "running"
    assert result["jvm"] is False and result["pyflink"] is False
    with FlinkRest(flink_cluster.url) as rest:
        assert rest.job_ids()[result["job"]] == "running"


def test_invalid_sql_comes_back_as_one_line_naming_the_node(
        flink_workspace: Workspace) -> None:
    ws = flink_workspace
    define_flow(ws)
    ws.define("f", define_node("broken", "SELECT imp_id, nope FROM label_join", mode="stream"))
    assert jobclient.find_server(ws.settings) is not None
    with pytest.raises(SqlError) as info:
        ex.launch(ws, "f", name="bad")
    assert str(info.value) == ("node 'broken': From line 1, column 16 to line 1, column 19: "
                               "Column 'nope' not found in any table")
    assert ex.list_experiments(ws) == []


def test_the_job_server_submits_to_any_cluster(flink_workspace: Workspace,
                                               remote_flink_cluster: Any) -> None:
    ws = flink_workspace
    define_flow(ws)
    status = ex.launch(ws, "f", name="far", target=remote_flink_cluster.url)
    job = status["label_join"].job_id
    with FlinkRest(remote_flink_cluster.url) as rest:
        assert rest.job_ids()[job] == "running"
    ex.stop(ws, "far")


def test_without_an_answering_job_server_the_work_runs_in_this_process(
        flink_workspace: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    ws = flink_workspace
    define_flow(ws)
    home = ws.settings.home
    for name in ("jobserver.json", "jobserver.key"):
        (home / name).unlink()  # the links to the session's job server
    with socket.socket() as sock:  # a live pid, a port nobody answers on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = b"k" * 32
    (home / "jobserver.json").write_text(json.dumps({"pid": os.getpid(), "port": port,
                                                     "headers": jobclient.headers_digest({}, key)}))
    (home / "jobserver.key").write_bytes(key)
    assert jobclient.find_server(ws.settings) is not None
    with caplog.at_level(logging.WARNING, logger=jobclient.__name__):
        status = ex.launch(ws, "f", name="here")
    assert status["label_join"].state == "running"
    said = [r.getMessage() for r in caplog.records if r.name == jobclient.__name__]
    assert len(said) == 1 and "does not answer" in said[0], said  # once, not per node
    assert jobclient.find_server(ws.settings) is None  # not tried again by this process
    with FlinkRest(ws.settings.local_flink_url) as rest:
        assert rest.job_ids()[status["label_join"].job_id] == "running"


def test_only_a_holder_of_the_secret_is_served(job_server: Path) -> None:
    settings = Settings(home=job_server)
    server = jobclient.find_server(settings)
    assert server is not None and server.address[0] == "127.0.0.1"
    for name in ("jobserver.json", "jobserver.key"):
        assert stat.S_IMODE((job_server / name).stat().st_mode) == 0o600
    assert server.call({"op": "hello"})["pid"] == jobclient.server_pid(settings)
    with socket.create_connection(server.address, timeout=10) as sock:
        with pytest.raises(wire.WireError):
            wire.join_peer(sock, b"not the secret")
    with socket.create_connection(server.address, timeout=10) as sock:
        wire.receive(sock)  # the challenge: answering garbage gets the connection closed
        wire.send(sock, {"op": "execute", "spec": {}})
        with pytest.raises(wire.WireError):
            wire.receive(sock)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (by parent pid: ``/proc/PID/task/*/children`` misses the
    children of a thread that has ended, like the one that started the JVM)."""
    try:
        return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return [pid]


def _await_gone(pids: list[int], timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if pid_alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


def test_up_starts_the_job_server_on_loopback_and_down_stops_it_and_its_jvm(
        tmp_path: Path, flink_cluster: Any, caplog: pytest.LogCaptureFixture) -> None:
    from ultron_nb.services import runtime

    settings = Settings(home=tmp_path / ".ultron", flink_url=flink_cluster.url)
    ws = Workspace(settings)
    status = runtime.up(ws)
    tree: list[int] = []
    try:
        pid = status.jobserver_pid
        assert pid and jobclient.server_pid(settings) == pid and "job server: running" in str(
            status)
        assert jobclient.await_ready(settings, timeout=300)  # its JVM runs (and is warm)
        tree = _tree(pid)
        assert len(tree) > 1, "the JVM is a child of the job server"
        listening = {address for p in tree for address in _listening(p)}
        assert listening and {ip for ip, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1",
                                                              "::1"}, listening
    finally:
        notes = runtime.down(ws).notes
    assert "job server stopped" in notes
    assert _await_gone(tree) == [], "the job server or its JVM outlived down"
    assert not (settings.home / "jobserver.json").exists()
    assert jobclient.server_pid(settings) is None

    # A job server killed outright: its JVM follows it, a process falls back with one line.
    pid = jobclient.start_server(settings)
    assert jobclient.await_ready(settings, timeout=300)  # its JVM started (not being forked)
    tree = _tree(pid)
    assert len(tree) > 1, "the JVM is a child of the job server"
    os.kill(pid, signal.SIGKILL)
    assert _await_gone(tree) == [], "the JVM outlived its killed job server"
    with caplog.at_level(logging.WARNING, logger=jobclient.__name__):
        assert jobclient.find_server(settings) is None
        assert jobclient.find_server(settings) is None
    said = [r.getMessage() for r in caplog.records if r.name == jobclient.__name__]
    assert len(said) == 1 and f"its process {pid} is gone" in said[0], said
    assert jobclient.stop_server(settings) is False
    assert not (settings.home / "jobserver.json").exists()  # the stale record is cleared
