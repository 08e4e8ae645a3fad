"""The MLflow UI of a workspace: a real ``mlflow server`` on 127.0.0.1, on the workspace's
store, stopped with the cluster."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ultron_nb.config import Settings
from ultron_nb.engines.mlflow import ui
from ultron_nb.processes import pid_alive
from ultron_nb.services import runtime
from ultron_nb.workspace import Workspace

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # LISTEN
                found.add(address)
    return found


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read() or b"null") if resp.status == 200 else None


def test_the_ui_serves_the_workspace_store_on_loopback_and_stops_with_the_cluster(
        ms_settings: Settings, cell: Any) -> None:
    ws = Workspace(ms_settings)
    from ultron_nb.engines.mlflow.center import ModelCenter

    ModelCenter(ms_settings, ws.db).client.create_registered_model("ctr_model")
    port = free_port()
    status = cell(f"%ultron mlflow ui --port {port}")
    try:
        assert status.url == f"http://127.0.0.1:{port}" and status.pid
        assert str(status).startswith(f"MLflow UI: http://127.0.0.1:{port} (pid ")
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
        found = get(f"{status.url}/api/2.0/mlflow/registered-models/search")
        assert [m["name"] for m in found["registered_models"]] == ["ctr_model"]
        assert cell(f"%ultron mlflow ui --port {port}").pid == status.pid  # reused
        assert str(cell("%ultron mlflow status")) == str(status)
        record = json.loads((ms_settings.home / "mlflow" / "ui.json").read_text())
        assert record["pid"] == status.pid and record["port"] == port
        assert ms_settings.mlflow_tracking_uri not in Path(
            f"/proc/{status.pid}/cmdline").read_text()  # the store URI goes by environment
        result = runtime.down(ws)
        assert "MLflow UI stopped" in result.notes
    finally:
        ui.stop(ms_settings)
    assert not pid_alive(status.pid) and group_members(status.pid) == []
    assert not (ms_settings.home / "mlflow" / "ui.json").exists()
    assert str(cell("%ultron mlflow status")) == "MLflow UI: not running"
    assert str(cell("%ultron mlflow stop")) == "MLflow UI: not running"


def test_with_a_tracking_server_configured_the_ui_is_that_server(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULTRON_MLFLOW_URI", "https://bot:s3cret@mlflow.team")
    settings = Workspace().settings
    status = ui.start(settings)
    assert status.url == "https://bot:***@mlflow.team" and status.pid is None
    assert not ui.stop(settings)
    assert not os.path.exists(settings.home / "mlflow" / "ui.json")
