"""Latency of the side panel's main GET routes on a store with many experiments and a live
Flink cluster.

Set-up (once): a local Flink cluster (free ports, temporary home); a store holding 50
recorded experiments of a 10-node flow (500 nodes: ended jobs in every state, failed ones
with errors, shared nodes, targets with a password to mask) plus experiment ``live`` of the
CTR flow (label-join → CTR per minute) running on the cluster; 2,000 extra events. Then a
real ``jupyter server`` with ultron's extension (token auth, 127.0.0.1) serves the panel's
API, and one keep-alive HTTP client asks, round-robin, each route:

``flows``, ``flows/wide``, ``experiments``, ``experiments/live`` (asks Flink: states,
watermarks), ``experiments/exp_007`` (recorded), ``events?limit=50`` and
``flows/ctr/dag.svg?experiment=live`` (asks Flink, runs graphviz).

Each run sends ``--requests`` per route after 3 unmeasured warm-up requests per route, then
times as many direct library calls ``status(ws, "live")`` (what the server runs in the
background for an open experiment: the cost the live route does not wait for); figures are
the median over ``--runs`` runs (never the best). Last line: ``{"p50_ms", "p99_ms", "routes":
{route: {"p50_ms", "p99_ms"}}, "status_call": {"p50_ms", "p99_ms"}, ...}``, the first two over
all routes (goal p99 ≤ 200).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.server.lab import JupyterProcess  # noqa: E402
from tests.server.seed import define_wide_flow, seed_experiments  # noqa: E402
from tests.services.flink_flows import define_ctr_flow  # noqa: E402
from ultron_nb import experiments as ex  # noqa: E402
from ultron_nb.config import Settings  # noqa: E402
from ultron_nb.engines.flink.cluster import LocalCluster, free_port  # noqa: E402
from ultron_nb.events import send_event  # noqa: E402
from ultron_nb.services.datagen import gen_clicklog  # noqa: E402
from ultron_nb.workspace import Workspace  # noqa: E402

ROUTES = ["flows", "flows/wide", "experiments", "experiments/live", "experiments/exp_007",
          "events?limit=50", "flows/ctr/dag.svg?experiment=live"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def fill(ws: Workspace, port: int, experiments: int) -> int:
    define_wide_flow(ws)
    seed_experiments(ws, experiments, target=f"http://127.0.0.1:{port}")
    rng = random.Random(7)
    for i in range(2000):
        key = rng.choice(["model/ctr", f"status/exp_{i % 50:03d}/n_{i % 8}", "quality/ctr"])
        send_event(ws.db, key, {"i": i, "auc": round(rng.random(), 3)})
    gen_clicklog(ws.settings, rate=10, duration=300, partitions=2, seed=1)
    define_ctr_flow(ws, "ctr", partitions=2)
    st = ex.launch(ws, "ctr", name="live")
    assert st.state == "running", str(st)
    return sum(len(ws.flow(e.flow_name, e.flow_version)) for e in ex.list_experiments(ws))


def one_run(server: JupyterProcess, requests: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {r: [] for r in ROUTES}
    with httpx.Client(headers=server.headers, timeout=30) as client:
        for i in range(requests + 3):
            for route in ROUTES:
                t = time.perf_counter()
                r = client.get(server.api(route))
                elapsed = (time.perf_counter() - t) * 1000
                if r.status_code != 200:
                    raise RuntimeError(f"{route}: {r.status_code} {r.text[:300]}")
                if i >= 3:
                    times[route].append(elapsed)
    return times


def status_calls(ws: Workspace, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        ex.status(ws, "live")
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=50)
    parser.add_argument("--requests", type=int, default=100, help="per route and run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="panel-bench-"))
    port = free_port()
    cluster = LocalCluster(Settings(home=root / "cluster", flink_port=port), slots=4)
    cluster.up()
    server = None
    try:
        ws = Workspace(Settings(home=root / "home", flink_port=port))
        nodes = fill(ws, port, args.experiments)
        server = JupyterProcess(root / "jupyter", home=ws.home, app="server",
                                env={"ULTRON_FLINK_PORT": str(port)}).start()
        runs, direct = [], []
        for _ in range(args.runs):
            runs.append(one_run(server, args.requests))
            direct.append(status_calls(ws, args.requests))
        per_route = {}
        for route in ROUTES:
            p50 = statistics.median(percentile(r[route], 0.5) for r in runs)
            p99 = statistics.median(percentile(r[route], 0.99) for r in runs)
            per_route[route] = {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1)}
            print(f"{route:<40} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
        overall = [[t for route in ROUTES for t in r[route]] for r in runs]
        print(json.dumps({
            "experiments": len(ex.list_experiments(ws)), "nodes": nodes, "runs": args.runs,
            "requests_per_route": args.requests,
            "p50_ms": round(statistics.median(percentile(o, 0.5) for o in overall), 1),
            "p99_ms": round(statistics.median(percentile(o, 0.99) for o in overall), 1),
            "goal_p99_ms": 200, "routes": per_route,
            "status_call": {
                "p50_ms": round(statistics.median(percentile(d, 0.5) for d in direct), 1),
                "p99_ms": round(statistics.median(percentile(d, 0.99) for d in direct), 1)},
        }))
    finally:
        if server is not None:
            server.stop()
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
