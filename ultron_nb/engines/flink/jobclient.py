"""Compiling and submitting Flink jobs through the job server, or in this process.

The job server (:mod:`ultron_nb.engines.flink.jobserver`) is one long-lived process per
home that keeps the PyFlink JVM warm; ``ultron up`` / ``%ultron cluster up`` start it with
the cluster. Kernels, the CLI and the scheduler compile and submit through it, so none of
them starts a JVM of its own (only ad-hoc ``%%ultron sql`` does). When no job server answers
— none was started, it runs with other REST headers than this process wants, it died — the
same work runs in this process (:mod:`ultron_nb.engines.flink.submit`), as it always could.

Where it is: ``<home>/jobserver.json`` (pid, 127.0.0.1 port) and ``<home>/jobserver.key``
(the shared secret, mode 0600) are written by the server; it holds ``<home>/jobserver.lock``
while it runs (one per home) and logs to ``<home>/logs/jobserver.log``. Errors come back as
the same one-line :class:`~ultron_nb.errors.SqlError` / :class:`ClusterError` an in-process
compilation raises, naming the node and the planner's line.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultron_nb import errors
from ultron_nb.engines.flink import wire
from ultron_nb.engines.flink.rest import submission_headers
from ultron_nb.errors import ClusterError, EngineError, UltronError
from ultron_nb.processes import pid_alive
from ultron_nb.urls import strip_credentials

if TYPE_CHECKING:
    from ultron_nb.config import Settings
    from ultron_nb.engines.flink.submit import CompiledJob, JobSpec

log = logging.getLogger(__name__)

HEADERS_ENV = "FLINK_REST_CLIENT_HEADERS"
#: How long a compilation or submission may take on the server (its JVM may be warming up).
CALL_TIMEOUT = 300.0
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_warned: set[tuple[str, str | None]] = set()
#: Job servers (pid, port) that did not answer: this process no longer tries them.
_gone: set[tuple[int, int]] = set()


def paths(settings: Settings) -> dict[str, Path]:
    home = settings.home
    return {"record": home / "jobserver.json", "key": home / "jobserver.key",
            "lock": home / "jobserver.lock", "log": home / "logs" / "jobserver.log"}


def headers_digest(headers: Mapping[str, str], key: bytes) -> str:
    """What identifies a set of REST headers without revealing them (an HMAC keyed by the
    job server's secret: a credential in them cannot be guessed back from the record)."""
    text = "\n".join(f"{k}:{v}" for k, v in sorted(headers.items()))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class ServerHandle:
    """The ``env`` of a job compiled by the job server: its id there (None: re-create it
    from the spec when submitting)."""

    handle: str | None = None


class ServerGone(Exception):
    """The job server did not answer (not an error a user sees: the work runs here)."""


# ---------------------------------------------------------------- lifecycle
def server_pid(settings: Settings) -> int | None:
    """The pid of the job server running for ``settings.home`` (-1: starting), or None."""
    p = paths(settings)
    if not p["lock"].exists():
        return None
    fd = os.open(p["lock"], os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(json.loads(p["record"].read_text())["pid"])
            except (OSError, ValueError, KeyError):
                return -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def spawn_server(settings: Settings, *, warm_after: str | None = None
                 ) -> subprocess.Popen[bytes] | int:
    """Start the job server of ``settings.home`` unless one runs (then its pid). It starts
    its JVM once ``warm_after`` (a Flink REST URL) answers — so that it does not compete with
    a cluster that is booting — or at once."""
    running = server_pid(settings)
    if running and running > 0:
        return running
    p = paths(settings)
    p["log"].parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    out_file = p["log"].with_suffix(".out")
    command = [sys.executable, "-m", "ultron_nb.engines.flink.jobserver",
               "--home", str(settings.home)]
    if warm_after:
        command += ["--warm-after", warm_after]
    env = dict(os.environ)
    env.pop(HEADERS_ENV, None)
    headers = submission_headers(settings)
    if headers:  # Flink's REST client reads them from its JVM's environment
        env[HEADERS_ENV] = "\n".join(f"{k}:{v}" for k, v in sorted(headers.items()))
    with open(out_file, "ab") as out:
        os.chmod(out_file, 0o600)
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, cwd=str(settings.home.parent), env=env)
    _CHILDREN[proc.pid] = proc
    return proc


def await_started(settings: Settings, started: subprocess.Popen[bytes] | int, *,
                  timeout: float = 60.0) -> int:
    """Wait until the server ``spawn_server`` started listens; its pid."""
    if isinstance(started, int):
        return started
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started.poll() is not None:
            _CHILDREN.pop(started.pid, None)
            if server_pid(settings):  # another one won the lock: use it
                return int(server_pid(settings) or 0)
            logs = paths(settings)["log"]
            tail = _tail(logs) or _tail(logs.with_suffix(".out"))
            raise EngineError("the job server did not start: " + " | ".join(tail))
        if server_pid(settings) == started.pid:
            return started.pid
        time.sleep(0.02)
    raise EngineError(f"the job server did not start within {timeout:.0f} s "
                      f"(see {paths(settings)['log']})")


def start_server(settings: Settings, *, warm_after: str | None = None,
                 timeout: float = 60.0) -> int:
    """Start (or find) the job server of ``settings.home``; its pid once it listens."""
    return await_started(settings, spawn_server(settings, warm_after=warm_after),
                         timeout=timeout)


def stop_server(settings: Settings, *, timeout: float = 30.0) -> bool:
    """Stop the job server (SIGTERM, then SIGKILL after ``timeout``) and its JVM (which exits
    when its parent's pipe closes; killed by its pid if it has not within a few seconds);
    False if none ran. A record a killed server left behind is removed."""
    pid = server_pid(settings)
    if not pid or pid < 0:
        _remove_stale_record(settings)
        return False
    jvms = _children_of(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while server_pid(settings) is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
    deadline = time.monotonic() + 10.0
    while any(pid_alive(p) for p in jvms) and time.monotonic() < deadline:
        time.sleep(0.05)
    for jvm in jvms:
        if pid_alive(jvm):
            log.warning("the job server's JVM %d outlived it: killing it", jvm)
            with contextlib.suppress(ProcessLookupError):
                os.kill(jvm, signal.SIGKILL)
    _remove_stale_record(settings)
    return True


def _children_of(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux ``/proc``; none elsewhere)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(x) for x in task.read_text().split()]
    return found


def _remove_stale_record(settings: Settings) -> None:
    """Remove the record and secret of a job server that no longer runs."""
    if server_pid(settings) is not None:
        return
    p = paths(settings)
    for name in ("record", "key"):
        with contextlib.suppress(OSError):
            if not p[name].is_symlink():  # a link to another home's server is not ours
                p[name].unlink()


def await_ready(settings: Settings, *, timeout: float = 120.0) -> bool:
    """Wait until the job server's JVM is warm; False when no job server runs."""
    server = find_server(settings)
    if server is None:
        return False
    try:
        reply = server.call({"op": "ready", "timeout": timeout}, timeout=timeout + 5)
    except ServerGone:
        return False
    if not reply.get("warm"):
        raise EngineError(f"the job server is not warm after {timeout:.0f} s "
                          f"(see {paths(settings)['log']})")
    return True


def _tail(path: Path, lines: int = 3) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


# ---------------------------------------------------------------- connection
class Server:
    """A job server found on this machine (address and secret from its files)."""

    def __init__(self, pid: int, port: int, key: bytes, headers: str):
        self.pid = pid
        self.address = ("127.0.0.1", port)
        self.key = key
        self.headers = headers

    @contextlib.contextmanager
    def channel(self, timeout: float = CALL_TIMEOUT) -> Iterator[socket.socket]:
        """An authenticated connection (ServerGone when it cannot be made)."""
        try:
            sock = socket.create_connection(self.address, timeout=5.0)
        except OSError as exc:
            raise ServerGone(f"cannot connect: {exc}") from None
        try:
            try:
                wire.join_peer(sock, self.key)
            except wire.WireError as exc:
                raise ServerGone(str(exc)) from None
            sock.settimeout(timeout)
            yield sock
        finally:
            sock.close()

    def call(self, request: dict[str, Any], *, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        with self.channel(timeout) as sock:
            return exchange(sock, request)


def exchange(sock: socket.socket, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request, return the reply; a reported error is raised as itself."""
    try:
        wire.send(sock, request)
        reply = wire.receive(sock)
    except wire.WireError as exc:
        raise ServerGone(str(exc)) from None
    if "error" in reply:
        raise error_of(reply["error"])
    return reply


def error_of(report: Mapping[str, Any]) -> UltronError:
    """The exception a server-side error report stands for (its class by name)."""
    cls = getattr(errors, str(report.get("type", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, UltronError)):
        cls = EngineError
    return cls(str(report.get("message", "the job server failed")))


def find_server(settings: Settings, target: str | None = None) -> Server | None:
    """The job server of ``settings.home`` if one runs and submits with the REST headers a
    submission to ``target`` (default: the configured cluster) needs; else None (the caller
    works in this process)."""
    p = paths(settings)
    try:
        record = json.loads(p["record"].read_text())
        key = p["key"].read_bytes()
        pid, port = int(record["pid"]), int(record["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (pid, port) in _gone:
        return None
    if not pid_alive(pid):
        _give_up(pid, port, f"its process {pid} is gone", settings.home)
        return None
    server = Server(pid, port, key, str(record.get("headers", "")))
    if server.headers != headers_digest(submission_headers(settings, target), key):
        if (str(settings.home), target) not in _warned:
            _warned.add((str(settings.home), target))
            log.warning("the job server of %s submits with other REST headers than %s "
                        "needs: compiling in this process (after a change of settings, "
                        "`ultron down` and `ultron up` restart it)", settings.home,
                        strip_credentials(target or settings.target_url))
        return None
    return server


def _give_up(pid: int, port: int, why: str, home: Path) -> None:
    """Remember a job server that cannot serve; say so once (the work runs here)."""
    if (pid, port) not in _gone:
        _gone.add((pid, port))
        log.warning("the job server of %s does not answer (%s): Flink jobs compile and "
                    "submit in this process", home, why)


# ---------------------------------------------------------------- the three calls
def compile_job(settings: Settings, spec: JobSpec, sink_ddl_for: Any, *,
                target: str | None = None) -> CompiledJob:
    """:func:`ultron_nb.engines.flink.submit.compile_job`, on the job server if one
    answers. ``sink_ddl_for(columns, spec)`` runs here, between the two halves."""
    from ultron_nb.engines.flink import submit

    server = find_server(settings, target)
    if server is not None:
        try:
            return _compile_remote(server, spec, sink_ddl_for)
        except ServerGone as exc:
            _give_up(server.pid, server.address[1], str(exc), settings.home)
    return submit.compile_job(spec, sink_ddl_for)


def _compile_remote(server: Server, spec: JobSpec, sink_ddl_for: Any) -> CompiledJob:
    from ultron_nb.engines.flink.submit import CompiledJob

    with server.channel() as sock:
        reply = exchange(sock, {"op": "plan", "spec": spec.to_dict()})
        columns = [(str(n), str(t)) for n, t in reply["columns"]]
        spec.sink_ddl = sink_ddl_for(columns, spec)
        reply = exchange(sock, {"op": "validate", "sink_ddl": spec.sink_ddl,
                                "rowtime": spec.rowtime,
                                "watermark_format": spec.watermark_format})
    spec.plan = reply.get("plan")
    return CompiledJob(spec, columns, ServerHandle(str(reply["handle"])))


def prepare(settings: Settings, spec: JobSpec) -> CompiledJob:
    """A stored spec made ready to submit (a resume): on the job server the environment is
    created when it is submitted; in this process now."""
    from ultron_nb.engines.flink import submit
    from ultron_nb.engines.flink.submit import CompiledJob

    if find_server(settings) is not None:
        return CompiledJob(spec, [], ServerHandle(None))
    return submit.prepare(spec)


def submit(settings: Settings, job: CompiledJob, rest: Any, *, name: str | None = None,
           timeout: float = 60.0) -> str:
    """Submit ``job`` to the cluster behind ``rest``; its Flink job id, checked in the
    cluster's ``GET /jobs``. A job compiled by the job server is submitted by it."""
    from ultron_nb.engines.flink import submit as local

    started = time.monotonic()
    spec = job.spec
    if isinstance(job.env, ServerHandle):
        server = find_server(settings, rest.url)
        job_id = None
        if server is not None:
            try:
                job_id = _submit_remote(server, job, rest, name)
            except ServerGone as exc:
                _give_up(server.pid, server.address[1], str(exc), settings.home)
        if job_id is None:
            job_id = local.execute(local.prepare(spec), url=rest.url, name=name)
    else:
        job_id = local.execute(job, url=rest.url, name=name)
    local.await_listed(spec.node, job_id, rest, timeout=timeout)
    log.info("node %s: job %s submitted to %s in %.1f s", spec.node, job_id, rest.url,
             time.monotonic() - started)
    return job_id


def _submit_remote(server: Server, job: CompiledJob, rest: Any, name: str | None) -> str:
    assert isinstance(job.env, ServerHandle)
    request = {"op": "execute", "spec": job.spec.to_dict(), "handle": job.env.handle,
               "name": name, "url": rest.url}
    with server.channel() as sock:
        try:
            wire.send(sock, request)
        except wire.WireError as exc:
            raise ServerGone(str(exc)) from None
        try:
            reply = wire.receive(sock)
        except wire.WireError as exc:
            # Sent, no answer: Flink may have the job. It is found by its (unique) name.
            found = [j for j in rest.jobs_overview() if name and j.get("name") == name]
            if found:
                return str(found[0]["jid"])
            raise ClusterError(f"node {job.spec.node!r}: the job server stopped while "
                               f"submitting it ({exc}); it is not on {rest.url}") from None
    if "error" in reply:
        raise error_of(reply["error"])
    return str(reply["job_id"])
