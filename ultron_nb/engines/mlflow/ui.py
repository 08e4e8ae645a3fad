"""The MLflow UI of a workspace's store: ``mlflow server`` on 127.0.0.1.

Started with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` and ``--workers 1`` in a session
of its own (with MLflow's defaults it takes half a minute to answer and leaves worker
processes behind on SIGTERM), recorded in ``<home>/mlflow/ui.json`` (pid, process identity,
port), logged to ``<home>/logs/mlflow-ui.log``, stopped by signalling its process group.
With a tracking server configured, there is nothing to start: its URL is the UI.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ultron_nb.config import Settings
from ultron_nb.engines.mlflow.store import MlflowStore
from ultron_nb.errors import EngineError
from ultron_nb.processes import process_alive, process_identity

DEFAULT_PORT = 5000


@dataclass(frozen=True)
class UiStatus:
    url: str | None
    pid: int | None
    note: str = ""

    def __str__(self) -> str:
        if self.url is None:
            return "MLflow UI: not running"
        owner = f" (pid {self.pid})" if self.pid else ""
        return f"MLflow UI: {self.url}{owner}" + (f" — {self.note}" if self.note else "")

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        import html

        if self.url is None:
            return html.escape(str(self))
        return (f'MLflow UI: <a href="{html.escape(self.url)}" target="_blank">'
                f"{html.escape(self.url)}</a>" + (f" (pid {self.pid})" if self.pid else ""))


def _record(settings: Settings) -> Path:
    return settings.home / "mlflow" / "ui.json"


def _read(settings: Settings) -> dict[str, object] | None:
    try:
        data = json.loads(_record(settings).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not process_alive(str(data.get("identity", ""))):
        return None
    return data


def status(settings: Settings) -> UiStatus:
    store = MlflowStore.of(settings)
    if store.is_server:
        return UiStatus(store.safe_uri, None, "the configured tracking server")
    data = _read(settings)
    if data is None:
        return UiStatus(None, None)
    return UiStatus(f"http://127.0.0.1:{data['port']}", int(str(data["pid"])))


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def start(settings: Settings, *, port: int | None = None, timeout: float = 90.0) -> UiStatus:
    """Start the UI (or return the running one)."""
    store = MlflowStore.of(settings)
    if store.is_server:
        return status(settings)
    running = _read(settings)
    if running is not None:
        if port in (None, int(str(running["port"]))):
            return status(settings)
        stop(settings)
    port = port or DEFAULT_PORT
    store.ensure()
    log_file = settings.home / "logs" / "mlflow-ui.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = store.artifact_root or settings.home / "mlflow" / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
               str(port), "--workers", "1"]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               # by environment, not on the command line: ps shows that (and a password)
               MLFLOW_BACKEND_STORE_URI=store.uri, MLFLOW_REGISTRY_STORE_URI=store.uri,
               MLFLOW_DEFAULT_ARTIFACT_ROOT=str(root))
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, cwd=str(settings.home), env=env)
    record = _record(settings)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": proc.pid, "identity": process_identity(proc.pid),
                               "port": port}))
    tmp.replace(record)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace").splitlines()[-3:]
            record.unlink(missing_ok=True)
            raise EngineError(f"the MLflow UI did not start on port {port}: "
                              + " | ".join(t.strip() for t in tail))
        if _healthy(port):
            return status(settings)
        time.sleep(0.2)
    stop(settings)
    raise EngineError(f"the MLflow UI did not answer on 127.0.0.1:{port} within "
                      f"{timeout:.0f} s (see {log_file})")


def stop(settings: Settings, *, timeout: float = 20.0) -> bool:
    """Stop the UI this workspace started; False when none ran."""
    data = _read(settings)
    _record(settings).unlink(missing_ok=True)
    if data is None:
        return False
    pid = int(str(data["pid"]))
    identity = str(data["identity"])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)  # the server leads its own session
    deadline = time.monotonic() + timeout
    while process_alive(identity) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # workers that outlived the grace time
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return True


__all__ = ["UiStatus", "start", "status", "stop"]
