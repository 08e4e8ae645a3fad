"""Where a notebook user waits: the cluster start, and the first and later launches.

Each round, side by side on the same machine:

* **plain**: the wheel's own ``start-cluster.sh`` with a conf dir generated exactly as
  ``ultron up`` generates it (same memory, slots, addresses), timed until the REST API lists a
  task manager with slots (``start-cluster.sh`` itself returns before the cluster answers);
* **ultron**: ``ultron up`` (the CLI, in a fresh process) until it returns — the cluster, the
  scheduler and whatever else ``up`` starts, ready;
* **launches**: in a fresh process playing a fresh kernel (a real IPython shell,
  ``%load_ext ultron_nb``), ``%ultron run`` of the flow of notebook 02 (two topics, a stream
  label-join, a per-minute CTR over it, a Python step on 5-minute boundaries) until every
  Flink job is RUNNING (``first_launch_s``), then ``%ultron run --param label_window=11``
  (every Flink node new, ``next_launch_s``). The flow is defined and its data generated
  beforehand by another process, as a user who restarts the kernel has them. When ``up``
  started a job server, the launches begin once it answers (``service_ready_s``: how long after
  ``up`` returned that was; a kernel opened minutes after ``up`` never waits).

The order of plain and ultron alternates between rounds. Each side's CPU time is the user+sys
time of every process involved until it is ready (the scripts, the Flink daemons, and for
ultron the CLI, the scheduler and the job server) — less disturbed by a loaded machine than
the wall clock. Every figure is the median of ``--runs`` rounds, with its spread
(``*_spread``: max - min) and the load average when each round began.

Last line: ``{"first_launch_s", "next_launch_s", "cluster_up_s", "plain_cluster_up_s",
"cluster_up_ratio", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ultron_nb.config import Settings  # noqa: E402
from ultron_nb.engines.flink.cluster import LocalCluster, free_port, pyflink_home  # noqa: E402
from ultron_nb.engines.flink.rest import FlinkRest  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")

NODES = {  # notebook 02's flow
    "label_join": ("SELECT i.imp_id, i.user_id, i.item_id, i.ts,\n"
                   "       CASE WHEN c.imp_id IS NULL THEN 0 ELSE 1 END AS label\n"
                   "FROM impressions i\nLEFT JOIN clicks c\n  ON i.imp_id = c.imp_id\n"
                   " AND c.ts BETWEEN i.ts AND i.ts + INTERVAL '${label_window}' MINUTE"),
    "ctr_minute": ("SELECT window_start, window_end,\n"
                   "       COUNT(*) AS impressions, SUM(label) AS clicks,\n"
                   "       CAST(SUM(label) AS DOUBLE) / COUNT(*) AS ctr\n"
                   "FROM TABLE(TUMBLE(TABLE label_join, DESCRIPTOR(ts), INTERVAL '1' MINUTE))\n"
                   "GROUP BY window_start, window_end"),
}
STEP = '''
def ctr_5min(ctx):
    rows = ctx.input_frame("label_join")
    ctx.send_event("ctr/5min", {"rows": len(rows)})
'''

KERNEL = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    t1 = time.perf_counter()
    ip.run_line_magic("load_ext", "ultron_nb")
    t2 = time.perf_counter()

    def run(line):
        started = time.perf_counter()
        result = ip.run_cell(line, store_history=False)
        if not result.success:
            raise SystemExit(f"{line} failed: {result.error_in_exec or result.error_before_exec}")
        status = result.result
        states = {n.node: n.state for n in status.nodes if n.job_id}
        if len(states) != 2 or set(states.values()) != {"running"}:
            raise SystemExit(f"{line}: not every Flink job runs: {states}")
        return time.perf_counter() - started

    first = run("%ultron run --flow clicks_demo --name first")
    later = run("%ultron run --flow clicks_demo --name later --param label_window=11")
    gateway = sys.modules.get("pyflink.java_gateway")
    print(json.dumps({"first": first, "next": later, "load_ext": t2 - t1,
                      "kernel_jvm": bool(gateway and getattr(gateway, "_gateway", None))}))
""")


def cpu_of(pid: int) -> float:
    """user+sys seconds of process ``pid`` so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pids_in(folder: Path, pattern: str) -> list[int]:
    out = []
    for path in folder.glob(pattern):
        out += [int(p) for p in path.read_text().split() if p.isdigit()]
    return out


def await_cluster(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    with FlinkRest(url, timeout=2.0) as rest:
        while time.monotonic() < deadline:
            try:
                ov = rest.overview()
                if int(ov.get("taskmanagers", 0)) >= 1 and int(ov.get("slots-total", 0)) >= 1:
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.1)
    raise RuntimeError(f"no cluster at {url} within {timeout:.0f} s")


def plain_up(root: Path) -> dict[str, float]:
    """start-cluster.sh of the wheel with ultron's generated conf, until REST is ready."""
    port = free_port()
    cluster = LocalCluster(Settings(home=root, flink_port=port))
    ports = {name: free_port() for name in (
        "jobmanager_rpc", "taskmanager_rpc", "taskmanager_data", "blob",
        "jobmanager_query_service", "taskmanager_query_service")}
    for folder in (cluster.log_dir, cluster.pid_dir, cluster.tmp_dir):
        folder.mkdir(parents=True, exist_ok=True)
    cluster.write_conf(ports)
    cpu0 = children_cpu()
    started = time.perf_counter()
    subprocess.run(["bash", str(pyflink_home() / "bin" / "start-cluster.sh")],
                   env=cluster._env(), cwd=str(root), stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   start_new_session=True)
    await_cluster(f"http://127.0.0.1:{port}")
    wall = time.perf_counter() - started
    cpu = children_cpu() - cpu0 + sum(cpu_of(p) for p in pids_in(cluster.pid_dir, "*.pid"))
    cluster.down()
    return {"wall": wall, "cpu": cpu}


def ultron_cli(home: Path, *args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "ultron_nb.cli", "--home", str(home), *args],
                   env=env, cwd=str(home.parent), stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, check=True)


def service_pid(home: Path) -> int | None:
    """The job server's pid, when this version of ultron has one."""
    try:
        from ultron_nb.engines.flink import jobclient
    except ImportError:
        return None
    return jobclient.server_pid(Settings(home=home))


def await_service(home: Path) -> float:
    """Seconds until the job server answers warm (0 when there is none)."""
    try:
        from ultron_nb.engines.flink import jobclient
    except ImportError:
        return 0.0
    started = time.perf_counter()
    jobclient.await_ready(Settings(home=home), timeout=180.0)
    return time.perf_counter() - started


def ultron_up(home: Path, port: int, env: dict[str, str]) -> dict[str, float]:
    cpu0 = children_cpu()
    started = time.perf_counter()
    ultron_cli(home, "cluster", "up", "--port", str(port), env=env)
    wall = time.perf_counter() - started
    pids = pids_in(home / "flink" / "pid", "*.pid") + pids_in(home, "scheduler.pid")
    server = service_pid(home)
    cpu = children_cpu() - cpu0 + sum(cpu_of(p) for p in pids + ([server] if server else []))
    return {"wall": wall, "cpu": cpu}


def define_flow(home: Path, port: int) -> None:
    from ultron_nb.flow.build import define_node
    from ultron_nb.services.datagen import clicklog_nodes, gen_clicklog
    from ultron_nb.workspace import Workspace

    ws = Workspace(Settings(home=home, flink_port=port))
    for node in clicklog_nodes(partitions=4):
        ws.define("clicks_demo", node)
    opts = {"checkpoint_interval": "2 s"}
    ws.define("clicks_demo", define_node("label_join", NODES["label_join"], mode="stream",
                                         params={"label_window": "10"}, options=opts))
    ws.define("clicks_demo", define_node("ctr_minute", NODES["ctr_minute"], mode="stream",
                                         options=opts))
    ws.define("clicks_demo", define_node("ctr_5min", STEP, kind="python",
                                         inputs=["label_join"], after=["label_join"],
                                         boundary="5m"))
    gen_clicklog(ws.settings, rate=20, duration=1200, partitions=4, seed=7)


def launches(home: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", KERNEL], env=env, cwd=str(home.parent),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the kernel failed: {done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def one_round(work: Path, r: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    home = work / f"round{r}" / ".ultron"
    home.mkdir(parents=True)
    port = free_port()
    env = dict(os.environ, ULTRON_HOME=str(home), ULTRON_FLINK_PORT=str(port),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("ULTRON_FLINK_URL", None)
    env.pop("ULTRON_DB_URL", None)
    plain: dict[str, float] = {}
    ultron: dict[str, float] = {}
    try:
        if r % 2 == 0:
            plain = plain_up(work / f"round{r}" / "plain")
            ultron = ultron_up(home, port, env)
        else:
            ultron = ultron_up(home, port, env)
            plain = plain_up(work / f"round{r}" / "plain")
        ready = await_service(home)
        define_flow(home, port)
        kernel = launches(home, env)
    finally:
        ultron_cli(home, "cluster", "down", env=env)
    return {"load": load, "plain": plain, "ultron": ultron, "service_ready": ready, **kernel}


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def spread(values: list[float]) -> float:
    return round(max(values) - min(values), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="launch-bench-"))
    rounds = []
    try:
        for r in range(args.runs):
            rounds.append(one_round(work, r))
            print(json.dumps({"round": r, **rounds[-1]}), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    series = {
        "first_launch_s": [x["first"] for x in rounds],
        "next_launch_s": [x["next"] for x in rounds],
        "cluster_up_s": [x["ultron"]["wall"] for x in rounds],
        "plain_cluster_up_s": [x["plain"]["wall"] for x in rounds],
        "cluster_up_ratio": [x["ultron"]["wall"] / x["plain"]["wall"] for x in rounds],
        "cluster_up_cpu_s": [x["ultron"]["cpu"] for x in rounds],
        "plain_cluster_up_cpu_s": [x["plain"]["cpu"] for x in rounds],
        "cluster_up_cpu_ratio": [x["ultron"]["cpu"] / x["plain"]["cpu"] for x in rounds],
        "service_ready_s": [x["service_ready"] for x in rounds],
        "load_ext_s": [x["load_ext"] for x in rounds],
    }
    line: dict[str, Any] = {k: med(v) for k, v in series.items()}
    line.update({f"{k}_spread": spread(v) for k, v in series.items()})
    line["kernel_jvm"] = any(x["kernel_jvm"] for x in rounds)
    line["load_avg"] = [round(x["load"], 1) for x in rounds]
    line["runs"] = args.runs
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
