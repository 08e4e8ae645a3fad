"""No port beyond loopback (issue 14, item 7): every listening socket of a real Jupyter
kernel (and its PyFlink JVM), of the Flink cluster's daemons and of the scheduler daemon
(and its node runners), sampled all along a session that launches an experiment, previews
a node and runs ``%%ultron sql`` three times, is on 127.0.0.1 — and the queries leave no
server behind (PyFlink used to leave a worker-pool gRPC server on ``[::]:0`` per call, and
each query's mini cluster listened on all interfaces).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.faults.faults import ROOT, is_loopback, listening_sockets
from tests.support.waiting import wait_until
from ultron_nb.config import Settings
from ultron_nb.scheduler import daemon_status, start_daemon, stop_daemon

pytestmark = [pytest.mark.flink, pytest.mark.slow]

IMPRESSIONS = "imp_id BIGINT, user_id BIGINT, item_id BIGINT, position INT, ts TIMESTAMP(3)"
PREVIEW = """
try:
    _rows = len(get_ipython().run_line_magic("ultron", "preview passthrough --limit 5"))
except Exception:  # no output yet
    _rows = 0
print("ROWS", _rows)
"""


class Sampler(threading.Thread):
    """Samples the listening sockets of some processes (and their children) until stopped."""

    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids = pids
        # (pid, name, address, port) -> the first and the last sample that saw it
        self.seen: dict[tuple[int, str, str, int], tuple[int, int]] = {}
        self.samples = 0
        self.who: dict[int, str] = {}  # pid -> command line, of a process listening wide
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.2):
            found = listening_sockets(self.pids)
            for socket in found:
                self.seen[socket] = (self.seen.get(socket, (self.samples,))[0], self.samples)
            self.samples += 1
            for pid, _, ip, _ in found:
                if not is_loopback(ip) and pid not in self.who:
                    self.who[pid] = _command_line(pid)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


def _command_line(pid: int) -> str:
    import psutil

    try:
        proc = psutil.Process(pid)
        parent = proc.parent()
        return (f"{' '.join(proc.cmdline())[-400:]} (parent {parent.pid if parent else '-'}: "
                f"{' '.join(parent.cmdline())[:200] if parent else ''})")
    except psutil.Error:
        return "?"


def _port_probe(socket: tuple[int, str, str, int],
                seen: dict[tuple[int, str, str, int], tuple[int, int]]) -> bool:
    """A JVM's port probe rather than a server. PyFlink's JVM, as it starts, picks a port
    for its callback client with Flink's ``NetUtils.getAvailablePort``: ``new
    ServerSocket(0)`` (every interface), a file lock on the port, the socket closed at once,
    never accepting; only then does its py4j gateway, the first server it runs, listen (on
    127.0.0.1). So only this is excused: a wildcard socket of a JVM that was gone before
    that JVM listened on anything."""
    pid, name, _, _ = socket
    served = [first for (p, _, ip, _), (first, _) in seen.items()
              if p == pid and is_loopback(ip)]
    return name == "java" and bool(served) and seen[socket][1] < min(served)


def _execute(kc: Any, code: str, timeout: float = 600) -> list[str]:
    """Run ``code`` in the kernel; its text outputs; fail with the kernel's error."""
    texts: list[str] = []
    errors: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            texts.append(content["text"])
        elif msg["msg_type"] in ("execute_result", "display_data"):
            texts.append(str(content["data"].get("text/plain", "")))
        elif msg["msg_type"] == "error":
            errors.append(f"{content['ename']}: {content['evalue']}")

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    assert reply["content"]["status"] == "ok" and not errors, (code, errors)
    return texts


def test_every_listening_socket_is_on_loopback(workdir: Path, flink_cluster: Any) -> None:
    from jupyter_client.manager import KernelManager

    settings = Settings(home=workdir / ".ultron", flink_port=flink_cluster.rest_port)
    env = dict(os.environ, ULTRON_FLINK_PORT=str(flink_cluster.rest_port),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(workdir), env=env)
    kc = km.client()
    kc.start_channels()
    sampler = None
    try:
        kc.wait_for_ready(timeout=120)
        kernel_pid = km.provisioner.pid  # type: ignore[union-attr]
        _execute(kc, "%load_ext ultron_nb")
        _execute(kc, "%ultron gen clicklog --rate 5 --duration 120 --partitions 1 --seed 2")
        _execute(kc, f"%%ultron node impressions --flow ctr --kind topic --time ts "
                     f"--watermark '2 s'\n{IMPRESSIONS}")
        _execute(kc, "%%ultron node passthrough --flow ctr --option checkpoint_interval=1s\n"
                     "SELECT imp_id, user_id, ts FROM impressions")
        start_daemon(settings)
        scheduler_pid = daemon_status(settings)
        assert scheduler_pid and scheduler_pid > 0
        cluster_pids = [p for ps in flink_cluster.pids().values() for p in ps]
        assert len(cluster_pids) >= 2
        sampler = Sampler([kernel_pid, scheduler_pid, *cluster_pids])
        sampler.start()

        _execute(kc, "%ultron run --flow ctr --name s1")
        wait_until(lambda: "ROWS 5" in "".join(_execute(kc, PREVIEW)), 180,
                   "rows of passthrough to preview")
        truth = sum(1 for seg in (workdir / ".ultron" / "topics" / "impressions").glob(
            "p*/seg-*.jsonl") for line in seg.read_text().splitlines() if line.strip())
        def kernel_listeners() -> set[tuple[int, str, int]]:
            return {(pid, ip, port) for pid, _, ip, port in listening_sockets([kernel_pid])}

        before = kernel_listeners()  # the kernel's own and its JVM's (started by the run)
        for _ in range(3):
            out = _execute(kc, "%%ultron sql --flow ctr\nSELECT COUNT(*) AS n FROM impressions")
            assert "".join(out).split()[-1] == str(truth), out  # every impression counted
            # The query's mini cluster shuts down (asynchronously) after it: nothing stays.
            wait_until(lambda: kernel_listeners() == before, 60,
                       "the query's servers to close")
        _execute(kc, "%ultron stop s1")
    finally:
        if sampler is not None:
            sampler.stop()
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        if daemon_status(settings):
            stop_daemon(settings)

    assert sampler.samples > 10
    wide = sorted(s for s in sampler.seen if not is_loopback(s[2]) and not _port_probe(
        s, sampler.seen))
    assert wide == [], (wide, sampler.who)  # every server of every process on 127.0.0.1
    kinds = {name for _, name, _, _ in sampler.seen}
    assert "java" in kinds  # the cluster's daemons (and the kernel's JVM) were sampled
