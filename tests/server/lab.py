"""A real JupyterLab (or plain Jupyter server) process for the browser tests and the bench.

It runs this checkout's ultron_nb (``PYTHONPATH``) with the server extension enabled and the
built side panel on the lab extension path, in fresh config, data, runtime, workspaces and
settings directories (news and update checks off), bound to 127.0.0.1 with a token and
unauthenticated access off; it is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from ultron_nb.engines.flink.cluster import free_port
from ultron_nb.processes import pid_alive

ROOT = Path(__file__).resolve().parents[2]
LABEXTENSION = ROOT / "ultron_nb" / "labextension"
EXTENSION_SRC = ROOT / "extension"


def _newest(paths: list[Path]) -> float:
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def ensure_labextension() -> Path:
    """The built side panel; built with jlpm (node) when missing or older than its sources."""
    built = LABEXTENSION / "package.json"
    sources = [*EXTENSION_SRC.glob("src/*.ts"), *EXTENSION_SRC.glob("style/*"),
               EXTENSION_SRC / "package.json"]
    if built.exists() and built.stat().st_mtime >= _newest(sources):
        return LABEXTENSION
    jlpm = Path(sys.executable).parent / "jlpm"
    env = {**os.environ, "PATH": f"{jlpm.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for args in (["install"], ["build:prod"]):
        done = subprocess.run([str(jlpm), *args], cwd=EXTENSION_SRC, env=env,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"jlpm {' '.join(args)} failed:\n{done.stdout[-3000:]}"
                               f"{done.stderr[-3000:]}")
    return LABEXTENSION


class JupyterProcess:
    """``jupyter lab`` (``app="lab"``) or ``jupyter server`` with ultron's extension."""

    def __init__(self, base: Path, *, home: Path, env: dict[str, str] | None = None,
                 app: str = "lab", base_url: str = "/", port: int | None = None,
                 token: str | None = None, settings: dict[str, Any] | None = None):
        self.base = base
        self.home = home
        self.app = app
        self.base_url = base_url
        self.port = port or free_port()
        self.token = token or secrets.token_hex(16)
        self.extra_env = dict(env or {})
        self.settings = dict(settings or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = base / f"{app}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    def _dirs(self) -> dict[str, Path]:
        dirs = {name: self.base / name for name in
                ("config", "data", "runtime", "workspaces", "settings", "root", "path")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        link = dirs["path"] / "labextensions" / "ultron_nb"
        if self.app == "lab" and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(ensure_labextension(), target_is_directory=True)
        (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps({
            "ServerApp": {"jpserver_extensions": {"ultron_nb.server": True}},
            "UltronServer": {"home": str(self.home), **self.settings},
        }))
        news = dirs["settings"] / "@jupyterlab" / "apputils-extension"
        news.mkdir(parents=True, exist_ok=True)
        (news / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        return dirs

    def start(self, timeout: float = 90.0) -> JupyterProcess:
        d = self._dirs()
        env = {**os.environ, **self.extra_env,
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "JUPYTER_CONFIG_DIR": str(d["config"]), "JUPYTER_DATA_DIR": str(d["data"]),
               "JUPYTER_RUNTIME_DIR": str(d["runtime"]), "JUPYTER_PATH": str(d["path"]),
               "JUPYTER_PLATFORM_DIRS": "1"}
        args = [sys.executable, "-m", "jupyterlab" if self.app == "lab" else "jupyter_server",
                "--no-browser", "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
                f"--IdentityProvider.token={self.token}",
                "--ServerApp.allow_unauthenticated_access=False",
                f"--ServerApp.base_url={self.base_url}", f"--ServerApp.root_dir={d['root']}",
                "--allow-root"]
        if self.app == "lab":
            args += [f"--LabApp.workspaces_dir={d['workspaces']}",
                     f"--LabApp.user_settings_dir={d['settings']}"]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=d["root"], start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited: {self.log_tail()}")
            try:
                r = httpx.get(f"{self.url}api/status", headers=self.headers, timeout=2)
                if r.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"jupyter {self.app} did not answer in {timeout:.0f} s: "
                           f"{self.log_tail()}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def api(self, path: str) -> str:
        return f"{self.url}ultron/api/{path}"

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL) and check it is gone."""
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        assert not pid_alive(pid), f"jupyter {self.app} (pid {pid}) still alive"
