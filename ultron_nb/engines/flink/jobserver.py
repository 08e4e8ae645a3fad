"""The job server: one long-lived process per home that compiles and submits Flink jobs.

``python -m ultron_nb.engines.flink.jobserver --home H [--warm-after URL]`` is started by
``ultron up`` (:mod:`ultron_nb.services.runtime`) with the cluster. It listens on a free
127.0.0.1 port, writes ``<home>/jobserver.key`` (a new random secret, mode 0600) and
``<home>/jobserver.json`` (pid, port, the digest of its REST headers), and holds
``<home>/jobserver.lock`` while it runs. Then it starts the PyFlink JVM and warms it with a
compilation like a real node's (an interval join, a window aggregate, filesystem tables),
once the cluster at ``--warm-after`` answers, so it never slows a booting cluster down.

Every connection first passes the challenge of :mod:`ultron_nb.engines.flink.wire`; its
requests (JSON) are:

- ``plan`` {spec} → {columns}: the inputs declared, the query planned (the first half of
  :func:`~ultron_nb.engines.flink.submit.compile_job`); then on the same connection
  ``validate`` {sink_ddl, rowtime, watermark_format} → {handle}: the sink declared and
  the INSERT optimized; the compiled environment is kept under ``handle`` for a while;
- ``execute`` {spec, handle, name, url} → {job_id}: the INSERT run, submitting the job to
  the REST endpoint in the spec's configuration (any cluster, local or remote); the
  environment is the one kept under ``handle``, or a new one made from the spec;
- ``ready`` {timeout} → {warm}: wait until the JVM is warm; ``hello`` → {pid, warm, headers}.

An error is answered as {error: {type, message}} — the :mod:`ultron_nb.errors` class and the
one line it carries, exactly as an in-process compilation raises it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ultron_nb.engines.flink import wire
from ultron_nb.engines.flink.jobclient import HEADERS_ENV, headers_digest, paths
from ultron_nb.errors import UltronError

log = logging.getLogger(__name__)

#: PyFlink's switch for how Python UDF workers start ("process": by the task managers).
LOOPBACK_MODE_ENV = "_python_worker_execution_mode"
#: Compiled environments kept for their submission: at most this many, this long (s).
KEEP = 64
KEEP_FOR = 900.0


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    tmp.replace(path)


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, UltronError):
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    log.exception("job server request failed")
    return {"error": {"type": "EngineError",
                      "message": f"the job server failed: {type(exc).__name__}: {exc}"}}


class JobServer:
    """The server's state: the warm JVM (one compilation at a time uses it; submissions run
    side by side) and the compiled environments waiting for their submission."""

    def __init__(self, headers: str):
        self.headers = headers
        self.warm = threading.Event()
        self.jvm = threading.Lock()
        self.kept: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._kept_lock = threading.Lock()

    # ------------------------------------------------------------------ warm-up
    def warm_up(self, after: str | None, timeout: float = 300.0) -> None:
        """Start the JVM and compile a representative job twice (the planner's first
        compilation costs most); first wait for the cluster at ``after`` to answer."""
        if after:
            _await_url(after, timeout)
        started = time.monotonic()
        try:
            with self.jvm, tempfile.TemporaryDirectory(prefix="ultron-warm-") as tmp:
                for _ in range(2):
                    _warm_compile(Path(tmp))
        except Exception:
            log.exception("warming the JVM failed (requests will warm it)")
        self.warm.set()
        log.info("JVM warm in %.1f s", time.monotonic() - started)

    # ------------------------------------------------------------------ requests
    def _keep(self, job: Any) -> str:
        handle = secrets.token_hex(8)
        now = time.monotonic()
        with self._kept_lock:
            self.kept[handle] = (now, job)
            while self.kept and (len(self.kept) > KEEP
                                 or now - next(iter(self.kept.values()))[0] > KEEP_FOR):
                self.kept.popitem(last=False)
        return handle

    def _take(self, handle: str | None) -> Any:
        if not handle:
            return None
        with self._kept_lock:
            item = self.kept.pop(handle, None)
        return item[1] if item else None

    def handle(self, sock: socket.socket) -> None:
        """Serve one connection until the client closes it."""
        from ultron_nb.engines.flink import submit

        planned: tuple[Any, Any, list[tuple[str, str]]] | None = None  # (spec, env, columns)
        while True:
            try:
                request = wire.receive(sock)
            except wire.WireError:
                return
            op = request.get("op")
            try:
                if op == "hello":
                    reply: dict[str, Any] = {"pid": os.getpid(), "warm": self.warm.is_set(),
                                             "headers": self.headers}
                elif op == "ready":
                    reply = {"warm": self.warm.wait(float(request.get("timeout", 60)))}
                elif op == "plan":
                    spec = submit.JobSpec.from_dict(request["spec"])
                    self.warm.wait()
                    with self.jvm:
                        env, columns = submit.plan_query(spec)
                    planned = (spec, env, columns)
                    reply = {"columns": columns}
                elif op == "validate":
                    if planned is None:
                        raise UltronError("validate without plan")
                    spec, env, columns = planned
                    planned = None
                    spec.sink_ddl = str(request["sink_ddl"])
                    spec.rowtime = request.get("rowtime")
                    spec.watermark_format = request.get("watermark_format")
                    with self.jvm:
                        job = submit.validate_insert(env, spec, columns)
                    reply = {"handle": self._keep(job), "plan": job.spec.plan}
                elif op == "execute":
                    spec = submit.JobSpec.from_dict(request["spec"])
                    self.warm.wait()
                    job = self._take(request.get("handle"))
                    if job is None:
                        with self.jvm:
                            job = submit.prepare(spec)
                    # Not under the JVM lock: submissions of several jobs (one launch's,
                    # several kernels') go side by side, each in its own environment.
                    job_id = submit.execute(job, url=str(request.get("url", "")),
                                            name=request.get("name"))
                    reply = {"job_id": job_id}
                else:
                    reply = {"error": {"type": "EngineError",
                                       "message": f"the job server has no request {op!r}"}}
            except Exception as exc:
                reply = _error(exc)
            try:
                wire.send(sock, reply)
            except wire.WireError:
                return


def _await_url(url: str, timeout: float) -> None:
    from ultron_nb.engines.flink.rest import FlinkRest

    deadline = time.monotonic() + timeout
    with FlinkRest(url, timeout=2.0) as rest:
        while time.monotonic() < deadline:
            if rest.reachable(timeout=2.0):
                return
            time.sleep(0.2)
    log.warning("%s did not answer within %.0f s: warming up anyway", url, timeout)


def _warm_compile(folder: Path) -> None:
    """One compilation with the operators real nodes use, in stream and batch mode."""
    from ultron_nb.engines.flink import ddl, submit

    (folder / "in").mkdir(exist_ok=True)
    common = {"execution.target": "remote", "rest.address": "127.0.0.1", "rest.port": "1",
              "execution.checkpointing.interval": "5 s"}
    source = ("CREATE TEMPORARY TABLE {name} (k BIGINT, v BIGINT, ts TIMESTAMP(3), "
              "WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH ('connector' = "
              f"'filesystem', 'path' = '{folder / 'in'}', 'format' = 'json')")
    join = ("SELECT a.k, a.ts, CASE WHEN b.k IS NULL THEN 0 ELSE 1 END AS label FROM a "
            "LEFT JOIN b ON a.k = b.k AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '10' MINUTE")
    window = ("SELECT window_start, window_end, COUNT(*) AS n, SUM(v) AS s FROM TABLE("
              "TUMBLE(TABLE a, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) "
              "GROUP BY window_start, window_end")
    for mode, query in (("stream", join), ("stream", window), ("batch", window)):
        spec = submit.JobSpec(node="warm-up", mode=mode,  # type: ignore[arg-type]
                              statements=[source.format(name="a"), source.format(name="b")],
                              query=query, sink_name="__sink_warm", config=dict(common))

        def sink(columns: list[tuple[str, str]], job: Any) -> str:
            cols = [(n, ddl.strip_time_attribute(t).replace(" NOT NULL", ""))
                    for n, t in columns]
            return ddl.sink_table(job.sink_name, folder / "out", cols, rollover="2 s")

        job = submit.compile_job(spec, sink)
        if job.plan is not None:  # also the translation a submission runs (to a stream graph)
            submit.translate(job)


# ---------------------------------------------------------------- the process
def serve(home: Path, *, warm_after: str | None, stop: threading.Event | None = None) -> None:
    """Run the job server of ``home`` until SIGTERM (or ``stop``)."""
    from ultron_nb.config import Settings

    settings = Settings(home=home)
    p = paths(settings)
    home.mkdir(parents=True, exist_ok=True)
    # PyFlink starts a gRPC "loopback" server for Python UDF workers, bound to every
    # interface, for each table environment created before its target is set (all of ours):
    # the jobs it compiles run on a cluster, whose task managers start those workers.
    os.environ.setdefault(LOOPBACK_MODE_ENV, "process")
    lock = os.open(p["lock"], os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise UltronError(f"a job server already runs for {home}") from None
    stop = stop or threading.Event()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.5)
        key = secrets.token_bytes(32)
        headers = os.environ.get(HEADERS_ENV, "")
        wanted = dict(h.split(":", 1) for h in headers.splitlines() if ":" in h)
        server = JobServer(headers_digest(wanted, key))
        _write_private(p["key"], key)
        _write_private(p["record"], json.dumps({
            "pid": os.getpid(), "port": listener.getsockname()[1], "started_at": time.time(),
            "headers": server.headers}).encode())
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
        threading.Thread(target=server.warm_up, args=(warm_after,), name="warm-up",
                         daemon=True).start()
        log.info("job server %d listening on 127.0.0.1:%d", os.getpid(),
                 listener.getsockname()[1])
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if stop.is_set():
                    break
                raise
            threading.Thread(target=_serve_one, args=(server, conn, key), daemon=True).start()
    finally:
        listener.close()
        for path in (p["record"], p["key"]):  # ours: we still hold the lock
            with contextlib.suppress(OSError):
                path.unlink()
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        log.info("job server %d stopped", os.getpid())


def _serve_one(server: JobServer, conn: socket.socket, key: bytes) -> None:
    with conn:
        conn.settimeout(10.0)
        try:
            wire.accept_peer(conn, key)
        except wire.WireError as exc:
            log.warning("refused a connection: %s", exc)
            return
        conn.settimeout(None)
        server.handle(conn)


def main(argv: Sequence[str] | None = None) -> int:
    from ultron_nb.logs import configure_process_logging

    parser = argparse.ArgumentParser(prog="ultron jobserver",
                                     description="Compile and submit Flink jobs for a home.")
    parser.add_argument("--home", required=True)
    parser.add_argument("--warm-after", help="start the JVM once this Flink REST URL answers")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    home = Path(args.home).resolve()
    configure_process_logging(file=home / "logs" / "jobserver.log")
    try:
        serve(home, warm_after=args.warm_after)
    except UltronError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
