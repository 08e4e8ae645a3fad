"""The local session cluster: loopback only, reused, stopped by PID, clear failures."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest_flink import listening as _listening
from ultron_nb.config import Settings
from ultron_nb.engines.flink import cluster as cluster_mod
from ultron_nb.engines.flink.cluster import LocalCluster, cluster_status, free_port
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.errors import ClusterError

pytestmark = pytest.mark.flink


def test_every_port_is_bound_to_loopback(flink_cluster: LocalCluster) -> None:
    pids = [p for ps in flink_cluster.pids().values() for p in ps]
    assert len(pids) == 2  # job manager and task manager
    sockets = set().union(*(_listening(p) for p in pids))
    assert len(sockets) >= 5  # REST, RPC x2, blob, data, query services
    assert {addr for addr, _ in sockets} <= {"127.0.0.1", "::ffff:127.0.0.1"}
    assert flink_cluster.rest_port in {port for _, port in sockets}


def test_conf_dir_is_generated_under_home(flink_cluster: LocalCluster) -> None:
    conf = (flink_cluster.conf_dir / "config.yaml").read_text()
    home = flink_cluster.settings.home
    assert flink_cluster.conf_dir == home / "flink" / "conf"
    for line in ("rest.bind-address: \"127.0.0.1\"", "jobmanager.bind-host: \"127.0.0.1\"",
                 "taskmanager.bind-host: \"127.0.0.1\"", "taskmanager.numberOfTaskSlots: 8",
                 f"rest.port: {flink_cluster.rest_port}"):
        assert line in conf
    assert str(home / "checkpoints") in conf and str(home / "savepoints") in conf
    assert "python.executable" in conf and "0.0.0.0" not in conf


def test_up_reuses_a_running_cluster(flink_cluster: LocalCluster) -> None:
    again = LocalCluster(flink_cluster.settings)
    before = flink_cluster.pids()
    status = again.up()
    assert status.running and "reused" in status.message
    assert again.pids() == before


def test_status_reports_slots_and_version(flink_cluster: LocalCluster) -> None:
    status = cluster_status(flink_cluster.settings)
    assert status.running and status.local
    assert status.flink_version == "2.3.0"
    assert status.slots_total == 8 and status.taskmanagers == 1
    assert "127.0.0.1" in str(status) and "<table>" in status._repr_html_()


def test_a_cluster_outlives_the_process_that_started_it(remote_flink_cluster: LocalCluster,
                                                        ) -> None:
    # The fixture started it from a child process that has exited.
    status = remote_flink_cluster.status()
    assert status.running and status.slots_total == 4


def test_remote_status_through_the_url(remote_flink_cluster: LocalCluster,
                                       tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ".ultron", flink_url=remote_flink_cluster.url)
    status = cluster_status(settings)
    assert status.running and not status.local and status.url == remote_flink_cluster.url


def test_unreachable_remote_is_not_running_and_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    status = cluster_status(Settings(home=tmp_path, flink_url=url))
    assert not status.running and url in status.message


def test_a_taken_port_is_refused_before_starting(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ClusterError, match=f"port {port} on 127.0.0.1 is taken"):
            LocalCluster(Settings(home=tmp_path / ".ultron", flink_port=port)).up()
    assert not (tmp_path / ".ultron" / "flink" / "pid").exists()


def test_a_port_taken_by_another_flink_says_so(flink_cluster: LocalCluster,
                                               tmp_path: Path) -> None:
    other = LocalCluster(Settings(home=tmp_path / ".ultron", flink_port=flink_cluster.rest_port))
    with pytest.raises(ClusterError, match="another Flink cluster"):
        other.up()


def test_missing_java_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_mod, "find_java", lambda: None)
    with pytest.raises(ClusterError, match="Java is not installed"):
        LocalCluster(Settings(home=tmp_path / ".ultron", flink_port=free_port())).up()


@pytest.mark.slow
def test_a_failed_start_shows_the_logs_relevant_lines(tmp_path: Path) -> None:
    cluster = LocalCluster(Settings(home=tmp_path / ".ultron", flink_port=free_port()),
                           taskmanager_memory="1280m",
                           extra_conf={"taskmanager.memory.managed.size": "4g"})
    with pytest.raises(ClusterError) as info:
        cluster.up()
    message = str(info.value)
    assert "log lines" in message or "failed" in message
    assert "memory" in message.lower()
    assert cluster.pids() == {}  # nothing left running


def test_down_of_a_stopped_cluster_is_a_no_op(tmp_path: Path) -> None:
    assert LocalCluster(Settings(home=tmp_path / ".ultron")).down() is False


def test_rest_of_the_cluster(flink_cluster: LocalCluster) -> None:
    with FlinkRest(flink_cluster.url) as rest:
        assert rest.reachable()
        assert rest.overview()["flink-version"] == "2.3.0"
        assert isinstance(rest.job_ids(), dict)
        assert rest.web_url("abc").endswith("/#/job/running/abc/overview")



def test_down_then_up_at_once_on_the_same_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Connections a stopped cluster leaves in TIME_WAIT or CLOSE-WAIT on its REST port do
    not make the next ``up`` refuse the port; and a port probed free but taken before its
    daemon bound it makes ``up`` start again on other ports."""
    port = free_port()
    cluster = LocalCluster(Settings(home=tmp_path / ".ultron", flink_port=port), slots=1,
                           taskmanager_memory="1024m", jobmanager_memory="768m")
    cluster.up()
    taken = socket.socket()
    try:
        clients = [FlinkRest(cluster.url) for _ in range(4)]
        for client in clients:  # keep-alive connections the server side then closes
            client.overview()
        cluster.down()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        calls = []

        def probe() -> int:  # the task manager's RPC port of the first try is taken
            calls.append(1)
            return taken.getsockname()[1] if len(calls) == 2 else free_port()

        monkeypatch.setattr(cluster_mod, "free_port", probe)
        with caplog.at_level("WARNING", logger=cluster_mod.__name__):
            assert cluster.up().running  # at once: no "port ... is taken"
        assert len(calls) == 12  # two tries of six ports
        assert any("could not bind its port" in r.getMessage() for r in caplog.records)
    finally:
        taken.close()
        for client in clients:
            client.close()
        cluster.down()
