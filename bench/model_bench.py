"""Model-center benchmark: registry changes from another process drive Python nodes through
the real scheduler daemon, with one SIGKILL of the daemon in the middle.

A plain MlflowClient in its own process (``tests/support/registry_client.py``, nothing of
ultron_nb imported) registers ``--versions`` versions round-robin over ``--models``
registered models, one every ``--pace`` seconds, and moves alias ``champion`` of the first
model ``--moves`` times. The experiment has one Python node ``--on-model`` per model and one
``--on-model m0 --alias champion``; each node run records when its function started.
Halfway, the daemon is SIGKILLed; a few versions are registered while it is down, then it is
started again. Alias moves pause from the kill until the restarted watcher has announced a
version: two moves of one alias while no watcher looks are one change (the registry keeps
no alias history).

Figures per run: ``p50_ms``/``p99_ms`` from a version's registration (the client's commit) to
the start of the node it triggered, over the versions whose wait did not span the daemon's
downtime (their count: ``across_kill``), split into ``detect_*`` (registration to the
registry event, the watcher's part) and ``runner_p50_ms`` (the event to the node's start: the
scheduler and the Python runner's two interpreter starts); ``alias_p50_ms`` likewise for
alias moves; ``lost``
(versions or moves that never ran their node) and ``duplicates`` (runs beyond one, events
beyond one). ``poll_ms_1000_versions``: one registry poll of the watcher when a version was
added to a registry holding 1,000 (``idle_poll_us``: a poll when nothing changed). Every
figure is the median of ``--runs`` runs (lost and duplicates: the sum).

    python bench/model_bench.py [--runs 3] [--versions 200] [--moves 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

NODE = '''
def run(ctx):
    import time
    started = time.time()
    import json, os
    event = ctx.trigger["event"]
    line = {"t": started, "key": event["key"], "version": event["value"]["version"]}
    with open(os.path.join(ctx.params["out"], ctx.node + ".jsonl"), "a") as f:
        f.write(json.dumps(line) + "\\n")
'''


class Client:
    """The plain MLflow client process."""

    def __init__(self, uri: str, artifacts: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["PYTHONPATH"] = ""
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "support" / "registry_client.py"), uri,
             str(artifacts)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env, cwd=str(artifacts.parent))
        self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("the registry client died")
        return dict(json.loads(line))

    def __call__(self, op: str, **kw: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=30)


def _announced(ws: Any, name: str, version: int) -> bool:
    """Has the watcher sent the event of ``version`` of ``name``?"""
    from ultron_nb.events import recent

    return any(e.value.get("version") == version
               for e in recent(ws.db, f"model/{name}/version", limit=5))


def _runs(out: Path, node: str) -> list[dict[str, Any]]:
    path = out / f"{node}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def scenario(root: Path, template: Path, *, versions: int, moves: int, models: int,
             pace: float) -> dict[str, Any]:
    from sqlalchemy import select

    from ultron_nb import experiments
    from ultron_nb.config import Settings
    from ultron_nb.flow.build import define_node
    from ultron_nb.scheduler import daemon_status, start_daemon, stop_daemon
    from ultron_nb.store.schema import events
    from ultron_nb.workspace import Workspace

    home = root / ".ultron"
    (home / "mlflow").mkdir(parents=True)
    shutil.copyfile(template, home / "mlflow" / "mlflow.db")
    out = root / "effects"
    out.mkdir()
    settings = Settings(home=home)
    ws = Workspace(settings)
    names = [f"m{i}" for i in range(models)]
    for name in names:
        ws.define("bench", define_node(f"on_{name}", NODE, kind="python",
                                       params={"out": str(out)}, on_model=name))
    ws.define("bench", define_node("serve", NODE, kind="python", params={"out": str(out)},
                                   on_model="m0", alias="champion"))
    experiments.launch(ws, "bench", name="bench", wait=False)
    client = Client(settings.mlflow_tracking_uri, root / "foreign")
    registered: dict[tuple[str, int], float] = {}
    moved: dict[int, float] = {}  # champion → version: when
    down: tuple[float, float] | None = None
    pid = start_daemon(settings)
    step = max(1, versions // models // max(1, moves))  # an alias move every step m0 versions
    is_down = False
    try:
        time.sleep(3.0)  # not synchronisation: let the daemon's watcher import mlflow first
        for i in range(versions):
            name = names[i % models]
            if i == versions // 2:  # the kill, in the middle
                os.kill(pid, signal.SIGKILL)
                killed, is_down = time.time(), True
                while daemon_status(settings) is not None:
                    time.sleep(0.02)
            reply = client("register", name=name)
            registered[(name, int(reply["version"]))] = float(reply["t"])
            if i == versions // 2 + 4:
                pid = start_daemon(settings)
                down = (killed, time.time())
                first_after = (name, int(reply["version"]))
            if is_down and down is not None and _announced(ws, *first_after):
                is_down = False  # the restarted watcher reads the registry again
            number = int(reply["version"])
            if name == "m0" and number % step == 0 and len(moved) < moves and not is_down:
                moved[number] = float(client("alias", name="m0", alias="champion",
                                             version=number)["t"])
            time.sleep(pace)
        deadline = time.time() + 180
        while time.time() < deadline:
            done = sum(len(_runs(out, f"on_{n}")) for n in names)
            if done >= versions and len(_runs(out, "serve")) >= len(moved):
                break
            time.sleep(0.2)
        time.sleep(2.0)  # not synchronisation: room for duplicates to show up
        stop_daemon(settings)
    finally:
        client.close()
        if (running := daemon_status(settings)) and running > 0:
            os.kill(running, signal.SIGKILL)
    assert down is not None
    starts: dict[tuple[str, int], list[float]] = {}
    for name in names:
        for r in _runs(out, f"on_{name}"):
            starts.setdefault((name, int(r["version"])), []).append(float(r["t"]))
    latencies, across = [], 0
    for key, at in registered.items():
        ran = starts.get(key)
        if not ran:
            continue
        if at < down[1] and min(ran) > down[0]:
            across += 1
            continue
        latencies.append((min(ran) - at) * 1000)
    alias_runs: dict[int, list[float]] = {}
    for r in _runs(out, "serve"):
        alias_runs.setdefault(int(r["version"]), []).append(float(r["t"]))
    alias_lat = [(min(alias_runs[v]) - t) * 1000 for v, t in moved.items()
                 if v in alias_runs and not (t < down[1] and min(alias_runs[v]) > down[0])]
    with ws.db.read() as conn:
        rows = conn.execute(select(events.c.key, events.c.value, events.c.created_at).where(
            events.c.key.like("model/%"))).all()
    keys = [r.key for r in rows]
    detect = []  # registration → its event committed (the watcher's part)
    runner = []  # the event → the node's function starts (scheduler and Python runner)
    for r in rows:
        if r.key.endswith("/version"):
            key = (r.key.split("/")[1], int(json.loads(r.value)["version"]))
            at = registered.get(key)
            if at is not None and not (at < down[1] and r.created_at > down[0]):
                detect.append((float(r.created_at) - at) * 1000)
                if starts.get(key):
                    runner.append((min(starts[key]) - float(r.created_at)) * 1000)
    lost = sum(1 for k in registered if k not in starts) + sum(
        1 for v in moved if v not in alias_runs)
    duplicates = (sum(len(v) - 1 for v in starts.values())
                  + sum(len(v) - 1 for v in alias_runs.values())
                  + sum(1 for k in keys if k.endswith("/version")) - len(registered)
                  + max(0, sum(1 for k in keys if "/alias/" in k) - len(moved)))
    return {"p50_ms": _pct(latencies, 0.5), "p99_ms": _pct(latencies, 0.99),
            "alias_p50_ms": _pct(alias_lat, 0.5), "detect_p50_ms": _pct(detect, 0.5),
            "detect_p99_ms": _pct(detect, 0.99), "runner_p50_ms": _pct(runner, 0.5),
            "lost": lost, "duplicates": duplicates,
            "across_kill": across, "versions": len(registered), "moves": len(moved)}


def poll_cost(root: Path, template: Path, versions: int = 1000) -> tuple[float, float]:
    """(ms of a poll that announces one new version among ``versions``, µs of an idle one)."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    from ultron_nb.config import Settings
    from ultron_nb.engines.mlflow.center import ModelCenter
    from ultron_nb.engines.mlflow.watcher import RegistryWatcher
    from ultron_nb.store import open_database

    home = root / ".ultron"
    (home / "mlflow").mkdir(parents=True)
    shutil.copyfile(template, home / "mlflow" / "mlflow.db")
    settings = Settings(home=home)
    db = open_database(settings.database_url)
    client = ModelCenter(settings, db).client
    client.create_registered_model("big")
    store = SqlAlchemyStore(settings.mlflow_tracking_uri)
    now = int(time.time() * 1000)
    with store.ManagedSessionMaker(read_only=False) as session:
        session.add_all([store._with_workspace_field(SqlModelVersion(
            name="big", version=n, creation_time=now, last_updated_time=now, source=f"/x/{n}",
            status="READY")) for n in range(1, versions + 1)])
    watcher = RegistryWatcher(db, settings)
    while watcher.polls == 0:
        watcher.poll()
        time.sleep(0.02)
    busy, idle = [], []
    for _ in range(15):
        client.create_model_version("big", "/x/new")
        t = time.perf_counter()
        sent = watcher.poll()
        busy.append((time.perf_counter() - t) * 1000)
        assert len(sent) == 1, sent
        t = time.perf_counter()
        assert watcher.poll() == []
        idle.append((time.perf_counter() - t) * 1e6)
    watcher.close()
    return statistics.median(busy), statistics.median(idle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--pace", type=float, default=1.0, help="seconds between versions")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up the daemon and client
    from ultron_nb.config import Settings
    from ultron_nb.engines.mlflow.store import MlflowStore

    with tempfile.TemporaryDirectory(prefix="model-bench-") as tmp:
        base = Path(tmp)
        MlflowStore.of(Settings(home=base / "template")).ensure()
        template = base / "template" / "mlflow" / "mlflow.db"
        results = []
        for n in range(args.runs):
            results.append(scenario(base / f"run{n}", template, versions=args.versions,
                                    moves=args.moves, models=args.models, pace=args.pace))
            sys.stderr.write(json.dumps(results[-1]) + "\n")
        polls = [poll_cost(base / f"poll{n}", template) for n in range(args.runs)]
    figure = {k: round(statistics.median(r[k] for r in results), 1)
              for k in ("p50_ms", "p99_ms", "alias_p50_ms", "detect_p50_ms", "detect_p99_ms",
                        "runner_p50_ms", "across_kill")}
    print(json.dumps({
        **figure,
        "lost": sum(r["lost"] for r in results),
        "duplicates": sum(r["duplicates"] for r in results),
        "versions": args.versions, "moves": min(r["moves"] for r in results),
        "poll_ms_1000_versions": round(statistics.median(p[0] for p in polls), 2),
        "idle_poll_us": round(statistics.median(p[1] for p in polls), 1),
        "runs": args.runs,
    }))


if __name__ == "__main__":
    main()
