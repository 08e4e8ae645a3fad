"""The local Flink session cluster, started from the scripts the ``apache-flink`` wheel ships.

The cluster lives under ``<home>/flink/``::

    flink/conf/config.yaml   generated: every address 127.0.0.1, ports, slots, memory, dirs
    flink/conf/log4j*.properties, logback*.xml   copied from pyflink/conf
    flink/log/   job manager and task manager logs
    flink/pid/   the daemons' PID files (written by flink-daemon.sh)
    flink/tmp/   io.tmp.dirs, web upload dir
    flink/cluster.json   what `up` chose: REST URL and ports
    checkpoints/, savepoints/   (under <home>)

The daemons run in their own session, so they outlive the Python process (and the Jupyter
kernel) that started them; :meth:`LocalCluster.down` stops exactly the processes named in the
PID files, after checking that each still is a Flink process of this conf dir.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ultron_nb.config import Settings
from ultron_nb.engines.flink.rest import FlinkRest, rest_client
from ultron_nb.errors import ClusterError
from ultron_nb.processes import pid_alive

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DAEMONS = ("standalonesession", "taskexecutor")
_LOG_MARKERS = ("ERROR", "Exception", "Caused by", "Error:", "error:", "BindException",
                "Address already in use", "Could not", "Failed", "FATAL")
#: What a daemon's log says when a port it was given was taken meanwhile; how often ``up``
#: then tries again on other ports.
_BIND_MARKERS = ("BindException", "Address already in use", "failed to bind")
START_ATTEMPTS = 3


def pyflink_home() -> Path:
    """The directory of the installed ``pyflink`` package (without importing it)."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise ClusterError("apache-flink is not installed: pip install apache-flink==2.3.0")
    return Path(next(iter(spec.submodule_search_locations)))


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Can a server bind ``port`` now? Probed as Flink binds (``SO_REUSEADDR``), so the
    connections a stopped cluster left in TIME_WAIT do not count as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    # Something listening on all interfaces also blocks us.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) != 0


def find_java() -> str | None:
    """The java executable Flink's scripts would use (JAVA_HOME first, then PATH)."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _cmdline(pid: int) -> str | None:
    path = Path(f"/proc/{pid}/cmdline")
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


@dataclass
class ClusterStatus:
    """What is known about a cluster: from its PID files (local) and its REST API."""

    url: str
    running: bool
    local: bool
    pids: dict[str, list[int]] = field(default_factory=dict)
    flink_version: str | None = None
    taskmanagers: int = 0
    slots_total: int = 0
    slots_available: int = 0
    jobs_running: int = 0
    jobs_finished: int = 0
    jobs_failed: int = 0
    jobs_cancelled: int = 0
    home: str | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if not self.running:
            return f"Flink at {self.url}: not running{' — ' + self.message if self.message else ''}"
        where = "local" if self.local else "remote"
        pids = ""
        if self.pids:
            pids = " pids " + ",".join(str(p) for ps in self.pids.values() for p in ps)
        return (
            f"Flink {self.flink_version or ''} ({where}) at {self.url}: {self.taskmanagers} task "
            f"manager(s), {self.slots_available}/{self.slots_total} slots free, "
            f"{self.jobs_running} job(s) running{pids}"
        ).replace("Flink  (", "Flink (")

    def _repr_html_(self) -> str:
        import html

        state = "running" if self.running else "not running"
        colour = "#2b8a3e" if self.running else "#868e96"
        rows = [
            ("URL", f'<a href="{html.escape(self.url)}" target="_blank">'
                    f"{html.escape(self.url)}</a>"),
            ("state", f'<b style="color:{colour}">{state}</b>'),
        ]
        if self.running:
            rows += [
                ("Flink", html.escape(self.flink_version or "?")),
                ("task managers", str(self.taskmanagers)),
                ("slots free", f"{self.slots_available} / {self.slots_total}"),
                ("jobs running", str(self.jobs_running)),
            ]
        if self.message:
            rows.append(("note", html.escape(self.message)))
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>"
                       for k, v in rows)
        kind = "local" if self.local else "remote"
        return f"<table><caption>Flink cluster ({kind})</caption>{body}</table>"


def _fill_from_rest(status: ClusterStatus, rest: FlinkRest) -> ClusterStatus:
    ov = rest.overview()
    status.running = True
    status.flink_version = ov.get("flink-version")
    status.taskmanagers = int(ov.get("taskmanagers", 0))
    status.slots_total = int(ov.get("slots-total", 0))
    status.slots_available = int(ov.get("slots-available", 0))
    status.jobs_running = int(ov.get("jobs-running", 0))
    status.jobs_finished = int(ov.get("jobs-finished", 0))
    status.jobs_failed = int(ov.get("jobs-failed", 0))
    status.jobs_cancelled = int(ov.get("jobs-cancelled", 0))
    return status


def cluster_status(settings: Settings, url: str | None = None) -> ClusterStatus:
    """Status of the cluster experiments run on: the local one, or the remote ``url``.

    A remote cluster that cannot be reached is reported as not running (with the reason);
    use :class:`FlinkRest` directly to get the error.
    """
    target = url or settings.flink_url
    if not target:
        return LocalCluster(settings).status()
    with rest_client(settings, target) as rest:
        status = ClusterStatus(url=rest.url, running=False, local=False)
        try:
            return _fill_from_rest(status, rest)
        except ClusterError as exc:
            status.message = str(exc)
            return status


class LocalCluster:
    """A standalone Flink session cluster on this machine, bound to 127.0.0.1 only.

    ``rest_port`` defaults to ``settings.flink_port`` and ``slots`` to
    ``settings.flink_slots``. Every other port (RPC, blob server, data exchange, metrics
    query service) is picked free when the cluster starts. Memory sizes are Flink memory
    strings (``"1280m"``). ``root`` defaults to ``settings.home / "flink"``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        rest_port: int | None = None,
        slots: int | None = None,
        jobmanager_memory: str = "1024m",
        taskmanager_memory: str | None = None,
        root: Path | None = None,
        extra_conf: dict[str, Any] | None = None,
        start_timeout: float = 120.0,
    ):
        self.settings = settings
        self.rest_port = int(rest_port or settings.flink_port)
        self.slots = int(slots or settings.flink_slots)
        self.jobmanager_memory = jobmanager_memory
        # Sized by the slots: a notebook's experiments take a slot per job (12 by default).
        self.taskmanager_memory = taskmanager_memory or f"{max(1536, 640 + 128 * self.slots)}m"
        self.root = Path(root) if root else settings.home / "flink"
        self.extra_conf = dict(extra_conf or {})
        self.start_timeout = start_timeout

    # ------------------------------------------------------------------ paths
    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def pid_dir(self) -> Path:
        return self.root / "pid"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.settings.home / "checkpoints"

    @property
    def savepoint_dir(self) -> Path:
        return self.settings.home / "savepoints"

    @property
    def url(self) -> str:
        """The REST URL: the one recorded by a running cluster, else the configured one."""
        state = self._read_state()
        port = int(state.get("rest_port", self.rest_port)) if state else self.rest_port
        return f"http://{LOOPBACK}:{port}"

    def rest(self) -> FlinkRest:
        return FlinkRest(self.url)

    def __repr__(self) -> str:
        return f"<LocalCluster {self.url} root={self.root}>"

    # ------------------------------------------------------------------ state
    def _read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _pid_files(self) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        if not self.pid_dir.is_dir():
            return out
        for daemon in DAEMONS:
            out[daemon] = sorted(self.pid_dir.glob(f"flink-*-{daemon}.pid"))
        return out

    def pids(self) -> dict[str, list[int]]:
        """PIDs of this cluster's live daemons (checked against their command lines)."""
        out: dict[str, list[int]] = {}
        for daemon, files in self._pid_files().items():
            for pid_file in files:
                with contextlib.suppress(OSError):
                    for line in pid_file.read_text().split():
                        if line.isdigit() and self._owns(int(line)):
                            out.setdefault(daemon, []).append(int(line))
        return out

    def _owns(self, pid: int) -> bool:
        """Is ``pid`` alive and a Flink daemon started with this conf dir?"""
        if not pid_alive(pid):
            return False
        cmd = _cmdline(pid)
        if cmd is None:  # no /proc: trust the PID file
            return True
        return str(self.conf_dir) in cmd

    # ------------------------------------------------------------------ status
    def status(self) -> ClusterStatus:
        """Is the cluster running (its daemons alive and its REST API answering)?"""
        pids = self.pids()
        status = ClusterStatus(url=self.url, running=False, local=True, pids=pids,
                               home=str(self.root))
        if not pids:
            status.message = "no daemon of this project is running"
            return status
        with self.rest() as rest:
            try:
                _fill_from_rest(status, rest)
            except ClusterError as exc:
                status.message = f"daemons alive but REST does not answer: {exc}"
        return status

    def is_running(self) -> bool:
        return self.status().running

    # ------------------------------------------------------------------ conf
    def _conf(self, ports: dict[str, int]) -> dict[str, Any]:
        base = self._base_java_opts()
        home = self.settings.home
        conf: dict[str, Any] = {
            "env.java.opts.all": base,
            "env.pid.dir": str(self.pid_dir),
            "env.log.dir": str(self.log_dir),
            "env.log.max": 5,
            "io.tmp.dirs": str(self.tmp_dir),
            "web.tmpdir": str(self.tmp_dir / "web"),
            "web.upload.dir": str(self.tmp_dir / "upload"),
            "jobmanager.rpc.address": LOOPBACK,
            "jobmanager.rpc.port": ports["jobmanager_rpc"],
            "jobmanager.bind-host": LOOPBACK,
            "jobmanager.memory.process.size": self.jobmanager_memory,
            "jobmanager.execution.failover-strategy": "region",
            "taskmanager.bind-host": LOOPBACK,
            "taskmanager.host": LOOPBACK,
            "taskmanager.rpc.port": ports["taskmanager_rpc"],
            "taskmanager.data.port": ports["taskmanager_data"],
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.memory.process.size": self.taskmanager_memory,
            "blob.server.port": ports["blob"],
            "rest.address": LOOPBACK,
            "rest.bind-address": LOOPBACK,
            "rest.port": self.rest_port,
            "rest.bind-port": self.rest_port,
            "parallelism.default": 1,
            "execution.checkpointing.dir": self.checkpoint_dir.resolve().as_uri(),
            "execution.checkpointing.savepoint-dir": self.savepoint_dir.resolve().as_uri(),
            "execution.checkpointing.num-retained": 2,
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
            "jobmanager.archive.fs.dir": (home / "flink" / "archive").resolve().as_uri(),
        }
        conf.update(self.extra_conf)
        return conf

    @staticmethod
    def _base_java_opts() -> str:
        source = pyflink_home() / "conf" / "config.yaml"
        try:
            import yaml

            data = yaml.safe_load(source.read_text()) or {}
            opts = data.get("env", {}).get("java", {}).get("opts", {}).get("all", "")
            return str(opts or "")
        except Exception:  # no PyYAML or an unexpected layout: the JVM defaults work on 17
            return ""

    def write_conf(self, ports: dict[str, int]) -> Path:
        """Generate the conf dir (config.yaml plus the wheel's logging files)."""
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        source = pyflink_home() / "conf"
        for item in source.iterdir():
            if item.name.startswith(("log4j", "logback")):
                shutil.copy2(item, self.conf_dir / item.name)
        for name in ("masters", "workers"):
            (self.conf_dir / name).write_text(f"{LOOPBACK}\n" if name == "workers"
                                              else f"{LOOPBACK}:{self.rest_port}\n")
        lines = ["# Generated by ultron_nb; regenerated by `ultron up`."]
        for key, value in self._conf(ports).items():
            lines.append(f"{key}: {json.dumps(value) if isinstance(value, str) else value}")
        (self.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n")
        return self.conf_dir / "config.yaml"

    # ------------------------------------------------------------------ up / down
    def up(self) -> ClusterStatus:
        """Start the cluster, or reuse it when it is already running; return its status."""
        current = self.status()
        if current.running:
            log.info("reusing the running local Flink cluster at %s", current.url)
            current.message = "already running (reused)"
            return current
        if current.pids:  # half alive: daemons without a working REST endpoint
            log.warning("stopping a half-started local cluster: %s", current.pids)
            self.down()
        java = find_java()
        if java is None:
            raise ClusterError(
                "Java is not installed (no JAVA_HOME, no java on PATH): Flink needs Java 11 or "
                "17, e.g. apt-get install openjdk-17-jre-headless"
            )
        if not port_is_free(self.rest_port):
            other = FlinkRest(f"http://{LOOPBACK}:{self.rest_port}")
            try:
                is_flink = other.reachable(timeout=2.0)
            finally:
                other.close()
            hint = (
                "another Flink cluster (not this project's) answers there: use it with "
                f"flink_url=http://{LOOPBACK}:{self.rest_port}, or choose another flink_port"
                if is_flink else "choose another flink_port (ULTRON_FLINK_PORT)"
            )
            raise ClusterError(f"port {self.rest_port} on {LOOPBACK} is taken; {hint}")

        for folder in (self.log_dir, self.pid_dir, self.tmp_dir, self.checkpoint_dir,
                       self.savepoint_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, START_ATTEMPTS + 1):
            started = time.time()
            try:
                status = self._start(started)
                break
            except ClusterError as exc:
                self.down()
                # A port probed free was taken before its daemon bound it (another process's
                # connection, on a busy machine): new ports, another try.
                if attempt == START_ATTEMPTS or not any(m in str(exc) for m in _BIND_MARKERS):
                    raise
                log.warning("a Flink daemon could not bind its port (attempt %d): starting "
                            "again on other ports", attempt)
        log.info("local Flink cluster up at %s in %.1f s", status.url, time.time() - started)
        return status

    def _start(self, started: float) -> ClusterStatus:
        """Start both daemons on free ports; their status once REST lists a task manager."""
        ports = {name: free_port() for name in (
            "jobmanager_rpc", "taskmanager_rpc", "taskmanager_data", "blob",
            "jobmanager_query_service", "taskmanager_query_service")}
        self._clear_stale_pid_files()
        self.write_conf(ports)
        self.state_file.write_text(json.dumps(
            {"rest_port": self.rest_port, "ports": ports, "started_at": started,
             "conf_dir": str(self.conf_dir), "slots": self.slots}, indent=2))
        # Both daemons start at once (each script runs a JVM of its own to size memory before
        # it launches its daemon); each runs its own metrics query service on its own port.
        spawned = [(script, self._spawn_script(
            script, "start", "-D", f"metrics.internal.query-service.port={port}"))
            for script, port in (("jobmanager.sh", ports["jobmanager_query_service"]),
                                 ("taskmanager.sh", ports["taskmanager_query_service"]))]
        failures = []
        for script, proc in spawned:  # both end before anything is reported or stopped
            try:
                self._finish_script(script, "start", proc)
            except ClusterError as exc:
                failures.append(exc)
        if failures:
            raise failures[0]
        return self._await_ready(started)

    def heal(self) -> bool:
        """Start the task manager again when it died while the job manager runs (a kill,
        an out-of-memory crash): Flink then restarts the jobs from their last checkpoints.
        True when it started one. Nothing happens to a cluster that is down or was never
        started here."""
        state = self._read_state()
        recorded = []  # the task managers' PID files: written once a daemon started
        for pid_file in self._pid_files().get("taskexecutor", []):
            with contextlib.suppress(OSError):
                recorded += [int(p) for p in pid_file.read_text().split() if p.isdigit()]
        if not state or not recorded or any(self._owns(p) for p in recorded):
            return False  # down, still starting (no PID yet), or alive
        if not self.pids().get("standalonesession"):
            return False
        port = int(state.get("ports", {}).get("taskmanager_query_service", 0)) or free_port()
        log.warning("the task manager of the local Flink cluster at %s is gone: starting it "
                    "again (the jobs restart from their last checkpoints)", self.url)
        self._clear_stale_pid_files()
        # New RPC and data ports: a task manager at the dead one's address would be taken
        # for it by the job manager's RPC system, which quarantines that address once it
        # notices the death, and the new one could never register.
        self._finish_script("taskmanager.sh", "start", self._spawn_script(
            "taskmanager.sh", "start", "-D", f"metrics.internal.query-service.port={port}",
            "-D", f"taskmanager.rpc.port={free_port()}",
            "-D", f"taskmanager.data.port={free_port()}"))
        return True

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        home = pyflink_home()
        env["FLINK_HOME"] = str(home)
        env["FLINK_CONF_DIR"] = str(self.conf_dir)
        env["FLINK_LOG_DIR"] = str(self.log_dir)
        env["FLINK_PID_DIR"] = str(self.pid_dir)
        env.pop("FLINK_ENV_JAVA_OPTS", None)
        java = find_java()
        if java and not env.get("JAVA_HOME"):
            env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _spawn_script(self, script: str, action: str, *args: str) -> subprocess.Popen[str]:
        path = pyflink_home() / "bin" / script
        try:
            return subprocess.Popen(
                ["bash", str(path), action, *args],
                env=self._env(),
                cwd=str(self.root),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # the daemons outlive this process and its group
            )
        except OSError as exc:
            raise ClusterError(f"{script} {action} failed: {exc}") from None

    def _finish_script(self, script: str, action: str, proc: subprocess.Popen[str]) -> str:
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise ClusterError(f"{script} {action} did not finish within 120 s") from None
        output = (stdout + stderr).strip()
        if proc.returncode != 0:
            lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
            relevant = [ln for ln in lines if any(m in ln for m in _LOG_MARKERS)
                        and not ln.startswith("at ")]
            causes = [ln for ln in relevant if ln.startswith("Caused by")]
            reason = (causes or relevant or lines or ["no output"])[-1]
            raise ClusterError(
                f"{script} {action} failed (exit {proc.returncode}): {reason[:600]}"
                + self._log_excerpt()
            )
        log.debug("%s %s: %s", script, action, output)
        return output

    def _await_ready(self, started: float) -> ClusterStatus:
        """Poll until REST lists a task manager with slots (every 0.1 s: the REST call to a
        port nobody listens on yet fails at once); a daemon that died is reported with its
        log."""
        deadline = time.monotonic() + self.start_timeout
        checked = 0.0
        with FlinkRest(f"http://{LOOPBACK}:{self.rest_port}", timeout=3.0) as rest:
            while time.monotonic() < deadline:
                if time.monotonic() - checked > 1.0:
                    checked = time.monotonic()
                    pids = self.pids()
                    dead = [d for d in DAEMONS if not pids.get(d)]
                    if dead:
                        time.sleep(0.5)  # a PID file may be written just after its script
                        pids = self.pids()
                        dead = [d for d in DAEMONS if not pids.get(d)]
                        if dead:
                            raise ClusterError(
                                f"Flink {' and '.join(dead)} exited during start"
                                + self._log_excerpt())
                try:
                    ov = rest.overview()
                except ClusterError:
                    time.sleep(0.1)
                    continue
                if int(ov.get("taskmanagers", 0)) >= 1 and int(ov.get("slots-total", 0)) >= 1:
                    status = ClusterStatus(url=rest.url, running=True, local=True,
                                           pids=self.pids(), home=str(self.root))
                    return _fill_from_rest(status, rest)
                time.sleep(0.1)
        raise ClusterError(
            f"Flink did not answer at http://{LOOPBACK}:{self.rest_port} within "
            f"{self.start_timeout:.0f} s" + self._log_excerpt()
        )

    def _log_excerpt(self, lines: int = 12) -> str:
        """The relevant lines of the daemons' newest logs, for error messages."""
        if not self.log_dir.is_dir():
            return ""
        picked: list[str] = []
        files = sorted(self.log_dir.glob("flink-*"), key=lambda p: p.stat().st_mtime)
        for path in files[-4:]:
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()
                hits = [ln.strip() for ln in text if any(m in ln for m in _LOG_MARKERS)]
                picked += [f"{path.name}: {h[:300]}" for h in hits[-lines:]]
        if not picked:
            return f" (logs: {self.log_dir})"
        return f"\nlog lines ({self.log_dir}):\n  " + "\n  ".join(picked[-lines:])

    def _clear_stale_pid_files(self) -> None:
        for files in self._pid_files().values():
            for pid_file in files:
                with contextlib.suppress(OSError):
                    alive = [p for p in pid_file.read_text().split()
                             if p.isdigit() and self._owns(int(p))]
                    if not alive:
                        pid_file.unlink()

    def down(self, timeout: float = 15.0) -> bool:
        """Stop this cluster's daemons (by the PIDs in its PID files). True if any ran."""
        with contextlib.suppress(OSError):  # first: a task manager stopping is not healed
            self.state_file.unlink()
        pids = self.pids()
        victims = [pid for daemon in reversed(DAEMONS) for pid in pids.get(daemon, [])]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(pid_alive(p) for p in victims):
            time.sleep(0.1)
        for pid in victims:
            if pid_alive(pid):
                log.warning("Flink daemon %s did not stop in %.0f s: killing it", pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for files in self._pid_files().values():
            for pid_file in files:
                with contextlib.suppress(OSError):
                    pid_file.unlink()
        if victims:
            log.info("local Flink cluster stopped (pids %s)", victims)
        return bool(victims)
